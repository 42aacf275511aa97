"""The engine: one worker thread, futures, cancel events, the result cache, load failures."""

from __future__ import annotations

import os
import threading

import pytest

from dgls.engine import Engine, EngineError, EngineOptions
from dgls.model.sampler import Cancelled

SOURCE = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
CURSOR = SOURCE.index("return ") + len("return ")


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    eng = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu", sampler={"max_steps": 4}))
    eng.wait_ready(timeout=120)
    yield eng
    eng.shutdown()


def test_ready_with_info(engine, tiny_checkpoint):
    assert engine.state == "ready"
    assert engine.info["device"] == "cpu" and engine.info["model"] == str(tiny_checkpoint)


def test_completion_of_a_request(engine):
    request = engine.build_request(SOURCE, CURSOR, language="python")
    assert request.suffix.startswith("\n\nprint(add(1, 2))")
    done = engine.complete(request, seed=1)
    assert done.nfe >= 1 and not done.cached and done.candidates
    assert engine.lengths_for(request) == (16,)  # filler model: one row, the longest wanted length up to 16
    again = engine.complete(request, seed=1)
    assert again.cached and again.nfe == 0 and again.text == done.text


def test_cancel_event_stops_the_request(engine):
    request = engine.build_request(SOURCE, CURSOR, language="python")
    cancel = threading.Event()
    steps = []

    def on_step(step, total):
        steps.append(step)
        cancel.set()  # cancel after the first step

    fut = engine.submit(request, seed=99, cancel=cancel, on_step=on_step)
    with pytest.raises(Cancelled):
        fut.result(timeout=60)
    assert steps == [1]
    pre = threading.Event()
    pre.set()
    with pytest.raises(Cancelled) as err:  # cancelled while queued: no model call
        engine.submit(request, seed=100, cancel=pre).result(timeout=60)
    assert err.value.steps == 0


def test_failed_load_reports_and_refuses(tmp_path):
    eng = Engine(EngineOptions(model=str(tmp_path / "missing")))
    with pytest.raises(EngineError, match="model not found"):
        eng.wait_ready(timeout=30)
    assert eng.state == "error" and "missing" in eng.error
    request = eng.build_request("x = ", 4, language="python")
    with pytest.raises(EngineError, match="model not found"):
        eng.submit(request).result(timeout=5)
    eng.shutdown()


def test_shutdown_lets_go_of_the_model_even_while_the_engine_is_referenced(tiny_checkpoint):
    """A restart must not pin the old weights: whoever still holds the old Engine holds no model."""
    import gc
    import weakref

    eng = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu", sampler={"max_steps": 2}))
    eng.wait_ready(timeout=120)
    request = eng.build_request(SOURCE, CURSOR, language="python")
    assert eng.complete(request).candidates is not None
    model = weakref.ref(eng._infiller.model)
    eng.shutdown()
    gc.collect()
    assert model() is None  # freed, though `eng` is still alive here
    with pytest.raises(EngineError, match="stopped"):  # a request after shutdown: refused, not a crash
        eng.complete(request)


def test_a_cancelled_request_keeps_none_of_the_models_frames(engine):
    """A future keeps its error as long as anyone holds the future: a Cancelled's traceback must not keep the
    worker's frames (sampler, infill), which hold the request's encoder cache, canvas and logits."""
    request = engine.build_request(SOURCE, CURSOR, language="python")
    cancel = threading.Event()
    fut = engine.submit(request, seed=98, cancel=cancel, on_step=lambda step, total: cancel.set())
    exc = fut.exception(timeout=60)
    assert isinstance(exc, Cancelled) and exc.steps == 1
    files, tb = [], exc.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert files and files[-1].endswith(os.path.join("dgls", "engine.py"))
    assert not [f for f in files if os.sep + "model" + os.sep in f or os.sep + "torch" + os.sep in f], files


# --- tokenized once per request, on the caller's own tokenizer ------------------------------------------------

SNIPPETS = ["", "x", "def f(a):\n    return a\n", "\t\tindented\ttabs", "naïve = 'ü' + \"€\"  # 😀", "\n\n\n", "  "]


def test_counter_tokenizes_as_the_model_does(engine):
    from dgls.engine import TokenCounter

    counter = TokenCounter(engine._infiller.tokenizer)
    for text in SNIPPETS:
        assert counter.ids(text) == engine._infiller.tokenize(text), text
        assert counter.count(text) == len(engine._infiller.tokenize(text))


def test_counter_remembers_lines(engine, monkeypatch):
    from dgls.engine import TokenCounter

    counter = TokenCounter(engine._infiller.tokenizer)
    calls = []
    real = counter.ids
    monkeypatch.setattr(counter, "ids", lambda text: calls.append(text) or real(text))
    assert counter.count("x = 1\n") == counter.count("x = 1\n")
    assert calls == ["x = 1\n"]  # the second count came from memory


def test_the_worker_does_not_tokenize_again(engine, monkeypatch):
    """The request's prefix and suffix are tokenized once, in submit; the worker runs on those ids."""
    request = engine.build_request(SOURCE, CURSOR, language="python")
    want = engine.complete(request, seed=7)

    class DecodeOnly:  # the model's tokenizer, minus encoding
        def __init__(self, tokenizer):
            self.decode = tokenizer.decode

        def __call__(self, *args, **kwargs):
            raise AssertionError("the model's tokenizer encoded text on the worker")

    engine._results.clear()
    monkeypatch.setattr(engine._infiller, "tokenizer", DecodeOnly(engine._infiller.tokenizer))
    assert engine.count_tokens("def f():\n") > 0  # the caller's tokenizer is its own
    got = engine.complete(engine.build_request(SOURCE, CURSOR, language="python"), seed=7)
    assert not got.cached and got.text == want.text


