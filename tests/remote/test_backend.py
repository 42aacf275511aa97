"""The vllm backend against the stand-in server: real dgls-tiny middles over HTTP, faults, cancel, backoff, the key."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from dgls.engine import Engine, EngineError, EngineOptions
from dgls.model.remote import TOKENIZER_PROBE, RemoteError, RemoteOptions, load_vllm
from dgls.model.sampler import Cancelled

PREFIX = "def add(a, b):\n    return "
SUFFIX = "\n\n\nprint(add(1, 2))\n"


@pytest.fixture
def infiller(stub):
    inf = load_vllm(RemoteOptions(url=stub.url, model="dgls-tiny", tokenizer="dgls-tiny", timeout_s=5.0))
    yield inf
    inf.close()


def test_the_middle_is_what_the_server_computed_cut_at_the_first_pinned_slot(stub, infiller):
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    (answer,) = stub.answers
    assert answer.first_pin == 16 and len(answer.canvas) > 16  # the suffix was pinned after the 16 free slots
    assert res.candidates[0].text == answer.middle
    assert res.candidates[0].raw_ids == answer.canvas[:16]
    body = stub.requests[0]["body"]
    assert body["prompt"][0] == infiller.spec.bos_id and body["prompt"][1:] == infiller.tokenize(PREFIX)
    seed = body["vllm_xargs"]["diffusion_seed_canvas"]
    assert seed[16:] == infiller.tokenize(SUFFIX)[: len(seed) - 16]
    assert all(infiller.spec.noise_low <= t < infiller.spec.vocab_size for t in seed[:16])


def test_a_workspace_seed_goes_into_the_seed_canvas(stub, infiller):
    """The seed tokens start the first free slots of the first candidate's canvas; the others stay noise."""
    seed_ids = infiller.tokenize("user_id, timeout=30)")
    infiller.infill(PREFIX, SUFFIX, lengths=(16,), n_candidates=2, seed_ids=seed_ids)
    canvases = [r["body"]["vllm_xargs"]["diffusion_seed_canvas"] for r in stub.requests]
    assert canvases[0][: len(seed_ids)] == seed_ids
    assert canvases[1][: len(seed_ids)] != seed_ids


def test_a_lone_seeded_canvas_is_sent_with_a_noise_canvas_beside_it(stub, infiller):
    """One candidate asked for: the seeded canvas and a noise canvas go out; both middles are candidates."""
    seed_ids = infiller.tokenize("user_id, timeout=30)")
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,), seed_ids=seed_ids)
    canvases = [r["body"]["vllm_xargs"]["diffusion_seed_canvas"] for r in stub.requests]
    assert len(canvases) == 2
    assert canvases[0][: len(seed_ids)] == seed_ids and canvases[1][: len(seed_ids)] != seed_ids
    assert 1 <= len(res.candidates) <= 2


def test_the_junk_tail_never_reaches_the_middle(stub, infiller):
    stub.faults.append("script:a + b")
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    assert [c.text for c in res.candidates] == ["a + b"]  # the tail after the first pin is random ids
    tail = stub.loaded.tokenizer.decode(stub.answers[0].canvas[16:])
    assert tail.strip() and tail not in res.candidates[0].text


def test_candidates_are_separate_canvases_sent_together_and_ranked(stub, infiller):
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,), n_candidates=3, seed=7)
    assert len(stub.requests) == 3
    seeds = [r["body"]["vllm_xargs"]["diffusion_seed_canvas"][:16] for r in stub.requests]
    assert len({tuple(s) for s in seeds}) == 3  # different noise per candidate
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores, reverse=True)
    assert {c.text for c in res.candidates} <= {a.middle for a in stub.answers}


def test_min_tokens_drops_empty_middles(stub, infiller):
    stub.faults += ["script:", "script:x"]
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,), n_candidates=2, min_tokens=1)
    assert [c.text for c in res.candidates] == ["x"]


@pytest.mark.parametrize(
    "fault, reason",
    [
        (
            "status:400:diffusion_seed_canvas must hold exactly 8 ids, got 7.",
            "refused the request (HTTP 400): diffusion_seed_canvas must hold exactly 8 ids, got 7.",
        ),
        ("status:503", "failed (HTTP 503): injected"),
        ("garbage", "not JSON"),
        ("fields", "malformed answer"),
        ("truncated", "broke before the answer was complete"),
        ("disconnect", "broke before the answer was complete"),
        ("status:307", "does not follow redirects"),
    ],
)
def test_a_fault_is_a_remote_error_with_the_reason(stub, infiller, fault, reason):
    stub.faults.append(fault)
    with pytest.raises(RemoteError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        infiller.infill(PREFIX, SUFFIX, lengths=(16,))


def test_a_slow_server_times_out_instead_of_hanging(stub):
    inf = load_vllm(RemoteOptions(url=stub.url, tokenizer="dgls-tiny", timeout_s=0.3))
    stub.faults.append("slow:5")
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match="no complete answer .* within 0.3 s"):
        inf.infill(PREFIX, SUFFIX, lengths=(16,))
    assert time.monotonic() - t0 < 2.0
    inf.close()


