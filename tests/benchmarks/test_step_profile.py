"""The per-step profile (benchmarks/step_profile.py): its timers attribute time on both decoder paths (tiny model)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("step_profile", ROOT / "benchmarks" / "step_profile.py")
assert spec is not None and spec.loader is not None
step_profile = importlib.util.module_from_spec(spec)
sys.modules["step_profile"] = step_profile  # dataclasses look their module up there
spec.loader.exec_module(step_profile)

SAMPLER_PARTS = ("noise", "stats", "acceptance", "sampling", "renoise", "stop")


def test_a_leaf_counts_its_callees_and_a_container_only_itself(monkeypatch):
    clock = iter(range(100))
    monkeypatch.setattr(step_profile.time, "perf_counter", lambda: float(next(clock)))
    prof = step_profile.Profile()
    inner = prof.timed("b", lambda: None)
    leaf = prof.timed("a", lambda: inner())
    container = prof.timed("c", lambda: (leaf(), inner()), leaf=False)
    container()
    # the clock ticks once per counted enter or exit: c enters at 0, a at 1 (b inside a is not timed), a exits at
    # 2, b enters at 3 and exits at 4, c exits at 5
    assert prof.seconds == {"a": 1.0, "b": 1.0, "c": 3.0} and not prof.stack
    only = prof.timed("d", lambda: None, only_in="c")
    only()  # not inside c: not timed
    assert "d" not in prof.seconds


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_every_part_is_attributed_and_the_parts_fit_in_the_total(tiny_checkpoint, path):
    from dgls.model.loading import load_model

    loaded = load_model(tiny_checkpoint, device="cpu")
    infiller = step_profile.make_infiller(loaded, path)
    ids = step_profile.source_ids(loaded.tokenizer, 64 + step_profile.SUFFIX_TOKENS)
    prefix, suffix = ids[:64], ids[64:]
    run = step_profile.run_request(infiller, prefix, suffix, 8, step_profile.Profile(), path)
    assert run["nfe"] >= 1
    for part in ("encoder", "attention", "mlp", "lm_head", "self_cond", *SAMPLER_PARTS):
        assert run[part] > 0, (part, run)
    assert sum(run[k] for k in step_profile.PARTS) <= run["total_ms"], run
    assert run["overhead"] >= 0
    # the wrappers are gone after the request: a bare run leaves no profile behind
    again = step_profile.run_request(infiller, prefix, suffix, 8, None, path)
    assert set(again) == {"total_ms", "nfe"} and again["nfe"] == run["nfe"]  # fixed seed, the same request


def test_main_writes_one_row_per_cell(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # main sets it: undone after the test
    threads = torch.get_num_threads()
    results = tmp_path / "RESULTS.md"
    argv = ["--model", str(tiny_checkpoint), "--threads", "1", "--repeats", "1", "--prefixes", "32,64"]
    argv += ["--canvases", "8", "--json", "--write", "--results", str(results), "--subsection", "after"]
    try:
        assert step_profile.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    assert [(c["prefix"], c["canvas"]) for c in report["cells"]] == [(32, 8), (64, 8)]
    assert all(c["others"] >= 0 and len(c["repeats"]) == 1 for c in report["cells"])
    assert report["machine"]["command"].startswith("python benchmarks/step_profile.py --path fast")
    text = results.read_text()
    assert text.startswith("\n### after\n") and "| 32 | 8 | " in text and "| 64 | 8 | " in text
