"""Pure-torch references for :mod:`dgls.kernels.moe`: DiffusionGemma's mixture-of-experts FFN for a canvas.

The experts module of transformers 5.23.0 (``DiffusionGemmaTextExperts``, eager path) holds, per layer::

    gate_up_proj  (E, 2I, H)   rows [0, I) are the gate projection, rows [I, 2I) the up projection
    down_proj     (E, H, I)

and for token t routed to experts ``e_tk`` with weights ``w_tk`` (k < K) computes::

    g, u   = x_t @ gate_up_proj[e].T  split in halves          # (2I,) -> (I,), (I,)
    y_tk   = (gelu_tanh(g) * u) @ down_proj[e].T                 # (H,)
    out_t  = sum_k w_tk y_tk

The router already folded its per-expert scale into ``w`` (``top_k_weights * per_expert_scale[top_k_index]``,
after renormalising the top-k softmax to sum to 1), so the experts see plain weights. ``gelu_tanh`` is
``ACT2FN["gelu_pytorch_tanh"]`` (``hidden_activation`` of the config): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
x^3)))``. transformers runs the matmuls in the weights' dtype and rounds ``y * w`` to the hidden dtype before its
``index_add_``; this reference computes everything in fp32 and rounds once at the end, which is what the kernel
does (fp32 accumulation), so in fp32 the two agree to rounding and in bf16 the reference is the more exact one.

FP8 weights: :func:`quantize_experts_fp8` stores each matrix as float8_e4m3fn with one fp32 scale per output
channel (a row of gate_up_proj or down_proj): ``W ~= q * scale[:, None]``, ``scale = amax(|row|) / 448``. The
scale factors out of the dot product, so a kernel multiplies its fp32 accumulator by it, once per output column.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn


class FP8Experts(NamedTuple):
    """Expert weights in float8_e4m3fn with per-output-channel fp32 scales: ``W ~= q * scale[..., None]``."""

    gate_up: torch.Tensor  # (E, 2I, H) float8_e4m3fn
    gate_up_scale: torch.Tensor  # (E, 2I) float32
    down: torch.Tensor  # (E, H, I) float8_e4m3fn
    down_scale: torch.Tensor  # (E, H) float32


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (``gelu_pytorch_tanh``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel float8_e4m3fn: (..., N, K) -> q (..., N, K) fp8, scale (..., N) fp32 (rows by amax)."""
    scale = w.abs().amax(-1).float() / FP8_MAX  # (..., N); amax is exact in w's own dtype
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row quantizes to zeros
    # one fp32 temporary the size of w (a real layer's gate_up_proj: 2 GB), divided and clamped in place
    q = w.to(torch.float32, copy=True).div_(scale[..., None]).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def quantize_experts_fp8(gate_up_proj: torch.Tensor, down_proj: torch.Tensor) -> FP8Experts:
    """Quantize one layer's experts (E, 2I, H) and (E, H, I) to float8_e4m3fn with per-output-channel scales."""
    if gate_up_proj.ndim != 3 or down_proj.ndim != 3:
        raise ValueError(
            f"expected gate_up_proj (E, 2I, H) and down_proj (E, H, I), got "
            f"{tuple(gate_up_proj.shape)} and {tuple(down_proj.shape)}"
        )
    return FP8Experts(*quantize_fp8(gate_up_proj), *quantize_fp8(down_proj))


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q * scale[..., None]`` in fp32."""
    return q.float() * scale[..., None]


def moe_experts_ref(
    x: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor | FP8Experts,
    down_proj: torch.Tensor | None = None,
) -> torch.Tensor:
    """The experts' output ``sum_k w_tk FFN_{e_tk}(x_t)``: x (T, H), ids and weights (T, K) -> (T, H) in x's dtype.

    Weights in the model's layout, gate_up_proj (E, 2I, H) and down_proj (E, H, I), or one :class:`FP8Experts`
    (dequantized here). Computed in fp32, one expert at a time (only the tokens routed to it).
    """
    if isinstance(gate_up_proj, FP8Experts):
        w_gu, w_d = (
            dequantize_fp8(gate_up_proj.gate_up, gate_up_proj.gate_up_scale),
            dequantize_fp8(gate_up_proj.down, gate_up_proj.down_scale),
        )
    elif down_proj is None:
        raise ValueError("down_proj is required unless gate_up_proj holds FP8 experts")
    else:
        w_gu, w_d = gate_up_proj, down_proj
    E, I2, H = w_gu.shape
    I = I2 // 2  # noqa: E741 - the model's name for the intermediate size
    xf = x.float()  # (T, H)
    out = torch.zeros_like(xf)
    ids = top_k_index.reshape(-1)  # (T*K,) pair p = t*K + k
    w = top_k_weights.reshape(-1).float()
    K = top_k_index.shape[-1]
    for e in ids.unique().tolist():
        pairs = (ids == e).nonzero().squeeze(-1)  # (n_e,)
        tok = pairs // K
        gu = xf[tok] @ w_gu[e].float().T  # (n_e, 2I)
        a = gelu_tanh(gu[:, :I]) * gu[:, I:]  # (n_e, I)
        y = a @ w_d[e].float().T  # (n_e, H)
        out.index_add_(0, tok, y * w[pairs, None])
    return out.to(x.dtype)
