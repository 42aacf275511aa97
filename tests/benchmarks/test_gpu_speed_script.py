"""benchmarks/gpu_speed.py stays runnable: a clean message without CUDA, and its CPU smoke mode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the script runs the Triton kernels (pip install -e '.[test]')")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_speed.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_without_a_traceback():
    proc = run("--steps", "1")
    assert proc.returncode == 2, proc.stderr
    assert "needs a CUDA GPU and found none" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--tiny", "--device", "cpu", "--write")
    assert proc.returncode == 2 and "do not go into RESULTS.md" in proc.stderr and "Traceback" not in proc.stderr


def test_layers_option_is_checked_before_anything_runs():
    for args, message in (
        (["--layers", "0"], "--layers must be 1 to 30"),
        (["--layers", "31"], "--layers must be 1"),
        (["--tiny", "--layers", "2"], "one or the other"),
        (["--layers", "2", "--write"], "do not go into RESULTS.md"),
    ):
        proc = run("--device", "cpu", *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


@pytest.mark.slow
def test_tiny_smoke_run_on_cpu(tmp_path):
    """Every table of the script on a tiny model, the MoE paths on Triton's interpreter (numbers mean nothing).

    The prefix (150 tokens) is longer than the tiny model's sliding window (64), as 4,096 is than the real 1,024.
    """
    proc = run(
        "--tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--warmup",
        "0",
        "--canvases",
        "4",
        "--prefixes",
        "150",
        "--infill-steps",
        "1",
        "--infill-canvas",
        "3",
        "--infill-suffix",
        "2",
        "--moe-interpret",
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "out" / "gpu_speed.json").read_text()) == last  # what the GPU session brings back
    assert (tmp_path / "out" / "gpu_speed.md").read_text() in proc.stdout
    assert last["bench"] == "gpu_speed"
    rows = last["rows"]
    assert (rows[0]["prefix"], rows[0]["C"], rows[0]["path"]) == (150, 4, "transformers")
    assert rows[0]["p50"] > 0 and rows[0]["ar_ms"] > 0 and rows[0]["tok_s"] > 0 and rows[0]["ar_floor_ms"] > 0
    by_path = {r["path"].split(" (")[0]: r for r in rows}
    assert "skipped" in next(r["path"] for r in rows if r["path"].startswith("dgls: sampler:"))  # no CUDA
    for moe in ("dgls: sampler + MoE bf16", "dgls: sampler + MoE fp8"):  # forced on the interpreter
        assert by_path[moe]["p50"] > 0, by_path[moe]
    assert by_path["dgls: sampler + MoE fp8"]["gb"] < by_path["transformers"]["gb"]  # 1-byte experts
    assert len(last["infill"]) == 4 and last["infill"][0]["p50"] > 0  # one per path
    moe_micro = [m for m in last["micro"] if m["op"].startswith("MoE experts")]
    assert len(moe_micro) == 2 and all(m["kernel_ms"] > 0 for m in moe_micro)
    assert "| prefix | canvas | path | ms/step p20 / p50 / p80 |" in proc.stdout
    assert "| prefix | steps | path | ms p50 |" in proc.stdout


def test_real_config_on_meta_has_the_26b_size_and_the_reference_step_bytes():
    """The script's real-size model, built with meta parameters on the CPU: the reference's counts (§7)."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_speed
    from transformers import DiffusionGemmaForBlockDiffusion

    with gpu_speed.parameters_on_meta():
        model = DiffusionGemmaForBlockDiffusion(gpu_speed.build_config(tiny=False))
    model.tie_weights()
    model.to(torch.bfloat16)  # what materialize() gives the floating weights on the GPU
    params = gpu_speed.unique_params(model)
    assert all(p.is_meta for _, p in params.values())
    assert sum(p.numel() for _, p in params.values()) / 1e9 == pytest.approx(gpu_speed.REAL_PARAMS_B, abs=0.001)
    tc = model.config.get_text_config(decoder=True)
    assert (tc.num_hidden_layers, tc.num_experts, tc.top_k_experts, tc.vocab_size) == (30, 128, 8, 262_144)
    # reference §7: 51.2 GB at C = 64 and 52.0 GB at C = 256 with the embedding read twice, 125.9 / 128 experts
    for C, gb, experts in ((64, 51.2, 125.9), (256, 52.0, 128.0)):
        b = gpu_speed.step_bytes(model, C)
        assert b["step"] / 1e9 == pytest.approx(gb, abs=0.15) and b["distinct_experts"] == pytest.approx(experts, 0.01)
        fp8 = gpu_speed.step_bytes(model, C, fp8_experts=True)["step"]
        assert fp8 == pytest.approx(b["step"] - b["experts"] * b["distinct_experts"] / 128 / 2, rel=1e-9)


def test_a_spent_budget_reports_every_row_as_skipped_with_the_reason(tmp_path):
    """--budget-s 0: no row starts, each is in the table as skipped with why, and the run still succeeds."""
    proc = run(
        "--tiny",
        "--device",
        "cpu",
        "--budget-s",
        "0",
        "--canvases",
        "4,8",
        "--prefixes",
        "20,30",
        "--infill-steps",
        "1,2",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads((tmp_path / "gpu_speed.json").read_text())
    assert len(last["rows"]) == 2 * 2 * 4 and len(last["infill"]) == 2 * 2 * 4 and last["micro"] == []
    assert [r["prefix"] for r in last["rows"]] == [20] * 8 + [30] * 8  # prefix-major: every path at 20 first
    for r in last["rows"] + last["infill"]:
        assert r["p50"] is None and "skipped" in r["path"], r
    spent = [r for r in last["rows"] if "--budget-s 0 s of this run was spent" in r["path"]]
    assert {r["path"].split(":")[0] for r in spent} == {"transformers"}  # the kernel paths: no CUDA, said first
    assert len(spent) == 2 * 2
    assert all(r["floor_ms"] > 0 for r in last["rows"])  # bytes and floors are still known


def test_an_interrupted_row_ends_the_run_cleanly():
    """SIGINT (the GPU session's time limit) inside a row: the row ends, the run is marked interrupted and every
    later row is skipped with that reason, so the tables are still written."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_speed

    budget = gpu_speed.Budget(None)
    assert budget.spent() is None
    with budget.guard():
        raise KeyboardInterrupt
    assert budget.interrupted and "interrupted" in budget.spent()
    with pytest.raises(ValueError), budget.guard():  # anything else is not swallowed
        raise ValueError("a real error")