def test_nobody_listening_and_an_unknown_host_are_errors_with_the_reason():
    for url, reason in (
        ("http://127.0.0.1:9", "connection refused"),
        ("http://dgls-test-host.invalid:8000", "cannot connect"),
    ):
        inf = load_vllm(RemoteOptions(url=url, tokenizer="dgls-tiny", timeout_s=5))
        with pytest.raises(RemoteError, match=reason):
            inf.infill(PREFIX, SUFFIX, lengths=(16,))
        inf.close()


def test_a_server_that_goes_away_and_comes_back(stub, infiller):
    infiller.infill(PREFIX, SUFFIX, lengths=(16,))  # a kept-alive connection
    stub.go_away()
    with pytest.raises(RemoteError, match="dgls retries with backoff"):
        infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    assert infiller.status()["connection"] == "down"
    n = len(stub.requests)
    with pytest.raises(RemoteError, match="dgls retries with backoff"):  # within the backoff: no new try
        infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    stub.come_back()
    assert len(stub.requests) == n
    time.sleep(infiller.backoff.delay_s + 0.05)
    res = infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    assert res.candidates[0].text == stub.answers[-1].middle
    assert infiller.status()["connection"] == "ok" and "lastError" not in infiller.status()


def test_cancel_closes_the_http_request_at_once(stub, infiller):
    stub.faults.append("slow:10")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        infiller.infill(PREFIX, SUFFIX, lengths=(16,), cancel=cancel.is_set)
    cancelled_at = t0 + 0.3
    assert time.monotonic() - cancelled_at < 0.1
    deadline = time.monotonic() + 2
    while not stub.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.disconnects and stub.disconnects[0] - cancelled_at < 0.1  # the server saw the client go


def test_the_api_key_comes_from_the_environment_and_is_never_logged(stub, monkeypatch, caplog):
    stub.api_key = "sk-dgls-test-0123456789"
    monkeypatch.setenv("DGLS_TEST_VLLM_KEY", stub.api_key)
    caplog.set_level(logging.DEBUG)
    inf = load_vllm(RemoteOptions(url=stub.url, tokenizer="dgls-tiny", api_key_env="DGLS_TEST_VLLM_KEY"))
    inf.infill(PREFIX, SUFFIX, lengths=(16,))
    assert stub.requests[-1]["headers"]["Authorization"] == f"Bearer {stub.api_key}"
    stub.faults.append("status:500")
    with pytest.raises(RemoteError) as err:
        inf.infill(PREFIX, SUFFIX, lengths=(16,))
    inf.close()
    assert stub.api_key not in str(err.value) and stub.api_key not in repr(inf.options)
    assert stub.api_key not in caplog.text and stub.api_key not in str(inf.status())


def test_a_wrong_key_is_a_clear_refusal(stub, monkeypatch):
    stub.api_key = "right"
    monkeypatch.setenv("DGLS_TEST_VLLM_KEY", "wrong")
    inf = load_vllm(RemoteOptions(url=stub.url, tokenizer="dgls-tiny", api_key_env="DGLS_TEST_VLLM_KEY"))
    with pytest.raises(RemoteError, match="HTTP 401"):
        inf.infill(PREFIX, SUFFIX, lengths=(16,))
    inf.close()


def test_the_engine_serves_from_the_backend_and_reports_failures_as_engine_errors(stub):
    engine = Engine(EngineOptions(remote=RemoteOptions(url=stub.url, model="dgls-tiny", tokenizer="dgls-tiny")))
    engine.wait_ready(60)
    assert engine.info["backend"] == "vllm" and engine.backend_status()["connection"] == "ok"
    request = engine.build_request(PREFIX + SUFFIX, len(PREFIX), language="python")
    done = engine.complete(request, seed=3)
    assert done.text == stub.answers[-1].middle and done.prefix_cache == "remote"
    stub.faults.append("status:503")
    with pytest.raises(EngineError, match="HTTP 503"):
        engine.complete(request, seed=4)
    assert engine.backend_status()["connection"] == "down"
    engine.shutdown()


def test_a_tokenizer_that_cannot_be_found_fails_the_load_with_the_reason(stub):
    engine = Engine(EngineOptions(remote=RemoteOptions(url=stub.url, tokenizer="/nonexistent/tokenizer")))
    with pytest.raises(EngineError, match="model not found: /nonexistent/tokenizer"):
        engine.wait_ready(60)


def test_a_tokenizer_that_is_not_the_served_models_fails_every_request(stub, infiller):
    stub.foreign_tokenizer = True
    for _ in range(2):
        with pytest.raises(RemoteError, match="is not the one .* serves dgls-tiny with"):
            infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    assert stub.requests == [] and len(stub.tokenize_requests) == 1  # checked once, nothing denoised


def test_the_tokenizer_is_checked_once_and_a_server_without_tokenize_is_served_unchecked(stub, infiller):
    infiller.infill(PREFIX, SUFFIX, lengths=(16,))
    infiller.infill(PREFIX + "x", SUFFIX, lengths=(16,))
    assert infiller.tokenizer_check == "same" and len(stub.tokenize_requests) == 1
    assert stub.tokenize_requests[0]["body"] == {
        "prompt": TOKENIZER_PROBE,
        "add_special_tokens": False,
        "model": "dgls-tiny",
    }
    stub.tokenize_route = False
    other = load_vllm(RemoteOptions(url=stub.url, tokenizer="dgls-tiny"))
    other.infill(PREFIX, SUFFIX, lengths=(16,))
    other.close()
    assert other.tokenizer_check == "unchecked" and len(stub.requests) == 3
