"""benchmarks/gpu_session.sh, the one prepared device call, in its CPU smoke mode: every step runs and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_session_script_runs_every_step_against_the_tree_and_brings_back_its_files(tmp_path):
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    wheels, out = tmp_path / "whl", tmp_path / "out"
    wheels.mkdir()
    out.mkdir()
    (wheels / "COMMIT").write_text("abc1234\n")  # what --fetch records; no wheels: this venv has them installed
    env = {**os.environ, "OUT": str(out), "DGLS_PYTHON": sys.executable, "DGLS_WHEEL_DIR": str(wheels),
           "DGLS_SESSION_SMOKE": "1", "DGLS_SESSION_BUDGET_S": "300"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = (out / "session.txt").read_text()
    for name in ("kernel_tests", "doctor", "infill", "gpu_speed"):
        assert f"{name}: exit 0 in" in session, session
    assert "failed steps: none" in session
    assert "commit: abc1234" in session and "transformers 5.23.0" in session, session
    # dgls came from the links outside the tree (dgls.model and dgls.kernels mapped), not from the tree's dgls/
    # (this venv's editable install would map them too: the script checks, and so does doctor's model path)
    assert f"dgls from {ROOT}/dgls/" not in session and "/src/dgls/__init__.py" in session, session
    assert "passed" in (out / "kernel_tests.txt").read_text()
    doctor = json.loads((out / "doctor.json").read_text())
    assert doctor["model"]["params"] > 1_000_000 and "kernels" in doctor and "smoke_infill" in doctor["model"]
    assert "/src/dgls/model/checkpoints/dgls-tiny" in doctor["model"]["path"], doctor["model"]["path"]
    infill = json.loads((out / "infill.json").read_text())
    assert infill["nfe"] > 0 and infill["candidates"]
    speed = json.loads((out / "gpu_speed.json").read_text())
    assert speed["commit"] == "abc1234" and speed["rows"][0]["p50"] > 0
    assert (out / "gpu_speed.md").read_text().startswith("\n## GPU speed")
    assert len(list(out.iterdir())) <= 8, "the device tool brings back 8 files at most"
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == status, "the session script must leave the tree as it was"

