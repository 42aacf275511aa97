"""Editor-client tests: the model they run (the embedded dgls-tiny when it is there, else a random tiny one)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """Path of an executable (the venv's first), or skip the test; under CI (CI set) a missing tool fails."""
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        message = f"{name} not found (next to {sys.executable} or on PATH)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def editor_model(request) -> str:
    """The `model` setting for editor tests: $DGLS_EDITOR_MODEL, else the embedded dgls-tiny, else a random tiny one."""
    from dgls.model.loading import embedded_models

    if os.environ.get("DGLS_EDITOR_MODEL"):
        return os.environ["DGLS_EDITOR_MODEL"]
    if "dgls-tiny" in embedded_models():
        return "dgls-tiny"
    # the root conftest's fixture (a bare `import conftest` resolves to whichever conftest was imported first)
    return str(request.getfixturevalue("tiny_checkpoint"))


@pytest.fixture(scope="session")
def dgls_server() -> str:
    """The dgls executable of this environment."""
    return tool("dgls")
