"""benchmarks/gpu_session.sh, the one prepared device call, in its CPU smoke mode: every step runs and reports."""

from __future__ import annotations

import json
import subprocess

import pytest

pytest.importorskip("triton", reason="the script runs the Triton kernels (pip install -e '.[test]')")


@pytest.mark.slow
def test_session_script_runs_every_step_against_the_tree_and_brings_back_its_files(device_script_run):
    root, out = device_script_run.root, device_script_run.out
    env = {**device_script_run.env, "DGLS_SESSION_SMOKE": "1", "DGLS_SESSION_BUDGET_S": "300"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_session.sh")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    session = (out / "session.txt").read_text()
    for name in ("kernel_tests", "doctor", "infill", "gpu_speed"):
        assert f"{name}: exit 0 in" in session, session
    assert "failed steps: none" in session
    assert "commit: abc1234" in session and "transformers 5.23.0" in session, session
    # dgls came from the links outside the tree (dgls.model and dgls.kernels mapped), not from the tree's dgls/
    # (this venv's editable install would map them too: the script checks, and so does doctor's model path)
    assert f"dgls from {root}/dgls/" not in session and "/src/dgls/__init__.py" in session, session
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
    assert device_script_run.tree_as_it_was(), "the session script must leave the tree as it was"