def test_a_rewrite_instruction_reaches_the_canvas(engine, monkeypatch):
    """dgls.rewrite's instruction is a comment line above the selection: it is in the prefix tokens the model
    conditions on (the model is not instruction-tuned; this is all the instruction does)."""
    from dgls.actions import with_instruction

    text = "def f(a):\n    return a + 1\n"
    start, end = text.index("return"), len(text) - 1
    request = with_instruction(
        engine.build_request(text, start, language="python", selection=(start, end)), text, "multiply by two"
    )
    seen = []
    real = engine._infiller.infill_ids

    def spy(prefix_ids, suffix_ids, **kw):
        seen.append(list(prefix_ids))
        return real(prefix_ids, suffix_ids, **kw)

    monkeypatch.setattr(engine._infiller, "infill_ids", spy)
    engine.complete(request, seed=5)
    (ids,) = seen
    assert "    # multiply by two\n    " in engine._infiller.tokenizer.decode(ids)


def test_automatic_requests_run_within_the_automatic_budget(tiny_checkpoint):
    """An Automatic trigger gets the step cap and canvas of the settings (else the model's dgls.json): the
    request runs at most that many steps, on that canvas; an Invoked one does not."""
    never_sure = {"max_steps": 12, "confidence_threshold": 0.0}  # every request runs to its step cap
    eng = Engine(
        EngineOptions(
            model=str(tiny_checkpoint),
            device="cpu",
            sampler=never_sure,
            automatic_steps=3,
            automatic_canvas=8,
            automatic_suffix=4,
        )
    )
    eng.wait_ready(timeout=120)
    try:
        request = eng.build_request(SOURCE, CURSOR, language="python")
        invoked = eng.complete(request, seed=1)
        steps_seen: list[int] = []
        auto = eng.complete(request, seed=1, automatic=True, on_step=lambda step, total: steps_seen.append(total))
        assert invoked.nfe == 12 and auto.nfe == 3 and steps_seen == [3, 3, 3]
        assert not auto.cached  # a different budget is a different request
        assert max(len(c.raw_ids) for c in auto.candidates) == 8 < max(len(c.raw_ids) for c in invoked.candidates)
        assert eng.complete(request, seed=1, max_steps=5).nfe == 5  # a request's own cap (dgls infill --jsonl)
        assert eng.automatic_budget() == (3, 8, 4)
        assert len(eng._counter.ids(request.suffix)) > 4  # the window holds more suffix than the model reads
        suffixes: list[int] = []
        real = eng._infiller.infill_ids

        def spy(prefix_ids, suffix_ids, **kw):
            suffixes.append(len(suffix_ids))
            return real(prefix_ids, suffix_ids, **kw)

        eng._infiller.infill_ids = spy
        eng.complete(request, seed=2, automatic=True)
        eng.complete(request, seed=2)
        assert suffixes == [4, len(eng._counter.ids(request.suffix))]  # Automatic reads 4, Invoked the window's
    finally:
        eng.shutdown()


def test_automatic_budget_defaults_to_the_models_dgls_json(tmp_path, tiny_checkpoint):
    import json
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    facts = json.loads((folder / "dgls.json").read_text())
    budget = {"automatic_max_steps": 2, "automatic_canvas": 8, "automatic_suffix_tokens": 6}
    (folder / "dgls.json").write_text(json.dumps({**facts, **budget}))
    eng = Engine(EngineOptions(model=str(folder), device="cpu"))
    eng.wait_ready(timeout=120)
    try:
        assert eng.automatic_budget() == (2, 8, 6)
        request = eng.build_request(SOURCE, CURSOR, language="python")
        assert eng.complete(request, seed=1, automatic=True).nfe <= 2
    finally:
        eng.shutdown()
    (folder / "dgls.json").write_text(json.dumps({**facts, "automatic_max_steps": 0}))
    bad = Engine(EngineOptions(model=str(folder), device="cpu"))
    with pytest.raises(EngineError, match="automatic_max_steps"):
        bad.wait_ready(timeout=120)
    bad.shutdown()


def test_cpu_threads_default_to_the_cores_up_to_4_unless_asked(monkeypatch, tiny_checkpoint):
    import torch

    from dgls.model.loading import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cpu_threads() == 2 and cpu_threads(3) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert cpu_threads() == 5 and cpu_threads(2) == 2
    before = torch.get_num_threads()
    eng = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu", threads=1))
    try:
        eng.wait_ready(timeout=120)
        assert eng.info["threads"] == 1 == eng._pool.submit(torch.get_num_threads).result()  # the model's thread
    finally:
        eng.shutdown()
        torch.set_num_threads(before)


def test_a_seed_runs_alone_only_for_automatic_triggers(tiny_checkpoint, monkeypatch):
    """While typing (Automatic) a workspace seed starts the only row; an explicit request runs a noise row
    beside it (dgls.model.infill.rows_per_length)."""
    eng = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu"))
    eng.wait_ready(timeout=120)
    try:
        seen: list[bool] = []
        real = eng._infiller.infill_ids

        def spy(prefix_ids, suffix_ids, **kw):
            seen.append(kw["seed_alone"])
            return real(prefix_ids, suffix_ids, **kw)

        monkeypatch.setattr(eng._infiller, "infill_ids", spy)
        request = eng.build_request(SOURCE, CURSOR, language="python")
        eng.complete(request, seed=1, automatic=True, seed_text="a + b")
        eng.complete(request, seed=1, seed_text="a + b")  # not the Automatic one from the result cache
        assert seen == [True, False]
    finally:
        eng.shutdown()
