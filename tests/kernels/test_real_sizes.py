"""The kernels at the real DiffusionGemma 26B-A4B sizes (reference/diffusiongemma.md §7), against their references.

The other kernel tests use odd small shapes; these use the real model's: vocabulary 262,144, hidden 2816,
128 experts x 704, top 8. That is where split counts, masked tails, block tables and offsets into the largest
tensors meet the sizes they will see (none of these passes 2^31 elements: the sampler's Philox counters, which
do past 8,191 rows, are tested by shrinking the limit in test_canvas_sampler.py). On a GPU the rows are a real
canvas (64 and 256 slots, 3 candidates of 256) with the wrappers' own block sizes; on Triton's interpreter (CI)
the shapes stay real but only a few rows run, with larger blocks so that each test takes seconds (the blocks the
GPU gets are compiled by test_kernel_build.py).
"""

from __future__ import annotations

import pytest
import torch
from test_canvas_sampler import TOL as SAMPLER_TOL  # tests/kernels is on sys.path (pytest's rootdir-less import)
from test_canvas_sampler import nan_out
from test_soft_embedding import TOL as SOFT_TOL

from dgls.kernels.canvas_sampler import row_stats
from dgls.kernels.canvas_sampler_ref import row_stats_ref, softcap
from dgls.kernels.moe import fp8_supported, moe_experts
from dgls.kernels.moe_ref import moe_experts_ref, quantize_experts_fp8
from dgls.kernels.soft_embedding import topk_soft_embedding
from dgls.kernels.soft_embedding_ref import embedding_sum, topk_error_bound, topk_soft_embedding_ref

GPU = torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
V, H, E, I, K, CAP = 262_144, 2816, 128, 704, 8, 30.0  # noqa: E741 - the model's names
# canvas rows: a 64- and a 256-slot canvas and 3 candidates of 256 on a GPU; a few rows on the interpreter
SAMPLER_ROWS = (64, 256, 768) if GPU else (3,)
MOE_TOKENS = (1, 64, 256) if GPU else (2,)
INTERPRETER_BLOCKS = {} if GPU else {"block_v": 8192}


