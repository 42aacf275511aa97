"""Triton kernels with their pure-torch references. Imported as ``dgls.kernels``; knows only tensors.

Registry: each kernel is usable only on a CUDA device with triton importable, outside interpreter mode, and after
a one-time numerical self-check against its reference on that device (run at first use, cached per process).
Everywhere else the torch reference path runs. Nothing here imports triton unless a CUDA device is present,
so ``dgls doctor`` stays fast on CPU machines. ``DGLS_KERNELS=0`` turns every kernel off (for A/B runs).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelInfo:
    """One registered kernel: where it lives and where its reference lives."""

    name: str
    module: str  # defines the kernel wrapper and ``self_check(device) -> str | None``
    reference: str  # the pure-torch reference module the tests and benchmarks use


@dataclass(frozen=True)
class KernelStatus:
    """Whether a kernel can replace the torch path on this machine, and why (not)."""

    name: str
    usable: bool
    why: str


KERNELS: dict[str, KernelInfo] = {
    k.name: k
    for k in (
        # per-slot entropy, argmax, confidence and sample: one pass over V instead of five (N, V) tensors
        KernelInfo("canvas_sampler", "dgls.kernels.canvas_sampler", "dgls.kernels.canvas_sampler_ref"),
        # self-conditioning softmax(logits) @ E as a top-k gather
        KernelInfo("soft_embedding", "dgls.kernels.soft_embedding", "dgls.kernels.soft_embedding_ref"),
        # the MoE experts' per-expert loop as two grouped GEMMs over expert-sorted tokens (bf16 or FP8 weights; a
        # model's experts modules are put on it by dgls.model.experts)
        KernelInfo("moe_experts", "dgls.kernels.moe", "dgls.kernels.moe_ref"),
    )
}


@functools.cache
def _platform_problem() -> str | None:
    """Why no kernel can run here (None when CUDA and triton are present); checked once per process."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "torch is not installed"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed: the torch reference path runs"
    if not torch.cuda.is_available():
        return "no CUDA device: the torch reference path runs"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 (interpreter mode, for tests): the torch reference path runs"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"CUDA compute capability {major}.{minor} < 8.0 (bf16 kernels need Ampere or newer)"
    return None


@functools.cache
def _check(name: str, device: str) -> KernelStatus:
    info = KERNELS[name]
    try:
        module = importlib.import_module(info.module)
        problem = module.self_check(device)
    except Exception as exc:  # a compile or launch failure makes the kernel unusable, not the server
        return KernelStatus(name, False, f"self-check on {device} failed: {type(exc).__name__}: {exc}")
    if problem:
        return KernelStatus(name, False, f"self-check on {device} disagrees with the reference: {problem}")
    return KernelStatus(name, True, f"self-check on {device} passed")


def status(name: str) -> KernelStatus:
    """Status of one registered kernel (runs its self-check once per process on the current CUDA device)."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; registered: {', '.join(KERNELS)}")
    problem = _platform_problem()
    if problem:
        return KernelStatus(name, False, problem)
    if os.environ.get("DGLS_KERNELS") == "0":
        return KernelStatus(name, False, "disabled by DGLS_KERNELS=0: the torch reference path runs")
    import torch

    return _check(name, f"cuda:{torch.cuda.current_device()}")


def usable(name: str) -> bool:
    """Whether kernel `name` may replace the torch path here (False on CPU, always)."""
    return status(name).usable


def registry() -> list[KernelStatus]:
    """Every registered kernel with its status."""
    return [status(name) for name in KERNELS]


def availability() -> tuple[bool, str]:
    """Whether the Triton kernels can replace the torch path on this machine, and why (for `dgls doctor`)."""
    names = ", ".join(KERNELS)
    problem = _platform_problem()
    if problem:
        return False, f"{problem} (kernels: {names})"
    if os.environ.get("DGLS_KERNELS") == "0":
        return False, f"disabled by DGLS_KERNELS=0: the torch reference path runs (kernels: {names})"
    statuses = registry()
    bad = [s for s in statuses if not s.usable]
    if bad:
        return False, "; ".join(f"{s.name}: {s.why}" for s in bad) + ": the torch reference path runs for those"
    return True, f"kernels active: {names} (self-checks passed)"
