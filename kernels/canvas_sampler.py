"""Fused per-slot sampler statistics: one pass over the vocabulary instead of five (N, V) fp32 tensors.

For logits (N, V) (N = B*C canvas slots, fp32/fp16/bf16) one read of each logit yields, per row:
soft-capping ``cap * tanh(x / cap)`` (optional), the entropy of ``softmax(x / T)``, the argmax, the
log-probability of the argmax at temperature 1 (confidence), and a Gumbel-max sample from ``softmax(x / T)``
(``argmax_v z_v - log(-log u_v)``, u uniform from a counter-based RNG: no (N, V) probability tensor, no second
pass). Reference: :mod:`dgls.kernels.canvas_sampler_ref`.

Memory traffic: the sampler's torch path reads the logits and then writes and reads about five (N, V) fp32
temporaries (scaled logits, log-probabilities, their clamp, probabilities, the T=1 log-softmax), roughly ten
passes of 4 bytes per logit; this kernel reads each logit once (4 bytes fp32, 2 bytes bf16) and writes a few
scalars per row. At the real vocabulary (V = 262,144) and a 256-slot canvas: ~2.7 GB of traffic vs 268 MB.
The Gumbel noise costs ALU, not bytes (Philox, 10 rounds per element): whether the pass stays memory-bound on
a given GPU is for the benchmark (benchmarks/gpu_speed.py) to show.

Work split: program (row, split) streams one chunk of the row with an online softmax and writes partial
statistics; a second tiny kernel merges the splits of each row. Splitting V keeps the GPU busy when N is small
(a 16-slot canvas is 16 rows, against 132 SMs on an H100).

Online entropy. Over a chunk with running max ``m``, ``s = sum e^(z-m)`` and ``a = sum e^(z-m) (z-m)``::

    H = log s - a / s
    merging with a new max m' (alpha = e^(m-m')):  s' = alpha s,  a' = alpha (a + s (m - m'))

so the entropy needs no second pass and no (N, V) probabilities.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from dgls.kernels.canvas_sampler_ref import RowStats, row_stats_ref, softcap

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_MAX_COUNTERS = 2**31 - 1  # Philox counters per launch (int32 offsets row * V + v)
_NEG = tl.constexpr(-3.0e38)  # finite "minus infinity" for running maxima: keeps (m - m') * 0 at 0 instead of NaN


@triton.jit
def _tanh(x):
    # tanh via exp (the interpreter has no libdevice tanh): tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|), no overflow
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    return tl.where(x < 0, -y, y)


@triton.jit(do_not_specialize=["stride_row", "V", "chunk", "n_splits", "seed"])
def _row_stats_partial_kernel(
    p_x,
    stride_row,
    V,
    chunk,
    n_splits,
    temperature,
    cap,
    seed,
    p_m,
    p_s,
    p_a,
    p_m1,
    p_s1,
    p_xam,
    p_gv,
    p_am,
    p_gi,
    SOFTCAP: tl.constexpr,
    SAMPLE: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Partial statistics of row i_row over vocab chunk [i_split*chunk, (i_split+1)*chunk): 9 scalars out."""
    i_row = tl.program_id(0)
    i_split = tl.program_id(1)
    p_row = p_x + i_row.to(tl.int64) * stride_row
    o_chunk = i_split * chunk

    b_m = tl.full([], _NEG, tl.float32)  # running max of z = x / T (= z at the running argmax)
    b_s = tl.zeros([], tl.float32)  # sum e^(z - b_m)
    b_a = tl.zeros([], tl.float32)  # sum e^(z - b_m) (z - b_m)
    b_m1 = tl.full([], _NEG, tl.float32)  # running max of x (temperature 1)
    b_s1 = tl.zeros([], tl.float32)  # sum e^(x - b_m1)
    b_xam = tl.zeros([], tl.float32)  # x at the running argmax
    b_am = tl.zeros([], tl.int32)  # running argmax
    b_gv = tl.full([], float("-inf"), tl.float32)  # running max of z + Gumbel noise
    b_gi = tl.zeros([], tl.int32)  # its index: the sample

    for o_start in range(0, chunk, BLOCK_V):
        o_v = o_chunk + o_start + tl.arange(0, BLOCK_V)
        m_v = o_v < V
        b_x = tl.load(p_row + o_v, mask=m_v, other=0.0).to(tl.float32)  # the only read of the logits
        if SOFTCAP:
            b_x = cap * _tanh(b_x / cap)
        b_z = tl.where(m_v, b_x / temperature, float("-inf"))  # division, as torch's logits / T: same argmax
        b_x = tl.where(m_v, b_x, float("-inf"))

        # argmax: first index within the block, and a later block wins only if strictly larger (torch order)
        b_bmax, b_barg = tl.max(b_z, 0, return_indices=True, return_indices_tie_break_left=True)
        b_bxam = tl.sum(tl.where(tl.arange(0, BLOCK_V) == b_barg, b_x, 0.0), 0)
        b_upd = b_bmax > b_m
        b_am = tl.where(b_upd, o_chunk + o_start + b_barg, b_am)
        b_xam = tl.where(b_upd, b_bxam, b_xam)

        # online softmax + entropy accumulators at temperature T
        b_mnew = tl.maximum(b_m, b_bmax)
        b_alpha = tl.exp(b_m - b_mnew)
        b_d = b_z - b_mnew  # -inf on masked lanes and on -inf logits
        b_e = tl.exp(b_d)  # 0 there
        b_ed = b_e * tl.where(b_e > 0, b_d, 0.0)  # 0 * -inf would be NaN: zero the operand first
        b_a = b_alpha * (b_a + b_s * (b_m - b_mnew)) + tl.sum(b_ed, 0)
        b_s = b_alpha * b_s + tl.sum(b_e, 0)
        b_m = b_mnew

        # log-sum-exp at temperature 1 (for the confidence of the argmax)
        b_m1new = tl.maximum(b_m1, tl.max(b_x, 0))
        b_s1 = b_s1 * tl.exp(b_m1 - b_m1new) + tl.sum(tl.exp(b_x - b_m1new), 0)
        b_m1 = b_m1new

        if SAMPLE:
            # Gumbel-max: argmax(z - log(-log u)) ~ softmax(z); u from Philox keyed on (seed, row * V + v)
            b_u = tl.rand(seed, i_row * V + o_v)
            b_g = b_z - tl.log(-tl.log(b_u))  # masked lanes stay -inf
            b_gmax, b_garg = tl.max(b_g, 0, return_indices=True)
            b_gupd = b_gmax > b_gv
            b_gi = tl.where(b_gupd, o_chunk + o_start + b_garg, b_gi)
            b_gv = tl.maximum(b_gv, b_gmax)

    o_out = i_row * n_splits + i_split
    tl.store(p_m + o_out, b_m)
    tl.store(p_s + o_out, b_s)
    tl.store(p_a + o_out, b_a)
    tl.store(p_m1 + o_out, b_m1)
    tl.store(p_s1 + o_out, b_s1)
    tl.store(p_xam + o_out, b_xam)
    tl.store(p_gv + o_out, b_gv)
    tl.store(p_am + o_out, b_am)
    tl.store(p_gi + o_out, b_gi)


