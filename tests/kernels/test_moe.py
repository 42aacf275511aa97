"""MoE experts: the reference against transformers, the grouped-GEMM kernel against the reference, FP8's error."""

from __future__ import annotations

import pytest
import torch
from transformers import DiffusionGemmaConfig
from transformers.models.diffusion_gemma.modeling_diffusion_gemma import (
    DiffusionGemmaTextExperts,
    DiffusionGemmaTextRouter,
)

from dgls.kernels.moe import fp8_supported, moe_down, moe_experts, moe_gate_up, moe_routing
from dgls.kernels.moe_ref import FP8Experts, gelu_tanh, moe_experts_ref, quantize_experts_fp8
from dgls.model.experts import patch_moe_experts

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# odd shapes: (T, K, E, H, I, experts used, block sizes); "experts used" < E leaves experts without tokens
CASES = {
    "K=1, T not a block multiple": (13, 1, 5, 40, 24, 5, (16, 16, 16)),
    "K=3, idle experts": (29, 3, 9, 72, 40, 5, (16, 32, 16)),
    "one token, K=4": (1, 4, 8, 48, 20, 8, (16, 16, 32)),
    "several blocks per expert": (40, 2, 3, 36, 18, 3, (16, 16, 16)),
}


def routing_inputs(T, K, E, used, dtype=torch.float32):
    """Top-k ids (T, K), distinct per token, drawn from the first `used` experts; weights as the router's."""
    ids = torch.stack([torch.randperm(used)[:K] for _ in range(T)])
    w = torch.softmax(torch.randn(T, K), -1) * (0.5 + torch.rand(T, K))  # per-expert scale folded in
    return ids, w


def weights(E, H, I, dtype=torch.float32):  # noqa: E741
    return (torch.randn(E, 2 * I, H) / H**0.5).to(dtype), (torch.randn(E, H, I) / I**0.5).to(dtype)


