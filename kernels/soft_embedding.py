"""Top-k soft embedding for self-conditioning: gather k embedding rows per slot instead of a (N,V)@(V,H) matmul.

``out[n] = scale * sum_{j<k} w_nj E[idx_nj]`` with ``w_n = softmax(top-k logits of row n)`` (renormalised over
the k kept tokens), or, with the uniform-tail correction, the full-softmax probabilities of the k kept tokens
plus the dropped mass times the mean embedding of the dropped tokens. The top-k selection is ``torch.topk``;
the kernel does the weighting and the gather.
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


@triton.jit(do_not_specialize=["k", "H", "stride_e", "V"])
def _topk_soft_embedding_kernel(
    p_val,
    p_idx,
    p_E,
    p_out,
    p_lse,
    p_esum,
    k,
    H,
    stride_e,
    V,
    scale,
    TAIL: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """out[i_row, cols] = scale * (sum_j w_j E[idx_j, cols] + tail), w and tail as in topk_soft_embedding."""
    i_row = tl.program_id(0)
    i_h = tl.program_id(1)
    o_k = tl.arange(0, BLOCK_K)
    m_k = o_k < k
    # weights over the k kept tokens, fp32 (k values read, recomputed by each column block)
    b_v = tl.load(p_val + i_row * k + o_k, mask=m_k, other=float("-inf")).to(tl.float32)
    if TAIL:
        b_w = tl.exp(b_v - tl.load(p_lse + i_row))  # the full softmax's probabilities p_j
    else:
        b_w = tl.exp(b_v - tl.max(b_v, 0))  # masked lanes: exp(-inf) = 0
        b_w = b_w / tl.sum(b_w, 0)  # renormalised over the top k
    b_idx = tl.load(p_idx + i_row * k + o_k, mask=m_k, other=0).to(tl.int64)

    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m_h = o_h < H
    # gather: k rows of E, BLOCK_H columns each (k * BLOCK_H * 2 bytes in bf16), accumulated in fp32
    p_e = p_E + b_idx[:, None] * stride_e + o_h[None, :]
    b_e = tl.load(p_e, mask=m_k[:, None] & m_h[None, :], other=0.0).to(tl.float32)  # (BLOCK_K, BLOCK_H)
    b_o = tl.sum(b_w[:, None] * b_e, 0)  # (BLOCK_H,)
    if TAIL:
        # the dropped mass 1 - P spread over the mean embedding of the V - k dropped tokens:
        # (sum_v E_v - sum_K E_j) / (V - k), from the precomputed column sums (H floats)
        b_tail = (tl.load(p_esum + o_h, mask=m_h, other=0.0) - tl.sum(b_e, 0)) / (V - k)
        b_o += (1.0 - tl.sum(b_w, 0)) * b_tail
    tl.store(p_out + i_row.to(tl.int64) * H + o_h, (b_o * scale).to(p_out.dtype.element_ty), mask=m_h)


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def topk_soft_embedding(
    logits: torch.Tensor,
    E: torch.Tensor,
    k: int,
    *,
    scale: float = 1.0,
    e_sum: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    block_h: int | None = None,
) -> torch.Tensor:
    """Top-k approximation of ``scale * softmax(logits) @ E``: (N, V), (V, H) -> (N, H).

    Without `e_sum`: ``sum over the top-k tokens of softmax(top-k logits) * E[token]`` (weights renormalised).
    With `e_sum` (``E.float().sum(0)``, (H,), computed once per model by ``embedding_sum``): the top-k tokens
    keep their full-softmax probabilities and the dropped mass goes to the mean embedding of the dropped tokens
    (exact when the tail is flat, as early in denoising). Either way the error against the dense result is at
    most ``2 * (1 - top-k mass) * max row norm of E * scale`` per row (``soft_embedding_ref``). The output has
    E's dtype unless `out` (N, H) is given.
    """
    if logits.ndim != 2 or logits.dtype not in _DTYPES:
        raise ValueError(f"logits must be (N, V) float32/float16/bfloat16, got {tuple(logits.shape)} {logits.dtype}")
    if E.ndim != 2 or E.dtype not in _DTYPES or E.shape[0] != logits.shape[1] or E.stride(-1) != 1:
        raise ValueError(
            f"E must be (V, H) = ({logits.shape[1]}, H) float with a contiguous last axis, "
            f"got {tuple(E.shape)} {E.dtype} strides {E.stride()}"
        )
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
    tail = e_sum is not None and k < V
    if e_sum is not None and (e_sum.shape != (H,) or e_sum.dtype != torch.float32 or e_sum.device != E.device):
        raise ValueError(
            f"e_sum must be E.float().sum(0): ({H},) float32 on {E.device}, "
            f"got {tuple(e_sum.shape)} {e_sum.dtype} on {e_sum.device}"
        )
    vals, idx = torch.topk(logits, k, dim=-1, sorted=False)  # (N, k): the selection stays in torch
    vals, idx = vals.contiguous(), idx.contiguous()
    lse = torch.logsumexp(logits.float(), dim=-1) if tail else vals  # (N,): one more read of the logits
    block_k = max(2, triton.next_power_of_2(k))
    if block_h is None:  # keep the gathered tile near 8K elements on a GPU
        block_h = min(triton.next_power_of_2(H), 64 if INTERPRET else max(64, 8192 // block_k))
    _topk_soft_embedding_kernel[(N, triton.cdiv(H, block_h))](
        vals,
        idx,
        E,
        out,
        lse,
        e_sum if tail else vals,
        k,
        H,
        E.stride(0),
        V,
        float(scale),
        TAIL=tail,
        BLOCK_K=block_k,
        BLOCK_H=block_h,
    )
    return out


def self_check(device: str | torch.device = "cuda") -> str | None:
    """Run the kernel on small random inputs against the reference; None if it agrees, else every case that differs."""
    from dgls.kernels.soft_embedding_ref import embedding_sum, topk_soft_embedding_ref

    g = torch.Generator().manual_seed(0)
    problems = []
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        logits = (torch.randn(5, 3001, generator=g) * 4).to(dtype)
        E = torch.randn(3001, 200, generator=g).to(dtype)
        for e_sum in (None, embedding_sum(E)):
            got = (
                topk_soft_embedding(
                    logits.to(device), E.to(device), 24, scale=2.0, e_sum=None if e_sum is None else e_sum.to(device)
                )
                .float()
                .cpu()
            )
            ref = topk_soft_embedding_ref(logits, E, 24, scale=2.0, e_sum=e_sum)
            d = float((got - ref).abs().max())
            if not d <= tol * (1 + float(ref.abs().max())):
                problems.append(
                    f"soft_embedding {dtype} (tail {e_sum is not None}): max abs diff {d:.3g} against the reference"
                )
    return "; ".join(problems) or None
