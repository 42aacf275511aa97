"""Top-k soft embedding: the kernel against its torch reference, and the top-k error against the dense bound."""

from __future__ import annotations

import pytest
import torch

from dgls.kernels.soft_embedding import topk_soft_embedding
from dgls.kernels.soft_embedding_ref import (
    embedding_sum,
    soft_embedding_ref,
    topk_error_bound,
    topk_mass,
    topk_soft_embedding_ref,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# kernel vs top-k reference: same fp32 math, E and the output in `dtype` (output rounding dominates)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_topk_kernel_matches_reference(dtype, assert_close):
    N, V, H = 7, 1001, 80  # odd sizes: H = 80 needs a masked second column block of 64
    logits = (torch.randn(N, V) * 4).to(dtype).to(DEVICE)
    E = (torch.randn(V, H) * 0.5).to(dtype).to(DEVICE)
    e_sum = embedding_sum(E)
    for k, tail in ((1, False), (5, False), (33, False), (5, True), (33, True)):
        out = torch.full((N, H), float("nan"), dtype=dtype, device=DEVICE)
        kw = {"e_sum": e_sum} if tail else {}
        got = topk_soft_embedding(logits, E, k, scale=3.0, out=out, **kw)
        want = topk_soft_embedding_ref(logits, E, k, scale=3.0, **kw)
        d = assert_close(f"k={k} tail={tail}", got, want, atol=TOL[dtype], rtol=TOL[dtype])
        print(f"{dtype} k={k} tail={tail}: max abs diff {d:.2e}")


def test_topk_error_is_within_the_dropped_mass_bound():
    """||dense - top-k|| <= 2 (1 - top-k mass) max||E_i|| per row, for every k; and it shrinks as k grows."""
    N, V, H, scale = 6, 1500, 48, 2.0
    # rows from peaked (a model late in denoising) to flat (early): temperature-like scales 8 .. 0.5
    logits = torch.randn(N, V) * torch.logspace(0.9, -0.3, N)[:, None]
    E = torch.randn(V, H)
    dense = soft_embedding_ref(logits, E, scale)
    e_sum = embedding_sum(E).to(DEVICE)
    errors: dict[bool, list[torch.Tensor]] = {False: [], True: []}
    for k in (1, 4, 16, 64, 256, 1500):
        bound = topk_error_bound(logits, E, k, scale)
        mass = topk_mass(logits, k)
        for tail in (False, True):
            got = topk_soft_embedding(logits.to(DEVICE), E.to(DEVICE), k, scale=scale, e_sum=e_sum if tail else None)
            err = (got.cpu() - dense).norm(dim=-1)
            print(
                f"k={k:5d} tail={tail:d} mass {mass.min():.4f}..{mass.max():.4f} err {err.max():.3e} "
                f"bound {bound.max():.3e} max err/bound {(err / bound.clamp(min=1e-3)).max():.3f}"
            )
            worst = int((err - bound).argmax())
            assert (err <= bound + 1e-4).all(), (
                f"k={k} tail={tail}: row {worst} error {err[worst]:.4g} > bound "
                f"{bound[worst]:.4g} (mass {mass[worst]:.4f})"
            )
            errors[tail].append(err)
    for tail in (False, True):
        assert (errors[tail][-1] < 1e-4).all(), "k = V is the dense result"
        assert errors[tail][0].sum() > errors[tail][3].sum() > errors[tail][-1].sum()
    # the flattest row (last): the uniform-tail correction removes most of top-k's error
    assert errors[True][3][-1] < 0.5 * errors[False][3][-1]


def test_uniform_tail_is_exact_when_the_dropped_tokens_are_equally_likely():
    V, H = 500, 24
    logits = torch.zeros(3, V)
    logits[:, :5] = torch.tensor([4.0, 3.0, 2.5, 1.0, 0.5])  # 5 peaked tokens, a flat tail of 495
    E = torch.randn(V, H)
    dense = soft_embedding_ref(logits, E)
    plain = topk_soft_embedding(logits.to(DEVICE), E.to(DEVICE), 5).cpu()
    fixed = topk_soft_embedding(logits.to(DEVICE), E.to(DEVICE), 5, e_sum=embedding_sum(E).to(DEVICE)).cpu()
    print(
        f"flat tail, k=5: plain err {(plain - dense).norm(dim=-1).max():.3e}, "
        f"corrected {(fixed - dense).norm(dim=-1).max():.3e}, dropped mass {1 - topk_mass(logits, 5)[0]:.3f}"
    )
    assert (fixed - dense).norm(dim=-1).max() < 1e-5 < (plain - dense).norm(dim=-1).max()


def test_rejects_bad_inputs():
    logits, E = torch.randn(3, 10), torch.randn(10, 4)
    for args in [
        (logits[None], E, 2),
        (logits, E[:9], 2),
        (logits, E, 0),
        (logits, E, 11),
        (logits.long(), E, 2),
        (logits, E.t().contiguous().t(), 2),
    ]:
        with pytest.raises(ValueError):
            topk_soft_embedding(*args)
    with pytest.raises(ValueError, match="e_sum"):
        topk_soft_embedding(logits, E, 2, e_sum=torch.zeros(5))
