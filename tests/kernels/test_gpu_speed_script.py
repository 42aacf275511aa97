"""benchmarks/gpu_speed.py stays runnable: a clean message without CUDA, and its CPU smoke mode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow
def test_tiny_smoke_run_on_cpu():
    """Every table of the script on a tiny model, the MoE paths on Triton's interpreter (numbers mean nothing)."""
    proc = run("--tiny", "--device", "cpu", "--steps", "2", "--warmup", "0", "--canvases", "4", "--prefixes", "8",
               "--infill-steps", "1", "--infill-canvas", "3", "--infill-suffix", "2", "--moe-interpret")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "gpu_speed"
    rows = last["rows"]
    assert (rows[0]["prefix"], rows[0]["C"], rows[0]["path"]) == (8, 4, "transformers")
    assert rows[0]["p50"] > 0 and rows[0]["ar_ms"] > 0 and rows[0]["tok_s"] > 0
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