def tiny_text_config(E=7, K=3, H=40, I=24):  # noqa: E741
    cfg = DiffusionGemmaConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=H,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            global_head_dim=16,
            num_experts=E,
            top_k_experts=K,
            moe_intermediate_size=I,
            layer_types=["sliding_attention", "full_attention"],
        ),
        experts_implementation="eager",
    )
    return cfg.get_text_config(decoder=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_reference_equals_transformers_experts(dtype, tol, assert_close):
    """moe_experts_ref == DiffusionGemmaTextExperts (eager) fed by a real router with per-expert scales."""
    tc = tiny_text_config()
    router, experts = DiffusionGemmaTextRouter(tc), DiffusionGemmaTextExperts(tc)
    with torch.no_grad():
        experts.gate_up_proj.normal_(0, 0.2)
        experts.down_proj.normal_(0, 0.2)
        router.per_expert_scale.uniform_(0.5, 2.0)
        router.proj.weight.normal_(0, 1.0)
    experts.to(dtype)
    x = torch.randn(23, tc.hidden_size)
    with torch.no_grad():
        _, w, ids = router(x)  # fp32 weights with the per-expert scale applied, as the layer passes them
        want = experts(x.to(dtype), ids, w)
        got = moe_experts_ref(x.to(dtype), ids, w, experts.gate_up_proj, experts.down_proj)
    assert not torch.allclose(w.sum(-1), torch.ones(23)), "the per-expert scale should show in the weights"
    assert got.dtype == want.dtype == dtype
    # bf16: transformers rounds each matmul, the activation and y * w to bf16, the reference once at the end
    scale = float(want.float().abs().max())
    d = assert_close(f"reference vs transformers {dtype}", got, want, atol=tol * scale, rtol=tol)
    print(f"{dtype}: max abs diff {d:.2e} (max |out| {scale:.2f})")


def test_routing_covers_every_pair_once_in_expert_blocks():
    T, K, E, bm = 29, 3, 9, 4
    ids, w = routing_inputs(T, K, E, used=5)
    r = moe_routing(ids, w, E, bm)
    pairs = r.pair.long()
    assert sorted(pairs.tolist()) == list(range(T * K))
    expert_of_row = ids.reshape(-1)[pairs]
    assert (expert_of_row[1:] >= expert_of_row[:-1]).all(), "rows are sorted by expert"
    assert torch.equal(r.weight, w.reshape(-1)[pairs])
    covered = torch.zeros(T * K, dtype=torch.long)
    for e, s, end in zip(r.block_expert.tolist(), r.block_start.tolist(), r.block_end.tolist(), strict=True):
        if e == E:  # unused table entry
            continue
        rows = torch.arange(s, min(s + bm, end))
        assert (expert_of_row[rows] == e).all() and len(rows) > 0
        covered[rows] += 1
    assert (covered == 1).all(), f"rows covered {covered.tolist()}"
    used = set(r.block_expert.tolist()) - {E}
    assert used == set(ids.unique().tolist()), "experts without tokens get no block"


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_stages_match_reference_fp32(case, assert_close):
    T, K, E, H, I, used, (bm, bn, bk) = CASES[case]  # noqa: E741
    ids, w = routing_inputs(T, K, E, used)
    x = torch.randn(T, H)
    w_gu, w_d = weights(E, H, I)
    dev = [t.to(DEVICE) for t in (x, ids, w, w_gu, w_d)]
    r = moe_routing(dev[1], dev[2], E, bm)

    a = torch.full((T * K, I), float("nan"), device=DEVICE)
    moe_gate_up(dev[0], r, dev[3], out=a, block_n=bn, block_k=bk)
    tok, e = r.pair.long().cpu() // K, ids.reshape(-1)[r.pair.long().cpu()]
    gu = torch.einsum("sh,snh->sn", x[tok], w_gu[e])  # (S, 2I) per sorted row
    a_ref = gelu_tanh(gu[:, :I]) * gu[:, I:]
    assert_close(f"{case}: gate_up", a, a_ref, atol=1e-5, rtol=1e-5)

    y = torch.full((T * K, H), float("nan"), device=DEVICE)
    moe_down(a, r, dev[4], out=y, block_n=bn, block_k=bk)
    y_ref = torch.zeros(T * K, H)
    y_ref[r.pair.long().cpu()] = torch.einsum("si,shi->sh", a_ref, w_d[e]) * r.weight.cpu()[:, None]
    assert_close(f"{case}: down", y, y_ref, atol=1e-5, rtol=1e-5)

    out = torch.full((T, H), float("nan"), device=DEVICE)
    moe_experts(*dev, out=out, block_m=bm, block_n=bn, block_k=bk)
    d = assert_close(f"{case}: experts", out, moe_experts_ref(x, ids, w, w_gu, w_d), atol=1e-5, rtol=1e-5)
    print(f"{case}: max abs diff {d:.2e}")


def test_kernel_bf16_and_default_blocks(assert_close):
    T, K, E, H, I = 19, 2, 6, 56, 28  # noqa: E741
    ids, w = routing_inputs(T, K, E, used=E)
    x = torch.randn(T, H).bfloat16()
    w_gu, w_d = weights(E, H, I, torch.bfloat16)
    out = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device=DEVICE)
    moe_experts(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), w_gu.to(DEVICE), w_d.to(DEVICE), out=out)
    ref = moe_experts_ref(x, ids, w, w_gu, w_d)
    assert_close("bf16", out, ref, atol=2e-2, rtol=2e-2)  # the gated activation is rounded to bf16 in between


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double().cpu() - want.double().cpu()).norm() / want.double().cpu().norm())


# FP8 error bound. e4m3 keeps 3 mantissa bits: rounding a weight to it has relative error up to 2^-4 and
# rms 2^-4 / sqrt(6) ~ 2.6% (uniform rounding error over an octave); dot products average independent errors, so
# each projection's output carries about that rms relative error, and gate * up then down compound three of
# them to about 4.5%. Bound: 6% relative (Frobenius) error against the unquantized weights.
FP8_BOUND = 0.06


