"""benchmarks/gpu_step.py stays runnable: a clean message without CUDA, and its CPU smoke mode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_step.py"


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
    proc = run("--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--canvases", "4", "--prefix", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "gpu_step" and [r["path"] for r in last["rows"]][0] == "torch"
    assert last["rows"][0]["p50"] > 0 and last["rows"][0]["ar_ms"] > 0
    assert "| canvas | path | ms/step p20 / p50 / p80 |" in proc.stdout
