"""A DiffusionGemma model's mixture-of-experts modules on the dgls grouped-GEMM kernel (:mod:`dgls.kernels.moe`).

The kernel knows only tensors; this module knows transformers' experts modules (``DiffusionGemmaTextExperts``:
3-D ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I)) and replaces their forward with the kernel's, in
the model's dtype or on FP8 copies of the weights. :func:`dgls.model.loading.load_model` decides which.
"""

from __future__ import annotations

import functools
from typing import cast

import torch

from dgls.kernels.moe_ref import FP8Experts, quantize_experts_fp8
from dgls.model.checkpoint import ModelLoadError

_ACTIVATION = "gelu_pytorch_tanh"


def experts_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The MoE experts modules of `model`: 3-D ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I)."""
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "gate_up_proj", None), torch.Tensor)
        and m.gate_up_proj.ndim == 3
        and isinstance(getattr(m, "down_proj", None), torch.Tensor)
        and m.down_proj.ndim == 3
    ]


class MoEPatch:
    """The experts modules whose forward runs on the kernel; :meth:`undo` restores transformers'."""

    def __init__(self, modules: list[torch.nn.Module], released: bool = False):
        self.modules = modules
        self.released = released

    def undo(self) -> None:
        """Give every patched module its class forward back (and drop the FP8 copies)."""
        if self.released:
            raise ValueError("the experts' original weights were released for their FP8 copies: nothing to go back to")
        for m in self.modules:
            m.__dict__.pop("forward", None)
            m.__dict__.pop("dgls_fp8", None)
        self.modules = []


def patch_moe_experts(
    model: torch.nn.Module,
    *,
    fp8: bool = False,
    require_usable: bool = True,
    release: bool = False,
    device: str | torch.device | None = None,
) -> MoEPatch:
    """Route every experts module of a DiffusionGemma `model` through :func:`dgls.kernels.moe.moe_experts`.

    Only where the registry says the kernel is usable (a CUDA device that passed the self-check) unless
    `require_usable` is False (the tests, under the Triton interpreter). `fp8`: quantize each layer's experts once
    (tied encoder/decoder weights share one copy; about half the bf16 size on top of it) and run on those. The
    original forward comes back with :meth:`MoEPatch.undo`. Raises ValueError for experts this kernel does not
    compute (another activation, biases, transposed or interleaved layout), before patching anything.

    Loading a model too large for the GPU in bf16 (``load_model(..., experts="fp8")``): with `fp8`, `device`
    puts the FP8 copies there (each layer's weights go there one at a time to be quantized) and `release`
    replaces each module's original weights by empty ``(E, 0, H)``/``(E, 0, I)`` tensors once its copy exists,
    so a model built on the CPU keeps only the FP8 experts and moves the rest to the GPU after (no undo then).
    """
    from dgls import kernels

    if (release or device is not None) and not fp8:
        raise ValueError("release and device are for FP8 experts (fp8=True)")
    if require_usable and not kernels.usable("moe_experts"):
        raise ValueError(f"the moe_experts kernel is not usable here: {kernels.status('moe_experts').why}")
    from dgls.kernels.moe import moe_experts  # imports triton: only once the kernel is to run

    mods = experts_modules(model)
    for m in mods:
        act = getattr(getattr(m, "config", None), "hidden_activation", None)
        layout = (
            getattr(m, "has_bias", False),
            getattr(m, "is_transposed", False),
            getattr(m, "is_concatenated", True),
            getattr(m, "has_gate", True),
        )
        if act != _ACTIVATION or layout != (False, False, True, True):
            raise ValueError(
                f"{type(m).__name__}: the kernel computes gated {_ACTIVATION} experts with "
                f"concatenated [gate; up] weights and no bias; found activation {act!r}, "
                f"(has_bias, is_transposed, is_concatenated, has_gate) = {layout}"
            )
    if fp8:
        shared: dict[tuple[int, int], FP8Experts] = {}
        for m in mods:
            key = (id(m.gate_up_proj), id(m.down_proj))
            if key not in shared:
                w_gu, w_d = cast(torch.Tensor, m.gate_up_proj), cast(torch.Tensor, m.down_proj)
                with torch.no_grad():
                    if device is not None:
                        w_gu, w_d = w_gu.to(device), w_d.to(device)
                    shared[key] = quantize_experts_fp8(w_gu, w_d)
            setattr(m, "dgls_fp8", shared[key])  # noqa: B010 (a plain attribute; Module's typing allows tensors only)
        if release:
            for m in mods:  # tied modules hold the same tensors: every module lets go of them
                for name in ("gate_up_proj", "down_proj"):
                    w = getattr(m, name)
                    setattr(m, name, torch.nn.Parameter(w.new_empty(w.shape[0], 0, w.shape[2]), requires_grad=False))
    for m in mods:
        m.forward = functools.partial(_patched_forward, m, moe_experts)
    return MoEPatch(mods, released=release)


def _patched_forward(
    m: torch.nn.Module, moe_experts, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    weights = m.__dict__.get("dgls_fp8")
    if weights is None:
        return moe_experts(hidden_states, top_k_index, top_k_weights, m.gate_up_proj, m.down_proj)
    return moe_experts(hidden_states, top_k_index, top_k_weights, weights)


def check_fp8_experts(dev: torch.device) -> None:
    """FP8 experts run only on the dgls kernel: a CUDA GPU of compute capability 8.9+ whose self-check passed."""
    if dev.type != "cuda":
        raise ModelLoadError(
            f"FP8 experts run on the dgls MoE kernel, which needs a CUDA GPU; the device is {dev} "
            "(use experts 'auto' here)"
        )
    from dgls import kernels

    status = kernels.status("moe_experts")
    if not status.usable:
        raise ModelLoadError(f"FP8 experts need the dgls MoE kernel, which is not usable here: {status.why}")
    from dgls.kernels.moe import fp8_supported

    if not fp8_supported(dev):
        major, minor = torch.cuda.get_device_capability(dev)
        raise ModelLoadError(
            f"FP8 experts need a GPU of compute capability 8.9 or newer (Ada, Hopper); {dev} is {major}.{minor}"
        )


def experts_on_kernel(model: torch.nn.Module, dev: torch.device, implementation: str, zero_width: bool) -> str:
    """Put the MoE experts on the dgls grouped-GEMM kernel where it is usable (CUDA, self-check passed).

    Returns which code runs the experts, in words (``LoadedModel.experts``).
    """
    if zero_width:
        return "dense (no experts)"
    if dev.type == "cuda":
        from dgls import kernels

        if kernels.usable("moe_experts"):
            patch_moe_experts(model)
            return "dgls moe_experts kernel (bf16 grouped GEMM)"
        return f"transformers {implementation} ({kernels.status('moe_experts').why})"
    return f"transformers {implementation}"