def test_fp8_kernel_matches_dequantized_reference_and_stays_within_the_bound(assert_close):
    """Kernel with FP8 weights == reference with the dequantized weights; against the unquantized fp32 weights
    the relative (Frobenius) error stays under FP8_BOUND."""
    T, K, E, H, I = 24, 4, 6, 96, 40  # noqa: E741
    ids, w = routing_inputs(T, K, E, used=E)
    x = torch.randn(T, H)
    w_gu, w_d = weights(E, H, I)
    before = w_gu.clone()
    q = quantize_experts_fp8(w_gu, w_d)
    assert torch.equal(w_gu, before), "quantizing must leave the weights as they were"
    assert q.gate_up.dtype == torch.float8_e4m3fn and q.gate_up_scale.shape == (E, 2 * I)
    assert q.down_scale.shape == (E, H)
    out = torch.full((T, H), float("nan"), device=DEVICE)
    moe_experts(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), FP8Experts(*(t.to(DEVICE) for t in q)), out=out)
    assert_close("fp8 kernel vs dequantized reference", out, moe_experts_ref(x, ids, w, q), atol=1e-5, rtol=1e-5)

    exact = moe_experts_ref(x, ids, w, w_gu, w_d)  # fp32 weights
    bf16 = moe_experts_ref(x, ids, w, w_gu.bfloat16(), w_d.bfloat16())  # the weights' bf16 rounding alone
    e_fp8, e_bf16 = rel_error(out, exact), rel_error(bf16, exact)
    print(f"relative error vs fp32 weights: fp8 {e_fp8:.4f}, bf16 weights {e_bf16:.4f}")
    assert e_fp8 < FP8_BOUND, f"FP8 relative error {e_fp8:.4f} >= {FP8_BOUND}"
    assert e_bf16 < e_fp8, "bf16 weights (7 mantissa bits) must beat e4m3 (3)"


def test_patched_model_matches_transformers(tiny_moe_checkpoint, assert_close):
    """patch_moe_experts on a real (tiny) DiffusionGemma: the same encoder states through the kernel, close with
    FP8 experts; undo restores transformers' forward."""
    from dgls.model.loading import load_model

    model = load_model(tiny_moe_checkpoint, device="cpu").model.float().to(DEVICE)  # loaded unpatched, then moved
    ids = torch.randint(10, 500, (2, 11), device=DEVICE)

    def encoder_states():
        with torch.no_grad():
            return model.model.encoder(input_ids=ids).last_hidden_state

    want = encoder_states()
    patch = patch_moe_experts(model, require_usable=False)
    assert len(patch.modules) == 2 * model.config.get_text_config(decoder=True).num_hidden_layers  # enc + dec
    got = encoder_states()
    patch.undo()
    assert all("forward" not in m.__dict__ for m in patch.modules + [model.model.decoder.layers[0].experts])
    assert torch.equal(encoder_states(), want), "undo restores the transformers path"
    fp8 = patch_moe_experts(model, fp8=True, require_usable=False)
    got8 = encoder_states()
    fp8.undo()
    assert_close("patched model", got, want, atol=1e-4, rtol=1e-4)
    e = rel_error(got8, want)
    print(f"tiny model, FP8 experts: relative error of the encoder states {e:.4f}")
    assert 0 < e < FP8_BOUND