def canvas_logits(n: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, V) logits from nearly flat to peaked rows (per-row scales 0.1 .. 10; 30 is the soft cap), and row 0 a
    flat row with one spike at token SPIKE that the sampler must pick (its nearest rival is e^-24 less likely)."""
    g = torch.Generator(device=DEVICE).manual_seed(n)
    scale = torch.logspace(-1, 1, n, device=DEVICE)[:, None]
    x = torch.randn(n, V, device=DEVICE, generator=g) * scale
    x[0, SPIKE] = 20.0
    return x.to(dtype)


SPIKE = 200_003


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", SAMPLER_ROWS)
def test_sampler_statistics_over_the_real_vocabulary(rows, dtype, assert_close):
    x = canvas_logits(rows, dtype)
    got = row_stats(x, 0.7, cap=CAP, seed=7, out=nan_out(rows), **INTERPRETER_BLOCKS)
    ref = row_stats_ref(x, 0.7, cap=CAP)
    # Entropy and confidence against float64: over 262,144 terms torch's own fp32 log_softmax is off by 1e-4 in
    # the spike row's log p (the kernel's blocked sums are not), more than the tolerance.
    xd = softcap(x.double(), CAP)
    logp = torch.log_softmax(xd / 0.7, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    logp_max = torch.log_softmax(xd, -1).gather(-1, ref.argmax[:, None]).squeeze(-1)
    tol = SAMPLER_TOL[dtype]
    assert_close("entropy", got.entropy, entropy, atol=tol, rtol=tol)
    assert_close("logp_max", got.logp_max, logp_max, atol=tol, rtol=tol)
    assert torch.equal(got.argmax.cpu(), ref.argmax.cpu()), f"argmax {got.argmax.tolist()} != {ref.argmax.tolist()}"
    assert bool(((got.sample >= 0) & (got.sample < V)).all()), f"samples out of range: {got.sample.tolist()}"
    assert int(got.argmax[0]) == int(got.sample[0]) == SPIKE, (got.argmax[0], got.sample[0])
    assert float(got.entropy[0]) < 1e-3 < float(got.entropy[-1])


@pytest.fixture(scope="module")
def real_embedding():
    """The (V, H) bf16 embedding table (1.5 GB), its fp32 copy, and canvas logits, shared by the tail variants."""
    n = 256 if GPU else 2
    logits = canvas_logits(n, torch.float32).clamp(-CAP, CAP)
    emb = ((torch.rand(V, H, device=DEVICE) - 0.5) * 0.1).to(torch.bfloat16)
    return logits, emb, emb.float()


@pytest.mark.parametrize("tail", [False, True])
def test_topk_soft_embedding_over_the_real_vocabulary(tail, real_embedding, assert_close):
    logits, emb, emb32 = real_embedding
    n = logits.shape[0]
    e_sum = embedding_sum(emb) if tail else None
    out = torch.full((n, H), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    got = topk_soft_embedding(logits, emb, 64, scale=H**0.5, e_sum=e_sum, out=out)
    want = topk_soft_embedding_ref(logits, emb, 64, scale=H**0.5, e_sum=e_sum)
    assert_close(f"top-64 tail={tail}", got, want, atol=SOFT_TOL[torch.bfloat16], rtol=SOFT_TOL[torch.bfloat16])
    # the approximation itself at this size: the fp32 top-k against the dense product, within the proven bound
    dense = (torch.softmax(logits, -1) @ emb32) * H**0.5
    approx = topk_soft_embedding_ref(logits, emb32, 64, scale=H**0.5, e_sum=e_sum)
    err = (approx - dense).norm(dim=-1).cpu()
    bound = topk_error_bound(logits, emb, 64, H**0.5).cpu()
    assert bool((err <= bound + 1e-3).all()), f"error {err.tolist()} over the bound {bound.tolist()}"


def real_experts(tokens: int, dtype: torch.dtype):
    """x (T, H), top-8 ids and weights, and (E, 2I, H), (E, H, I) weights in which only the routed experts are
    finite: the others are NaN, so a kernel that reads an expert no token chose poisons its output."""
    g = torch.Generator(device=DEVICE).manual_seed(tokens)
    x = torch.randn(tokens, H, device=DEVICE, generator=g).to(dtype)
    ids = torch.rand(tokens, E, device=DEVICE, generator=g).topk(K, -1).indices
    w = torch.softmax(torch.randn(tokens, K, device=DEVICE, generator=g), -1)
    w_gu = torch.full((E, 2 * I, H), float("nan"), dtype=dtype, device=DEVICE)
    w_d = torch.full((E, H, I), float("nan"), dtype=dtype, device=DEVICE)
    used = ids.unique()
    w_gu[used] = (torch.randn(len(used), 2 * I, H, device=DEVICE, generator=g) / H**0.5).to(dtype)
    w_d[used] = (torch.randn(len(used), H, I, device=DEVICE, generator=g) / I**0.5).to(dtype)
    return x, ids, w, w_gu, w_d


# fp32: accumulation order only; bf16: the gated activation is rounded to bf16 between the two GEMMs
MOE_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
MOE_DTYPES = (torch.bfloat16,) if GPU else (torch.float32, torch.bfloat16)
INTERPRETER_MOE_BLOCKS = {} if GPU else {"block_n": 128, "block_k": 256}


@pytest.mark.parametrize("dtype", MOE_DTYPES)
@pytest.mark.parametrize("tokens", MOE_TOKENS)
def test_moe_experts_at_the_real_sizes(tokens, dtype, assert_close):
    x, ids, w, w_gu, w_d = real_experts(tokens, dtype)
    out = torch.full((tokens, H), float("nan"), dtype=dtype, device=DEVICE)
    moe_experts(x, ids, w, w_gu, w_d, out=out, **INTERPRETER_MOE_BLOCKS)
    want = moe_experts_ref(x, ids, w, w_gu, w_d)
    tol = MOE_TOL[dtype]
    assert_close(f"{tokens} tokens {dtype}", out, want, atol=tol * float(want.float().abs().max()), rtol=tol)


@pytest.mark.skipif(not fp8_supported(DEVICE), reason="FP8 tiles need compute capability 8.9+")
@pytest.mark.parametrize("tokens", MOE_TOKENS)
def test_moe_experts_fp8_at_the_real_sizes(tokens, assert_close):
    dtype = torch.bfloat16 if GPU else torch.float32
    x, ids, w, w_gu, w_d = real_experts(tokens, dtype)
    q = quantize_experts_fp8(w_gu, w_d)
    out = torch.full((tokens, H), float("nan"), dtype=dtype, device=DEVICE)
    moe_experts(x, ids, w, q, out=out, **INTERPRETER_MOE_BLOCKS)
    want = moe_experts_ref(x, ids, w, q)  # the dequantized weights
    tol = MOE_TOL[dtype]
    assert_close(f"{tokens} tokens fp8", out, want, atol=tol * float(want.float().abs().max()), rtol=tol)
