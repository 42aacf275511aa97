"""End-to-end fixtures.

The model is the embedded `dgls-tiny` when the package ships it, else the random-weight tiny checkpoint from
tests/conftest.py (same architecture, garbage text): these tests check mechanics, not the quality of middles.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model_path(tiny_checkpoint) -> str:
    """The model the e2e servers load: the embedded one if present, else the tiny random checkpoint."""
    from dgls.model import DEFAULT_MODEL
    from dgls.model.loading import embedded_models

    return DEFAULT_MODEL if DEFAULT_MODEL in embedded_models() else str(tiny_checkpoint)