def test_fp8_release_keeps_only_the_fp8_copies(tiny_moe_checkpoint, assert_close):
    """release=True (load_model's experts="fp8"): the same outputs as FP8 next to the originals, the originals
    replaced by empty tensors in every module (tied encoder and decoder alike), no undo."""
    from dgls.model.loading import load_model

    def cpu_model():
        return load_model(tiny_moe_checkpoint, device="cpu").model.float()

    ids = torch.randint(10, 500, (2, 11), device=DEVICE)
    model = cpu_model().to(DEVICE)
    keep = patch_moe_experts(model, fp8=True, require_usable=False)
    with torch.no_grad():
        want = model.model.encoder(input_ids=ids).last_hidden_state
    keep.undo()
    model = cpu_model()  # as load_model does it: FP8 copies made on the device, the rest moved after
    with pytest.raises(ValueError, match="for FP8 experts"):
        patch_moe_experts(model, release=True, require_usable=False)
    n_before = sum(p.numel() for p in model.parameters())
    patch = patch_moe_experts(model, fp8=True, release=True, device=DEVICE, require_usable=False)
    assert all(m.dgls_fp8.gate_up.device.type == DEVICE for m in patch.modules)
    model.to(DEVICE)
    with torch.no_grad():
        got = model.model.encoder(input_ids=ids).last_hidden_state
    assert_close("released FP8 experts", got, want, atol=0, rtol=0)
    mods = patch.modules
    assert len(mods) == 4 and all(m.gate_up_proj.shape[1] == 0 == m.down_proj.shape[1] for m in mods)
    enc, dec = model.model.encoder.language_model.layers[0].experts, model.model.decoder.layers[0].experts
    assert enc.dgls_fp8 is dec.dgls_fp8, "tied encoder/decoder experts share one FP8 copy"
    gone = sum(m.dgls_fp8.gate_up.numel() + m.dgls_fp8.down.numel() for m in (mods[0], mods[1]))
    assert sum(p.numel() for p in model.parameters()) == n_before - gone
    with pytest.raises(ValueError, match="released"):
        patch.undo()


@pytest.mark.skipif(not (torch.cuda.is_available() and fp8_supported("cuda")), reason="needs a CUDA GPU of 8.9+")
def test_load_model_puts_the_experts_on_the_kernel_in_bf16_or_fp8(tiny_moe_checkpoint):
    """On a GPU: load_model patches the experts (bf16), or keeps only FP8 copies with experts="fp8"."""
    from dgls.model.loading import load_model

    ids = torch.randint(10, 500, (2, 11), device="cuda")
    states = {}
    for experts in ("auto", "fp8"):
        loaded = load_model(tiny_moe_checkpoint, device="cuda", experts=experts)
        assert loaded.experts.startswith("dgls moe_experts kernel") and ("FP8" in loaded.experts) == (experts == "fp8")
        mods = [m for m in loaded.model.modules() if hasattr(m, "gate_up_proj") and m.gate_up_proj.ndim == 3]
        assert mods and all("forward" in m.__dict__ for m in mods)
        assert all((m.gate_up_proj.shape[1] == 0) == (experts == "fp8") for m in mods)
        with torch.no_grad():
            states[experts] = loaded.model.model.encoder(input_ids=ids).last_hidden_state.float()
    assert 0 < rel_error(states["fp8"], states["auto"]) < FP8_BOUND


def test_rejects_bad_inputs():
    x, ids, w = torch.randn(3, 8), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)
    w_gu, w_d = weights(2, 8, 4)
    bad = [
        (x[None], ids, w, w_gu, w_d),  # x not (T, H)
        (x, ids[:2], w[:2], w_gu, w_d),  # T mismatch
        (x, ids, w, w_gu.double(), w_d.double()),  # dtype mismatch
        (x, ids, w, w_gu[:, :, :7], w_d),  # H mismatch
        (x, ids, w, w_gu, w_d[:, :, :3]),  # I mismatch
        (x, ids, w[:, :1], w_gu, w_d),  # weights not (T, K)
        (x, ids, w, w_gu, None),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            moe_experts(*args)


def test_patch_refuses_without_a_usable_kernel_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine may have a usable kernel")
    with pytest.raises(ValueError, match="not usable here"):
        patch_moe_experts(torch.nn.Linear(2, 2))