@triton.jit(do_not_specialize=["n_splits"])
def _row_stats_merge_kernel(
    p_m,
    p_s,
    p_a,
    p_m1,
    p_s1,
    p_xam,
    p_gv,
    p_am,
    p_gi,
    n_splits,
    p_ent,
    p_argmax,
    p_logp,
    p_sample,
    SAMPLE: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """Merge the n_splits partials of one row into its entropy, argmax, log p(argmax) and sample."""
    i_row = tl.program_id(0)
    o_k = tl.arange(0, BLOCK_S)
    m_k = o_k < n_splits
    o_p = i_row * n_splits + o_k
    b_m = tl.load(p_m + o_p, mask=m_k, other=_NEG)
    b_s = tl.load(p_s + o_p, mask=m_k, other=0.0)
    b_a = tl.load(p_a + o_p, mask=m_k, other=0.0)

    # H = log S - A / S over the merged chunks, each rescaled to the row max M
    b_M = tl.max(b_m, 0)
    b_w = tl.exp(b_m - b_M)
    b_S = tl.sum(b_w * b_s, 0)
    b_A = tl.sum(b_w * (b_a + b_s * (b_m - b_M)), 0)
    tl.store(p_ent + i_row, tl.log(b_S) - b_A / b_S)

    # argmax: the first split holding the max holds the first index of the max
    i_best = tl.argmax(b_m, 0)
    b_am = tl.load(p_am + o_p, mask=m_k, other=0)
    b_xam = tl.load(p_xam + o_p, mask=m_k, other=0.0)
    tl.store(p_argmax + i_row, tl.sum(tl.where(o_k == i_best, b_am, 0), 0).to(tl.int64))

    # log p(argmax) at T = 1: x_am - logsumexp(x)
    b_m1 = tl.load(p_m1 + o_p, mask=m_k, other=_NEG)
    b_s1 = tl.load(p_s1 + o_p, mask=m_k, other=0.0)
    b_M1 = tl.max(b_m1, 0)
    b_S1 = tl.sum(b_s1 * tl.exp(b_m1 - b_M1), 0)
    b_x = tl.sum(tl.where(o_k == i_best, b_xam, 0.0), 0)
    tl.store(p_logp + i_row, b_x - b_M1 - tl.log(b_S1))

    if SAMPLE:
        b_gv = tl.load(p_gv + o_p, mask=m_k, other=float("-inf"))
        b_gi = tl.load(p_gi + o_p, mask=m_k, other=0)
        i_g = tl.argmax(b_gv, 0)
        tl.store(p_sample + i_row, tl.sum(tl.where(o_k == i_g, b_gi, 0), 0).to(tl.int64))


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def splits_for(n_rows: int, n_blocks: int, sms: int) -> int:
    """Enough (row, split) programs for about two waves over `sms` SMs, never more splits than blocks."""
    return max(1, min(n_blocks, triton.cdiv(2 * sms, n_rows)))


def _default_splits(n_rows: int, n_blocks: int, device: torch.device) -> int:
    """:func:`splits_for` the device's SMs; one split off CUDA."""
    if device.type != "cuda":
        return 1
    return splits_for(n_rows, n_blocks, torch.cuda.get_device_properties(device).multi_processor_count)


def row_stats(
    logits: torch.Tensor,
    temperature: float,
    *,
    cap: float | None = None,
    seed: int | None = None,
    splits: int | None = None,
    block_v: int | None = None,
    out: RowStats | None = None,
) -> RowStats:
    """Entropy of softmax(x/T), argmax, log p(argmax) at T=1 and (if `seed` is given) a sample, per row.

    `logits` (N, V) fp32/fp16/bf16 with a contiguous last axis; all statistics are computed in fp32. `cap`
    soft-caps first (``cap * tanh(x / cap)``). `seed` (int) keys the Gumbel noise: the same seed and logits give
    the same samples; use a fresh seed per step. `splits`/`block_v` override the work split (tests). `out`
    receives the results in preallocated tensors (entropy and logp_max float32, argmax and sample int64, (N,)).
    """
    if logits.ndim != 2 or logits.dtype not in _DTYPES:
        raise ValueError(f"logits must be (N, V) float32/float16/bfloat16, got {tuple(logits.shape)} {logits.dtype}")
    if logits.stride(-1) != 1:
        raise ValueError(f"logits need a contiguous last axis, got strides {logits.stride()}")
    T = float(temperature)
    if not (T > 0 and T < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if cap is not None and not cap >= 0:
        raise ValueError(f"cap must be None or >= 0, got {cap!r}")
    N, V = logits.shape
    device = logits.device
    if block_v is None:
        block_v = min(256 if INTERPRET else 4096, triton.next_power_of_2(V))
    n_blocks = triton.cdiv(V, block_v)
    splits = _default_splits(N, n_blocks, device) if splits is None else max(1, min(int(splits), n_blocks))
    chunk = triton.cdiv(n_blocks, splits) * block_v  # a whole number of blocks per split
    splits = triton.cdiv(V, chunk)  # no empty split

    if out is None:
        out = RowStats(
            torch.empty(N, dtype=torch.float32, device=device),
            torch.empty(N, dtype=torch.int64, device=device),
            torch.empty(N, dtype=torch.float32, device=device),
            None if seed is None else torch.empty(N, dtype=torch.int64, device=device),
        )
    elif seed is not None and out.sample is None:
        raise ValueError("out.sample must be a tensor when a seed is given")
    for name, t in out._asdict().items():
        if t is not None and (t.shape != (N,) or not t.is_contiguous() or t.device != device):
            raise ValueError(f"out.{name} must be a contiguous ({N},) tensor on {device}, got {tuple(t.shape)}")
    sample = seed is not None
    drawn = out.sample if sample and out.sample is not None else out.argmax  # not sampling: the argmax, twice
    kw = {} if INTERPRET else {"num_warps": 8 if block_v >= 2048 else 4}
    # The Gumbel noise counters row * V + v are int32: launch at most _MAX_COUNTERS // V rows at a time, each
    # launch with its own Philox key (seed), so every (row, token) still gets its own uniform.
    rows = max(1, _MAX_COUNTERS // V)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        n = r1 - r0
        key = (int(seed or 0) + (r0 // rows) * 0x9E3779B1) & 0x7FFFFFFF
        part_f = torch.empty(7, n * splits, dtype=torch.float32, device=device)  # m, s, a, m1, s1, x_am, g max
        part_i = torch.empty(2, n * splits, dtype=torch.int32, device=device)  # argmax, sample
        _row_stats_partial_kernel[(n, splits)](
            logits[r0:r1],
            logits.stride(0),
            V,
            chunk,
            splits,
            T,
            float(cap or 1.0),
            key,
            *part_f,
            *part_i,
            SOFTCAP=bool(cap),
            SAMPLE=sample,
            BLOCK_V=block_v,
            **kw,
        )
        _row_stats_merge_kernel[(n,)](
            *part_f,
            *part_i,
            splits,
            out.entropy[r0:r1],
            out.argmax[r0:r1],
            out.logp_max[r0:r1],
            drawn[r0:r1],
            SAMPLE=sample,
            BLOCK_S=max(2, triton.next_power_of_2(splits)),
        )
    return out if sample else out._replace(sample=None)


def self_check(device: str | torch.device = "cuda") -> str | None:
    """Run the kernel on small random logits against the reference; None if it agrees, else every case that differs.

    Every case runs even after one disagrees (so one report names them all, and ``benchmarks/kernel_build.py``
    sees every launch the check makes).
    """
    g = torch.Generator().manual_seed(0)
    problems = []
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(6, 2053, generator=g) * torch.tensor([0.1, 1, 3, 10, 30, 100])[:, None]).to(dtype)
        got = row_stats(x.to(device), 0.7, cap=30.0, seed=1)
        ref = row_stats_ref(x, 0.7, cap=30.0)
        d_h = float((got.entropy.cpu() - ref.entropy).abs().max())
        d_lp = float((got.logp_max.cpu() - ref.logp_max).abs().max())
        assert got.sample is not None  # a seed was given
        argmax, sample = got.argmax.cpu(), got.sample.cpu()
        if not (d_h <= 1e-4 and d_lp <= 1e-4):  # NaN fails too
            problems.append(f"canvas_sampler {dtype}: max |dH| {d_h:.3g}, max |d logp| {d_lp:.3g} (tolerance 1e-4)")
        if not bool(((sample >= 0) & (sample < x.shape[1]) & (argmax >= 0) & (argmax < x.shape[1])).all()):
            problems.append(
                f"canvas_sampler {dtype}: argmax {argmax.tolist()} or samples {sample.tolist()} out of range"
            )
            continue
        # argmax up to near-ties: the 100-scale row saturates tanh, where an ulp decides between equal maxima
        z = softcap(x.float(), 30.0) / 0.7
        gap = z.max(-1).values - z.gather(-1, argmax[:, None]).squeeze(-1)
        if not bool((gap <= 1e-5 * (1 + z.abs().max(-1).values)).all()):
            problems.append(f"canvas_sampler {dtype}: argmax {argmax.tolist()} != reference {ref.argmax.tolist()}")
    return "; ".join(problems) or None
