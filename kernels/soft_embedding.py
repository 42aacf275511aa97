"""Top-k soft embedding for self-conditioning: gather k embedding rows per slot instead of a (N,V)@(V,H) matmul.

``out[n] = scale * sum_{j<k} w_nj E[idx_nj]`` with ``w_n = softmax(top-k logits of row n)`` (renormalised over
the k kept tokens). The top-k selection is ``torch.topk``; the kernel does the weighting and the gather.
Reference and the error bound against the dense ``softmax(logits) @ E``: :mod:`dgls.kernels.soft_embedding_ref`.

Memory traffic per step at the real size (V = 262,144, H = 2816, bf16 E): the dense path reads all of E
(1.48 GB) plus the (N, V) probabilities; this kernel reads N * k * H * 2 bytes of E (k = 64, N = 256: 92 MB) and
the (N, k) top-k values, and writes (N, H). One program per (row, BLOCK_H columns): a (BLOCK_K, BLOCK_H) tile of
gathered rows, reduced over k in fp32 registers (no tl.dot: k is small and the interpreter's bf16 dot is wrong).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit(do_not_specialize=["k", "H", "stride_e"])
def _topk_soft_embedding_kernel(
    p_val, p_idx, p_E, p_out, k, H, stride_e, scale,
    BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """out[i_row, cols] = scale * sum_j softmax(val[i_row])_j * E[idx[i_row, j], cols]."""
    i_row = tl.program_id(0)
    i_h = tl.program_id(1)
    o_k = tl.arange(0, BLOCK_K)
    m_k = o_k < k
    # renormalised weights over the k kept tokens, fp32: k values read, recomputed by each column block
    b_v = tl.load(p_val + i_row * k + o_k, mask=m_k, other=float("-inf")).to(tl.float32)
    b_w = tl.exp(b_v - tl.max(b_v, 0))  # masked lanes: exp(-inf) = 0
    b_w = b_w / tl.sum(b_w, 0)
    b_idx = tl.load(p_idx + i_row * k + o_k, mask=m_k, other=0).to(tl.int64)

    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m_h = o_h < H
    # gather: k rows of E, BLOCK_H columns each (k * BLOCK_H * 2 bytes in bf16), accumulated in fp32
    p_e = p_E + b_idx[:, None] * stride_e + o_h[None, :]
    b_e = tl.load(p_e, mask=m_k[:, None] & m_h[None, :], other=0.0).to(tl.float32)  # (BLOCK_K, BLOCK_H)
    b_o = tl.sum(b_w[:, None] * b_e, 0) * scale  # (BLOCK_H,)
    tl.store(p_out + i_row.to(tl.int64) * H + o_h, b_o.to(p_out.dtype.element_ty), mask=m_h)


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def topk_soft_embedding(logits: torch.Tensor, E: torch.Tensor, k: int, *, scale: float = 1.0,
                        out: torch.Tensor | None = None, block_h: int | None = None) -> torch.Tensor:
    """``scale * sum over the top-k tokens of softmax(top-k logits) * E[token]``: (N, V), (V, H) -> (N, H).

    The output has E's dtype unless `out` (N, H) is given. Error against the dense ``softmax(logits) @ E``:
    at most ``2 * (1 - top-k mass) * max row norm of E * scale`` per row (``soft_embedding_ref``).
    """
    if logits.ndim != 2 or logits.dtype not in _DTYPES:
        raise ValueError(f"logits must be (N, V) float32/float16/bfloat16, got {tuple(logits.shape)} {logits.dtype}")
    if E.ndim != 2 or E.dtype not in _DTYPES or E.shape[0] != logits.shape[1] or E.stride(-1) != 1:
        raise ValueError(f"E must be (V, H) = ({logits.shape[1]}, H) float with a contiguous last axis, "
                         f"got {tuple(E.shape)} {E.dtype} strides {E.stride()}")
    if E.device != logits.device:
        raise ValueError(f"logits and E must be on one device, got {logits.device} and {E.device}")
    N, V = logits.shape
    H = E.shape[1]
    if not 1 <= k <= V:
        raise ValueError(f"k must be in [1, V={V}], got {k}")
    if out is None:
        out = torch.empty(N, H, dtype=E.dtype, device=E.device)
    elif out.shape != (N, H) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous ({N}, {H}) tensor, got {tuple(out.shape)}")
    if N == 0:
        return out
    vals, idx = torch.topk(logits, k, dim=-1, sorted=False)  # (N, k): the selection stays in torch
    vals, idx = vals.contiguous(), idx.contiguous()
    block_k = max(2, triton.next_power_of_2(k))
    if block_h is None:  # keep the gathered tile near 8K elements on a GPU
        block_h = min(triton.next_power_of_2(H), 64 if INTERPRET else max(64, 8192 // block_k))
    _topk_soft_embedding_kernel[(N, triton.cdiv(H, block_h))](
        vals, idx, E, out, k, H, E.stride(0), float(scale), BLOCK_K=block_k, BLOCK_H=block_h)
    return out


def self_check(device: str | torch.device = "cuda") -> str | None:
    """Run the kernel once on small random inputs against the reference; None if it agrees, else what differs."""
    from dgls.kernels.soft_embedding_ref import topk_soft_embedding_ref

    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        logits = (torch.randn(5, 3001, generator=g) * 4).to(dtype)
        E = torch.randn(3001, 200, generator=g).to(dtype)
        got = topk_soft_embedding(logits.to(device), E.to(device), 24, scale=2.0).float().cpu()
        ref = topk_soft_embedding_ref(logits, E, 24, scale=2.0)
        d = float((got - ref).abs().max())
        if not d <= tol * (1 + float(ref.abs().max())):
            return f"soft_embedding {dtype}: max abs diff {d:.3g} against the reference"
    return None
