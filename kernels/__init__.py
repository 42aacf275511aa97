"""Triton kernels with their pure-torch references. Imported as ``dgls.kernels``; knows only tensors."""

from __future__ import annotations

import importlib.util


def availability() -> tuple[bool, str]:
    """Whether the Triton kernels can replace the torch path on this machine, and why (for `dgls doctor`)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False, "torch is not installed"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed: the torch reference path runs"
    if not torch.cuda.is_available():
        return False, "no CUDA device: the torch reference path runs"
    return False, "no Triton kernels are registered yet: the torch reference path runs"
