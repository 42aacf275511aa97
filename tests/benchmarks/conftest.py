"""Fixtures for the tests of benchmarks/: the set-up every prepared device script's CPU smoke run shares."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tree_status() -> str:
    """``git status --porcelain`` of the repository: a device script must leave it as it found it."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


@dataclass
class DeviceScriptRun:
    """Where a device script (benchmarks/gpu_*.sh) run as on the device machine finds its inputs and puts $OUT."""

    root: Path  # the repository
    out: Path  # $OUT: what the device tool brings back
    env: dict[str, str]  # this environment plus OUT, DGLS_PYTHON (this venv) and DGLS_WHEEL_DIR
    status: str  # tree_status() before the run

    def tree_as_it_was(self) -> bool:
        """Whether ``git status`` reads as it did before the run."""
        return tree_status() == self.status


@pytest.fixture
def device_script_run(tmp_path) -> DeviceScriptRun:
    """An empty $OUT and a wheel folder holding only COMMIT (what --fetch records; this venv has the wheels)."""
    status = tree_status()
    wheels, out = tmp_path / "whl", tmp_path / "out"
    wheels.mkdir()
    out.mkdir()
    (wheels / "COMMIT").write_text("abc1234\n")  # what --fetch records; no wheels: this venv has them installed
    env = {**os.environ, "OUT": str(out), "DGLS_PYTHON": sys.executable, "DGLS_WHEEL_DIR": str(wheels)}
    return DeviceScriptRun(root=ROOT, out=out, env=env, status=status)
