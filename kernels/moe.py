"""Grouped-GEMM mixture-of-experts FFN for a canvas: tokens grouped by expert, each expert's weights streamed once.

For x (T, H) with top-k expert ids and weights (T, K) and one layer's experts, gate_up_proj (E, 2I, H) and
down_proj (E, H, I) in the model's own layout (or FP8 copies with per-output-channel scales), computes
``out_t = sum_k w_tk (gelu_tanh(x_t Wg_e^T) * (x_t Wu_e^T)) Wd_e^T`` with ``e = e_tk``. Reference and the
exact semantics (transformers 5.23.0's ``DiffusionGemmaTextExperts``): :mod:`dgls.kernels.moe_ref`.

Three stages:

1. **Routing (torch, no host sync):** the T*K (token, k) pairs are sorted by expert (stable), and each expert's
   run of rows is cut into blocks of BLOCK_M rows; a block table gives each block's expert and row range. The
   table has a fixed upper bound of ``cdiv(T*K, BLOCK_M) + min(E, T*K)`` entries (each touched expert adds at most
   one partial block); unused entries carry expert id E and their programs return at once. No ``.item()``: the
   launch never waits for the routing.
2. **gate_up kernel**, program (block, BLOCK_N columns of I): gathers the block's token rows of x, runs the gate
   and the up dot products side by side over H (two fp32 accumulators, the same x tile), then
   ``a = gelu_tanh(gate) * up`` in registers and stores a (S, I) in expert-sorted order: the (S, 2I) gate/up
   tensor never reaches memory. GELU-tanh is written with a sigmoid, ``0.5 (1 + tanh z) = sigmoid(2z)``: the
   interpreter has no libdevice tanh.
3. **down kernel**, program (block, BLOCK_N columns of H): a (BLOCK_M, I) @ Wd_e^T over I, times the router
   weight of each row, stored in fp32 at the row's (token, k) pair index of y (T*K, H); torch then sums the K
   rows of each token (deterministic, no atomics) and casts to x's dtype.

Memory traffic per layer at the real size (H = 2816, I = 704, E = 128, bf16): the experts are 1.52 GB, and a
canvas of 64 tokens x top-8 already touches ~126 of the 128 experts, so the weights are the whole cost. Each
program reads one (BLOCK_N, H) or (BLOCK_N, I) weight slice of its expert once; an expert with more rows than
BLOCK_M has several blocks, which read the same slices again (launched next to each other, so mostly from L2).
BLOCK_M is chosen from the mean rows per expert so that most experts fit one block. Activations are small in
comparison: y is T*K*H*4 bytes written and read back (23 MB at C = 256, 1.5% of the weights). FP8 weights
(float8_e4m3fn, 1 byte) halve the weight bytes; each tile is converted to x's dtype in registers (exact: e4m3
fits in bf16) and the per-output-channel scale multiplies the fp32 accumulator once per column.

On the GPU the dot products run in bf16 (fp32 accumulation) when x is bf16, in IEEE fp32 when x is fp32. Under
``TRITON_INTERPRET=1`` every dot runs in fp32 (the interpreter's bf16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from dgls.kernels.moe_ref import FP8Experts, moe_experts_ref, quantize_experts_fp8

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Routing(NamedTuple):
    """The (token, k) pairs sorted by expert and cut into blocks of `block_m` rows (see the module docstring)."""

    pair: torch.Tensor  # (S,) int32: pair index t*K + k of each sorted row
    weight: torch.Tensor  # (S,) float32: router weight of that pair
    block_expert: torch.Tensor  # (NB,) int32: expert of each block, E for unused table entries
    block_start: torch.Tensor  # (NB,) int32: first sorted row of the block
    block_end: torch.Tensor  # (NB,) int32: one past the last row of the block's expert
    num_experts: int
    top_k: int
    block_m: int


def moe_routing(top_k_index: torch.Tensor, top_k_weights: torch.Tensor, num_experts: int, block_m: int) -> Routing:
    """Sort the (T, K) routing by expert and build the block table, all on the ids' device without a host sync."""
    if top_k_index.ndim != 2 or top_k_weights.shape != top_k_index.shape:
        raise ValueError(
            f"top_k_index and top_k_weights must both be (T, K), got {tuple(top_k_index.shape)} and "
            f"{tuple(top_k_weights.shape)}"
        )
    device = top_k_index.device
    T, K = top_k_index.shape
    S = T * K
    ids = top_k_index.reshape(-1).long()  # (S,), pair p = t*K + k
    sorted_ids, perm = torch.sort(ids, stable=True)  # rows of one expert keep their token order
    counts = torch.zeros(num_experts, dtype=torch.long, device=device).scatter_add_(0, ids, torch.ones_like(ids))
    ends = counts.cumsum(0)  # (E,) row ranges of each expert in sorted order
    starts = ends - counts
    nblk = (counts + block_m - 1) // block_m  # blocks per expert (0 for an expert without tokens)
    blk_ends = nblk.cumsum(0)
    blk_starts = blk_ends - nblk
    n_table = triton.cdiv(S, block_m) + min(num_experts, S)  # upper bound on sum(nblk), known on the host
    b = torch.arange(n_table, device=device)
    be = torch.searchsorted(blk_ends, b, right=True)  # expert of block b; E past the last used block
    bec = be.clamp(max=num_experts - 1)
    start = starts[bec] + (b - blk_starts[bec]) * block_m
    return Routing(
        perm.to(torch.int32),
        top_k_weights.reshape(-1)[perm].float().contiguous(),
        be.to(torch.int32),
        start.to(torch.int32),
        ends[bec].to(torch.int32),
        num_experts,
        K,
        block_m,
    )


