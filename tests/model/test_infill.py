"""The sampler, canvas and prefix cache on a real (tiny, random-weight) DiffusionGemma checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from dgls.model.backend import DiffusionGemmaDenoiser, PrefixCache, encode
from dgls.model.canvas import Canvas
from dgls.model.infill import Infiller
from dgls.model.sampler import Cancelled, DenoiseResult, SamplerConfig

PREFIX = "def add(a, b):\n    return a + b\n"


@pytest.fixture()
def infiller(tiny_loaded):
    return Infiller(tiny_loaded)


@pytest.mark.parametrize("checkpoint", ["tiny_checkpoint", "tiny_moe_checkpoint"])
def test_equals_generate_token_for_token_with_empty_suffix(request, checkpoint):
    """API drift guard: with no suffix the sampler is generate(), RNG order included, over two blocks."""
    from dgls.model.loading import load_model

    loaded = load_model(request.getfixturevalue(checkpoint), device="cpu")
    infiller, model = Infiller(loaded), loaded.model
    prefix = infiller.tokenize(PREFIX)
    C = model.config.canvas_length
    cfg = SamplerConfig(max_steps=6, compat_generate=True)
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=torch.tensor([[loaded.spec.bos_id, *prefix]]),
            max_new_tokens=2 * C,
            max_denoising_steps=6,
            t_min=0.4,
            t_max=0.8,
            stability_threshold=1,
            confidence_threshold=0.005,
            sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        )
        sequences = out.sequences if hasattr(out, "sequences") else out
        reference = sequences[0, len(prefix) + 1 :].tolist()
        assert loaded.spec.eos_id not in reference[:C], "the reference stopped early; pick another prompt"
        torch.manual_seed(seed)
        res = infiller.infill_ids(prefix, [], lengths=(C,), max_blocks=2, sampler=cfg)
        assert res.blocks == 2 and res.candidates[0].raw_ids == reference


def test_suffix_is_pinned_and_changes_the_middle(infiller):
    suffix = infiller.tokenize("\n\nprint(add(1, 2))\n")
    a = infiller.infill_ids(infiller.tokenize(PREFIX), suffix, lengths=(8,), seed=3)
    b = infiller.infill_ids(infiller.tokenize(PREFIX), [], lengths=(8,), seed=3)
    assert a.suffix_tokens == len(suffix) and b.suffix_tokens == 0
    assert a.candidates[0].raw_ids != b.candidates[0].raw_ids  # bidirectional attention reads the suffix
    assert len(a.candidates[0].raw_ids) == 8


def test_padded_rows_see_exactly_what_they_would_alone(tiny_loaded):
    """Rows of different lengths share a batch; the attention mask hides the padding."""
    model = tiny_loaded.model
    cache = encode(model, torch.tensor([[2, 40, 41, 42, 43]]))
    suffix = [50, 51, 52]
    g = torch.Generator().manual_seed(0)
    noise = lambda s: torch.randint(9, 512, s, generator=g)  # noqa: E731
    batch = Canvas.build((3, 6), suffix, 5, noise)
    from dgls.model.backend import batched

    logits = DiffusionGemmaDenoiser(model, batched(cache, 2), 9)(batch, None)
    alone = Canvas(
        tokens=batch.tokens[:1, :6],
        pinned=batch.pinned[:1, :6],
        valid=batch.valid[:1, :6],
        positions=batch.positions[:1, :6],
        n_free=(3,),
    )
    ref = DiffusionGemmaDenoiser(model, cache, 9)(alone, None)
    torch.testing.assert_close(logits[0, :6], ref[0], atol=2e-5, rtol=1e-4)


def test_batch_candidates_are_ranked_and_distinct(infiller):
    res = infiller.infill(PREFIX, "\n", lengths=(8, 16), n_candidates=2, seed=0)
    assert 1 <= len(res.candidates) <= 4
    texts = [c.text for c in res.candidates]
    assert len(set(texts)) == len(texts)
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores, reverse=True)
    assert {c.n_free for c in res.candidates} <= {8, 16}
    assert res.nfe <= infiller.spec.sampler.max_steps  # one pass per step for the whole batch


def test_multi_block_continues_until_the_cap(infiller):
    cfg = infiller.spec.sampler.replace(max_steps=3)
    res = infiller.infill(PREFIX, "", lengths=(8,), max_blocks=3, sampler=cfg, seed=0)
    c = res.candidates[0]
    assert res.blocks == (1 + (len(c.raw_ids) - 8) // 8)
    if not c.ended:
        assert res.blocks == 3 and len(c.raw_ids) == 24
    with pytest.raises(ValueError, match="one canvas length"):
        infiller.infill(PREFIX, "", lengths=(8, 16), max_blocks=2)


def test_same_seed_same_middle(infiller):
    a = infiller.infill(PREFIX, "\n", lengths=(8,), seed=7)
    b = infiller.infill(PREFIX, "\n", lengths=(8,), seed=7)
    assert a.candidates[0].raw_ids == b.candidates[0].raw_ids


def test_cancel_between_steps_keeps_the_prefix_cache_usable(infiller):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled) as err:
        infiller.infill(
            PREFIX, "\n", lengths=(8,), sampler=infiller.spec.sampler.replace(confidence_threshold=0.0), cancel=cancel
        )
    assert err.value.steps == 2
    res = infiller.infill(PREFIX, "\n", lengths=(8,))
    assert res.prefix_cache == "hit" and res.candidates


def test_prefix_cache_hit_extend_miss_and_extension_is_exact(tiny_loaded):
    model = tiny_loaded.model
    pc = PrefixCache(model, tail=2, advance=2)
    ids = [2, 30, 31, 32, 33, 34]
    assert pc.get(ids[:4])[1] == "miss" and pc.anchor_ids == (2, 30)
    cache, kind = pc.get(ids)
    assert kind == "extend" and cache.get_seq_length() == 6
    assert pc.get(ids)[1] == "hit"
    fresh = encode(model, torch.tensor([ids]))
    canvas = Canvas.build((4,), [40], 6, lambda s: torch.full(s, 77))
    a = DiffusionGemmaDenoiser(model, cache, 9)(canvas, None)
    b = DiffusionGemmaDenoiser(model, fresh, 9)(canvas, None)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    # typing changes the last tokens: still served from the anchor, which forks never modify
    anchor_keys = pc.anchor.layers[0].keys
    assert pc.get([2, 30, 99])[1] == "extend"
    assert pc.anchor.layers[0].keys is anchor_keys and pc.anchor.get_seq_length() == 2
    assert pc.get([2, 77, 31])[1] == "miss"
    # far past the anchor: it moves forward, keeping `tail` tokens behind the end
    long = [2, 77, *range(100, 110)]
    assert pc.get(long)[1] == "extend" and pc.anchor_ids == tuple(long[:-2])
    assert pc.stats == {"hit": 1, "extend": 3, "miss": 2}


def test_fork_shares_tensors_and_leaves_the_original_alone(tiny_loaded):
    from dgls.model.backend import fork

    model = tiny_loaded.model
    base = encode(model, torch.tensor([[2, 30, 31]]))
    before = [layer.keys.clone() for layer in base.layers]
    child = encode(model, torch.tensor([[40, 41]]), fork(base))
    assert child.get_seq_length() == 5 and base.get_seq_length() == 3
    assert all(torch.equal(layer.keys, k) for layer, k in zip(base.layers, before, strict=True))


def test_filler_ends_the_middle_and_is_stripped(infiller, monkeypatch):
    """Decode path: filler and EOS are not text; EOS ends the middle, filler marks it ended."""
    import dgls.model.infill as mod

    spec = infiller.spec
    words = infiller.tokenize(" x = 1")

    def fake_denoise(den, canvas, cfg, **kw):
        n = canvas.n_free[0]
        row = (words + [spec.filler_id] * n)[:n]
        row2 = (words[:1] + [spec.eos_id] + words[1:] + [spec.filler_id] * n)[:n]
        tokens = torch.tensor([row + canvas.tokens[0, n:].tolist(), row2 + canvas.tokens[1, n:].tolist()])
        return DenoiseResult(
            tokens=tokens,
            confidence=torch.ones_like(tokens, dtype=torch.float),
            score=torch.tensor([-0.1, -0.2]),
            steps=1,
            row_steps=[1, 1],
        )

    monkeypatch.setattr(mod, "denoise", fake_denoise)
    res = infiller.infill("a", "b", lengths=(8,), n_candidates=2)
    assert [c.text for c in res.candidates] == [" x = 1", infiller.tokenizer.decode(words[:1])]
    assert all(c.ended for c in res.candidates)


def test_extension_past_the_sliding_window_matches_one_shot_encoding(tiny_loaded):
    """The tiny config has a 64-token sliding window: forks and extensions must see the same keys."""
    model = tiny_loaded.model
    ids = [2, *[(7 * i) % 400 + 9 for i in range(99)]]
    pc = PrefixCache(model, tail=8, advance=16)
    pc.get(ids[:70])
    cache, kind = pc.get(ids)
    assert kind == "extend" and len(pc.anchor_ids) == 92
    canvas = Canvas.build((8,), [40, 41], 100, lambda s: torch.full(s, 77))
    a = DiffusionGemmaDenoiser(model, cache, 9)(canvas, None)
    b = DiffusionGemmaDenoiser(model, encode(model, torch.tensor([ids])), 9)(canvas, None)
    torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


def _lcs(a: list[int], b: list[int]) -> int:
    """Length of the longest common subsequence."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_regenerate_in_place_keeps_the_unchanged_share(infiller, share):
    """Only ceil(share * n) of the selection's tokens are renoised: the others are in the result, in order, as they
    were; the joint fill is one loop after one scoring pass."""
    old = infiller.tokenize("        total += item.price * item.count  # running sum\n")
    res = infiller.regenerate(infiller.tokenize("def f(items):\n"), old, infiller.tokenize("    return total\n"), share)
    (cand,) = res.candidates
    assert _lcs(old, cand.token_ids) >= len(old) - math.ceil(share * len(old))
    assert cand.token_ids != old  # something was regenerated
    assert res.nfe >= 2  # the scoring pass plus at least one denoising step


