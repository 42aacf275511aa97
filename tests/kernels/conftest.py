"""Kernel tests: Triton's interpreter on machines without CUDA, seeds reset per test, NaN-filled outputs."""

from __future__ import annotations

import pytest
import torch

# TRITON_INTERPRET=1 on machines without CUDA: set in tests/conftest.py, before anything imports triton
pytest.importorskip("triton", reason="the kernel tests need triton (pip install -e '.[test]')")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert not got.isnan().any(), f"{name}: NaN at {got.isnan().nonzero()[:5].tolist()} (unwritten or invalid)"
    if got.numel() == 0:
        return 0.0
    diff = (got - want).abs()
    excess = (diff - (atol + rtol * want.abs())).flatten()
    worst = int(excess.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
    max_diff = float(diff.max())
    assert excess[worst] <= 0, (
        f"{name}: max abs diff {max_diff:.3g} (tolerance {atol:g} + {rtol:g}|ref|); worst at {where}: "
        f"got {float(got.flatten()[worst]):.8g}, want {float(want.flatten()[worst]):.8g}"
    )
    return max_diff


@pytest.fixture
def assert_close():
    """assert |got - want| <= atol + rtol |want| elementwise, naming the worst element; returns the max abs diff."""
    return _assert_close