@triton.jit
def _gelu_tanh(x):
    # 0.5 x (1 + tanh(c (x + 0.044715 x^3))) = x * sigmoid(2c (x + 0.044715 x^3)), 2c = 2 sqrt(2 / pi). A literal:
    # the compiler rejects a plain global (the interpreter does not), and a constexpr global breaks the interpreter.
    return x * tl.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


@triton.jit(do_not_specialize=["top_k", "stride_xt"])
def _moe_gate_up_kernel(
    p_x,
    p_w,
    p_scale,
    p_a,
    p_pair,
    p_bexp,
    p_bstart,
    p_bend,
    H,
    I,
    top_k,
    stride_xt,
    stride_we,
    stride_wn,
    stride_se,
    stride_at,
    E,
    FP8: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """a[rows, cols] = gelu_tanh(x[tok] Wg[e, cols]^T) * (x[tok] Wu[e, cols]^T) for one block of sorted rows."""
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    i_e = tl.load(p_bexp + i_m)
    if i_e >= E:  # unused table entry
        return
    o_m = tl.load(p_bstart + i_m) + tl.arange(0, BLOCK_M)
    m_m = o_m < tl.load(p_bend + i_m)
    b_tok = tl.load(p_pair + o_m, mask=m_m, other=0) // top_k  # (BLOCK_M,) token of each row
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < I
    p_xr = p_x + b_tok.to(tl.int64)[:, None] * stride_xt  # (BLOCK_M, 1) gathered token rows
    p_wg = p_w + i_e.to(tl.int64) * stride_we + o_n[None, :] * stride_wn  # gate rows [0, I)
    p_wu = p_wg + I * stride_wn  # up rows [I, 2I)

    b_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    b_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < H
        b_x = tl.load(p_xr + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        m_w = m_k[:, None] & m_n[None, :]
        b_wg = tl.load(p_wg + o_k[:, None], mask=m_w, other=0.0)  # (BLOCK_K, BLOCK_N): one read of the slice
        b_wu = tl.load(p_wu + o_k[:, None], mask=m_w, other=0.0)
        if FP8:  # e4m3 -> x's dtype, exact; the scale comes after the dot
            b_wg = b_wg.to(b_x.dtype)
            b_wu = b_wu.to(b_x.dtype)
        if UPCAST:
            b_x = b_x.to(tl.float32)
            b_wg = b_wg.to(tl.float32)
            b_wu = b_wu.to(tl.float32)
        b_g = tl.dot(b_x, b_wg, b_g, input_precision=PRECISION)
        b_u = tl.dot(b_x, b_wu, b_u, input_precision=PRECISION)
    if FP8:  # per-output-channel scales of the gate and up rows
        p_s = p_scale + i_e.to(tl.int64) * stride_se + o_n
        b_g *= tl.load(p_s, mask=m_n, other=0.0)[None, :]
        b_u *= tl.load(p_s + I, mask=m_n, other=0.0)[None, :]
    b_a = _gelu_tanh(b_g) * b_u
    p_out = p_a + o_m.to(tl.int64)[:, None] * stride_at + o_n[None, :]
    tl.store(p_out, b_a.to(p_a.dtype.element_ty), mask=m_m[:, None] & m_n[None, :])


@triton.jit(do_not_specialize=["stride_yp"])
def _moe_down_kernel(
    p_a,
    p_w,
    p_scale,
    p_y,
    p_pair,
    p_rw,
    p_bexp,
    p_bstart,
    p_bend,
    H,
    I,
    stride_at,
    stride_we,
    stride_wn,
    stride_se,
    stride_yp,
    E,
    FP8: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """y[pair, cols] = w_pair * (a[rows] Wd[e, cols]^T) for one block of sorted rows, stored at each row's pair."""
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    i_e = tl.load(p_bexp + i_m)
    if i_e >= E:
        return
    o_m = tl.load(p_bstart + i_m) + tl.arange(0, BLOCK_M)
    m_m = o_m < tl.load(p_bend + i_m)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < H
    p_ar = p_a + o_m.to(tl.int64)[:, None] * stride_at  # (BLOCK_M, 1) contiguous sorted rows
    p_wd = p_w + i_e.to(tl.int64) * stride_we + o_n[None, :] * stride_wn

    b_y = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < I
        b_a = tl.load(p_ar + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        b_w = tl.load(p_wd + o_k[:, None], mask=m_k[:, None] & m_n[None, :], other=0.0)  # (BLOCK_K, BLOCK_N)
        if FP8:
            b_w = b_w.to(b_a.dtype)
        if UPCAST:
            b_a = b_a.to(tl.float32)
            b_w = b_w.to(tl.float32)
        b_y = tl.dot(b_a, b_w, b_y, input_precision=PRECISION)
    if FP8:
        b_y *= tl.load(p_scale + i_e.to(tl.int64) * stride_se + o_n, mask=m_n, other=0.0)[None, :]
    b_y *= tl.load(p_rw + o_m, mask=m_m, other=0.0)[:, None]  # router weight (per-expert scale folded in)
    b_pair = tl.load(p_pair + o_m, mask=m_m, other=0)
    p_out = p_y + b_pair.to(tl.int64)[:, None] * stride_yp + o_n[None, :]
    tl.store(p_out, b_y, mask=m_m[:, None] & m_n[None, :])


def _blocks(
    S: int,
    E: int,
    N: int,
    block_m: int | None,
    block_n: int | None,
    block_k: int | None,
    inner: int,
    elem_bytes: int = 2,
) -> tuple[int, int, int]:
    """Block sizes: BLOCK_M from the mean rows per expert (16..64), small tiles under the interpreter.

    BLOCK_K keeps a K-slice at 256 bytes per row (128 bf16, 64 fp32): with 3 pipeline stages the gate/up tiles of
    fp32 inputs at BLOCK_K = 128 need 144 KiB of shared memory, more than the 99 KiB of an sm_86/sm_89 GPU
    (benchmarks/kernel_build.py builds every launch for those targets).
    """
    if block_m is None:
        block_m = 16 if INTERPRET else min(64, max(16, triton.next_power_of_2(triton.cdiv(S, E))))
    if block_n is None:
        block_n = min(32 if INTERPRET else 64, max(16, triton.next_power_of_2(N)))
    if block_k is None:
        block_k = min(32 if INTERPRET else 256 // elem_bytes, max(16, triton.next_power_of_2(inner)))
    return block_m, block_n, block_k


def _launch_kw(x: torch.Tensor) -> dict:
    fp32 = x.dtype == torch.float32
    kw: dict[str, Any] = {"UPCAST": INTERPRET, "PRECISION": "ieee" if fp32 else "tf32"}
    if not INTERPRET:
        kw.update(num_warps=4, num_stages=3)
    return kw


def _check_weights(
    name: str, w: torch.Tensor, scale: torch.Tensor | None, x_dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    if w.shape != shape or w.stride(-1) != 1:
        raise ValueError(
            f"{name} must be {shape} with a contiguous last axis, got {tuple(w.shape)} strides {w.stride()}"
        )
    if scale is None:
        if w.dtype != x_dtype:
            raise ValueError(
                f"{name} must have the hidden states' dtype {x_dtype} (or be float8_e4m3fn with a scale), got {w.dtype}"
            )
    elif (
        w.dtype != torch.float8_e4m3fn
        or scale.dtype != torch.float32
        or scale.shape != shape[:2]
        or scale.stride(-1) != 1
    ):
        raise ValueError(
            f"{name}: FP8 weights need float8_e4m3fn values and a float32 {shape[:2]} scale, got "
            f"{w.dtype} and {scale.dtype} {tuple(scale.shape)}"
        )


def _output(out: torch.Tensor | None, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A new output tensor, or the caller's after checking it fits (shape, dtype, contiguous last axis)."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != shape or out.stride(-1) != 1 or out.dtype != dtype:
        raise ValueError(f"out must be {shape} {dtype} with a contiguous last axis, got {tuple(out.shape)} {out.dtype}")
    return out


def moe_gate_up(
    x: torch.Tensor,
    routing: Routing,
    gate_up_proj: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
) -> torch.Tensor:
    """Stage 2: ``gelu_tanh(gate) * up`` for every sorted row: x (T, H) -> a (T*K, I) in x's dtype, sorted order.

    `gate_up_proj` (E, 2I, H) in x's dtype, or float8_e4m3fn with `scale` (E, 2I) fp32.
    """
    T, H = x.shape
    E, I2, _ = gate_up_proj.shape
    I = I2 // 2  # noqa: E741
    _check_weights("gate_up_proj", gate_up_proj, scale, x.dtype, (routing.num_experts, I2, H))
    S = routing.pair.numel()
    out = _output(out, (S, I), x.dtype, x.device)
    if S == 0 or I == 0:
        return out
    _, block_n, block_k = _blocks(S, E, I, routing.block_m, block_n, block_k, H, x.element_size())
    grid = (routing.block_expert.numel(), triton.cdiv(I, block_n))
    _moe_gate_up_kernel[grid](
        x,
        gate_up_proj,
        scale if scale is not None else routing.weight,
        out,
        routing.pair,
        routing.block_expert,
        routing.block_start,
        routing.block_end,
        H,
        I,
        routing.top_k,
        x.stride(0),
        gate_up_proj.stride(0),
        gate_up_proj.stride(1),
        scale.stride(0) if scale is not None else 0,
        out.stride(0),
        E,
        FP8=scale is not None,
        BLOCK_M=routing.block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        **_launch_kw(x),
    )
    return out


def moe_down(
    a: torch.Tensor,
    routing: Routing,
    down_proj: torch.Tensor,
    scale: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
) -> torch.Tensor:
    """Stage 3: ``w * (a @ Wd_e^T)`` per sorted row, stored in fp32 at its pair index: a (T*K, I) -> y (T*K, H)."""
    S, I = a.shape  # noqa: E741
    E, H, _ = down_proj.shape
    _check_weights("down_proj", down_proj, scale, a.dtype, (routing.num_experts, H, I))
    if S != routing.pair.numel():
        raise ValueError(f"a has {S} rows, the routing {routing.pair.numel()} pairs")
    out = _output(out, (S, H), torch.float32, a.device)
    if S == 0 or H == 0:
        return out
    if I == 0:
        return out.zero_()
    _, block_n, block_k = _blocks(S, E, H, routing.block_m, block_n, block_k, I, a.element_size())
    grid = (routing.block_expert.numel(), triton.cdiv(H, block_n))
    _moe_down_kernel[grid](
        a,
        down_proj,
        scale if scale is not None else routing.weight,
        out,
        routing.pair,
        routing.weight,
        routing.block_expert,
        routing.block_start,
        routing.block_end,
        H,
        I,
        a.stride(0),
        down_proj.stride(0),
        down_proj.stride(1),
        scale.stride(0) if scale is not None else 0,
        out.stride(0),
        E,
        FP8=scale is not None,
        BLOCK_M=routing.block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        **_launch_kw(a),
    )
    return out


def moe_experts(
    x: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor | FP8Experts,
    down_proj: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
) -> torch.Tensor:
    """The experts' output for x (T, H) routed by (T, K) ids and weights: (T, H) in x's dtype.

    Weights in the model's layout, gate_up_proj (E, 2I, H) and down_proj (E, H, I) in x's dtype, or one
    :class:`~dgls.kernels.moe_ref.FP8Experts` (from :func:`quantize_experts_fp8`). Same result as
    :func:`~dgls.kernels.moe_ref.moe_experts_ref` up to the accumulation order (and bf16 rounding of the
    gated activation when x is bf16).
    """
    if x.ndim != 2 or x.dtype not in _DTYPES or x.stride(-1) != 1:
        raise ValueError(
            f"x must be (T, H) float32/float16/bfloat16 with a contiguous last axis, got "
            f"{tuple(x.shape)} {x.dtype} strides {x.stride()}"
        )
    if top_k_index.shape[:1] != x.shape[:1] or top_k_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"top_k_index must be (T, K) = ({x.shape[0]}, K) int32/int64, got "
            f"{tuple(top_k_index.shape)} {top_k_index.dtype}"
        )
    if isinstance(gate_up_proj, FP8Experts):
        w_gu, s_gu, w_d, s_d = gate_up_proj
    elif down_proj is None:
        raise ValueError("down_proj is required unless gate_up_proj is an FP8Experts")
    else:
        w_gu, s_gu, w_d, s_d = gate_up_proj, None, down_proj, None
    if w_gu.ndim != 3 or w_d.ndim != 3:
        raise ValueError(
            f"expected gate_up_proj (E, 2I, H) and down_proj (E, H, I), got {tuple(w_gu.shape)} and {tuple(w_d.shape)}"
        )
    for t in (top_k_index, top_k_weights, w_gu, w_d):
        if t.device != x.device:
            raise ValueError(f"every input must be on {x.device}, found one on {t.device}")
    T, H = x.shape
    E, I2, _ = w_gu.shape
    K = top_k_index.shape[1]
    if out is None:
        out = torch.empty(T, H, dtype=x.dtype, device=x.device)
    elif out.shape != (T, H) or out.dtype != x.dtype:
        raise ValueError(f"out must be ({T}, {H}) {x.dtype}, got {tuple(out.shape)} {out.dtype}")
    if T == 0:
        return out
    if I2 == 0 or K == 0:
        return out.zero_()
    block_m, _, _ = _blocks(T * K, E, H, block_m, None, None, H)
    routing = moe_routing(top_k_index, top_k_weights, E, block_m)
    a = moe_gate_up(x, routing, w_gu, s_gu, block_n=block_n, block_k=block_k)  # (T*K, I), sorted rows
    y = moe_down(a, routing, w_d, s_d, block_n=block_n, block_k=block_k)  # (T*K, H) fp32, pair order
    return out.copy_(y.view(T, K, H).sum(1))  # the K rows of each token, in fp32, then x's dtype


def fp8_supported(device: str | torch.device) -> bool:
    """Whether float8_e4m3fn tiles convert in-kernel here (compute capability 8.9+, or the interpreter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return INTERPRET
    return torch.cuda.get_device_capability(device) >= (8, 9)


def self_check(device: str | torch.device = "cuda") -> str | None:
    """Run the kernel on small random inputs against the reference; None if it agrees, else every case that differs."""
    g = torch.Generator().manual_seed(0)
    problems = []
    T, K, E, H, I = 21, 3, 6, 80, 40  # noqa: E741 - odd sizes: masked rows, columns and reduction tails
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    ids[ids == 3] = 2  # expert 3 gets no token (2 may then appear twice in a row: allowed)
    w = torch.rand(T, K, generator=g)
    x = torch.randn(T, H, generator=g)
    w_gu = torch.randn(E, 2 * I, H, generator=g) / H**0.5
    w_d = torch.randn(E, H, I, generator=g) / I**0.5
    cases = [(torch.float32, False, 1e-4), (torch.bfloat16, False, 3e-2)]
    if fp8_supported(device):
        cases.append((torch.bfloat16, True, 3e-2))
    for dtype, fp8, tol in cases:
        xs, gus, ds = x.to(dtype), w_gu.to(dtype), w_d.to(dtype)
        weights = quantize_experts_fp8(gus, ds) if fp8 else None
        ref = moe_experts_ref(xs, ids, w, weights or gus, None if fp8 else ds).float()
        d = torch.device(device)
        if weights is not None:
            got = moe_experts(xs.to(d), ids.to(d), w.to(d), FP8Experts(*(t.to(d) for t in weights)))
        else:
            got = moe_experts(xs.to(d), ids.to(d), w.to(d), gus.to(d), ds.to(d))
        err = float((got.float().cpu() - ref).abs().max())
        if not err <= tol * (1 + float(ref.abs().max())):  # NaN fails too
            problems.append(f"moe_experts {dtype}{' fp8' if fp8 else ''}: max abs diff {err:.3g} against the reference")
    return "; ".join(problems) or None