def test_regenerate_rejects_a_bad_share(infiller):
    with pytest.raises(ValueError):
        infiller.regenerate([5], [6, 7], [], 0.0)


def test_a_lone_seed_runs_beside_a_noise_row(infiller, monkeypatch):
    """A seeded request for one candidate denoises two rows (the seed's, and noise) in one batch; both middles
    are candidates (one when they are the same)."""
    import dgls.model.infill as infill_module

    seen: list[Canvas] = []
    real = infill_module.denoise

    def spy(den, canvas, *args, **kwargs):
        seen.append(canvas)
        return real(den, canvas, *args, **kwargs)

    monkeypatch.setattr(infill_module, "denoise", spy)
    seed_ids = infiller.tokenize("a + b")
    res = infiller.infill_ids(infiller.tokenize(PREFIX), [], lengths=(8,), seed_ids=seed_ids)
    (canvas,) = seen
    assert canvas.tokens.shape[0] == 2 and canvas.seed is not None
    assert canvas.seed[0, : len(seed_ids)].tolist() == seed_ids and bool((canvas.seed[1] < 0).all())
    assert 1 <= len(res.candidates) <= 2
    infiller.infill_ids(infiller.tokenize(PREFIX), [], lengths=(8,))
    assert seen[-1].tokens.shape[0] == 1  # no seed: one row
