"""The fast decoder path (dgls.model.fastpath) against transformers' forward: same logits, same middles."""

from __future__ import annotations

import pytest
import torch

from dgls.model import fastpath
from dgls.model.backend import DiffusionGemmaDenoiser, batched
from dgls.model.canvas import Canvas, Free
from dgls.model.infill import Infiller
from dgls.model.loading import load_model
from dgls.model.sampler import Cancelled, SamplerConfig

CODE = '''import os


def read_config(path):
    """Read a key=value file into a dict."""
    values = {}
    with open(path) as fh:
        for line in fh:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def main():
    config = read_config(os.environ["CONFIG"])
    print(config)
'''


@pytest.fixture(scope="module")
def shipped():
    return load_model("dgls-tiny", device="cpu")


def _models(request):
    return {
        "shipped": lambda: request.getfixturevalue("shipped"),
        "dense": lambda: load_model(request.getfixturevalue("tiny_checkpoint"), device="cpu"),
        "moe": lambda: load_model(request.getfixturevalue("tiny_moe_checkpoint"), device="cpu"),
    }


@pytest.mark.parametrize("which", ["shipped", "dense", "moe"])
def test_logits_equal_the_reference_forward(request, which):
    """Three rows of different lengths (so padding and a mask), a pinned suffix, with and without
    self-conditioning: every free slot's logits as transformers computes them, to float rounding."""
    loaded = _models(request)[which]()
    inf = Infiller(loaded, fast=False)
    assert fastpath.supports(loaded.model) is None
    cut = len(CODE) // 2
    prefix = [loaded.spec.bos_id, *inf.tokenize(CODE[:cut])]
    suffix = inf.tokenize(CODE[cut:])[:12]
    cache, _ = inf.prefix_cache.get(prefix)
    ref = DiffusionGemmaDenoiser(loaded.model, batched(cache, 3), 9)
    fast = fastpath.FastDenoiser(loaded.model, cache, 9)
    g = torch.Generator().manual_seed(0)
    canvas = Canvas.build([4, 8, 6], suffix, ref.prefix_len, lambda s: ref.noise(s, g))
    assert canvas.padded
    free = canvas.free
    want = ref(canvas, None)
    assert torch.allclose(fast(canvas, None)[canvas.valid], want[canvas.valid], atol=1e-4, rtol=1e-4)
    assert torch.allclose(fast.free_logits(canvas, None), want[free], atol=1e-4, rtol=1e-4)

    sc = want * 0.5  # a self-conditioning signal: free slots their logits, pinned ones a one-hot of their token
    pinned = canvas.pinned.nonzero(as_tuple=True)
    sc[pinned] = -1e4
    sc[pinned + (canvas.tokens[pinned],)] = 1e4
    want_sc = ref(canvas, sc)
    got_sc = fast.free_logits(canvas, sc[free])
    assert not torch.allclose(want_sc[free], want[free], atol=1e-3)  # the signal changes the output
    assert torch.allclose(got_sc, want_sc[free], atol=1e-4, rtol=1e-4)
    assert torch.equal(got_sc.argmax(-1), want_sc[free].argmax(-1))


def _middles(inf: Infiller, seed: int) -> list:
    cut = CODE.index("values[key")
    prefix, suffix = inf.tokenize(CODE[:cut]), inf.tokenize(CODE[cut:])[:24]
    out = []
    res = inf.infill_ids(prefix, suffix, lengths=(16,), n_candidates=3, seed=seed, min_tokens=1)
    out.append([(c.raw_ids, round(c.score, 4)) for c in res.candidates] + [res.nfe])
    res = inf.infill_ids(prefix, [], lengths=(8,), max_blocks=2, seed=seed)
    out.append([c.raw_ids for c in res.candidates] + [res.nfe, res.blocks])
    joint = inf.fill_segments(prefix, [Free(6), tuple(suffix[:5]), Free(6), tuple(suffix[5:])], seed=seed)
    out.append([r.raw_ids for r in joint.runs] + [joint.nfe])
    old = inf.tokenize(CODE[cut : cut + 40])
    regen = inf.regenerate(prefix, old, suffix[10:], 0.3, seed=seed)
    out.append(regen.candidates[0].raw_ids)
    return out


def test_whole_middles_equal_the_reference_path_on_fixed_seeds(shipped):
    """Single-block with three candidates, multi-block, a joint fill and regenerate-in-place: the same tokens,
    scores and step counts through either decoder, seed for seed."""
    fast, ref = Infiller(shipped), Infiller(shipped, fast=False)
    assert fast.fast and not ref.fast
    for seed in (0, 1, 2):
        assert _middles(fast, seed) == _middles(ref, seed)


def test_request_state_is_built_once_per_canvas_not_per_step(shipped, monkeypatch):
    """Fused weights once per model, rotary tables / prefix buffers once per canvas, reused by every step."""
    built = []
    real = fastpath._Request

    def counting(*args):
        built.append(1)
        return real(*args)

    monkeypatch.setattr(fastpath, "_Request", counting)
    inf = Infiller(shipped)
    weights = fastpath.prepared(shipped.model)
    res = inf.infill(
        CODE[:200], CODE[200:260], lengths=(16,), sampler=SamplerConfig(max_steps=6, confidence_threshold=0)
    )
    assert res.nfe == 6 and len(built) == 1
    inf.infill(CODE[:220], CODE[220:260], lengths=(16,))
    assert len(built) == 2  # a new request, a new canvas
    assert fastpath.prepared(shipped.model) is weights  # the model's fused weights are not rebuilt


def test_cancel_stops_the_fast_path_within_one_step(shipped):
    inf = Infiller(shipped)
    steps = []

    def cancel():
        return len(steps) >= 2

    with pytest.raises(Cancelled) as err:
        inf.infill(
            CODE[:200],
            CODE[200:260],
            lengths=(16,),
            sampler=SamplerConfig(max_steps=20, confidence_threshold=0),
            cancel=cancel,
            on_step=lambda step, total: steps.append(step),
        )
    assert err.value.steps == 2 == len(steps)


def test_a_model_it_does_not_cover_falls_back_or_refuses(shipped, monkeypatch):
    monkeypatch.setattr(fastpath, "supports", lambda model: "clipped linears")
    assert not Infiller(shipped).fast
    with pytest.raises(ValueError, match="clipped linears"):
        Infiller(shipped, fast=True)


@pytest.mark.parametrize("which", ["shipped", "dense", "moe"])
def test_encoder_writes_the_cache_the_reference_encoder_writes(request, which):
    """A miss then an extend longer than the tiny models' 64-token sliding window and than the fast encoder's
    chunk: every layer's cached keys and values (sliding layers keep only their window) equal transformers'."""
    from dgls.model.backend import encode, new_cache

    loaded = _models(request)[which]()
    V = loaded.model.config.get_text_config().vocab_size
    n = 100 + fastpath.ENCODE_CHUNK + 60
    ids = torch.randint(10, V, (1, n), generator=torch.Generator().manual_seed(0))
    want = encode(loaded.model, ids[:, 100:], encode(loaded.model, ids[:, :100]))
    got = fastpath.encode(
        loaded.model, ids[:, 100:], fastpath.encode(loaded.model, ids[:, :100], new_cache(loaded.model))
    )
    assert got.get_seq_length() == want.get_seq_length() == n
    for a, b in zip(want.layers, got.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        assert torch.allclose(a.keys, b.keys, atol=1e-4) and torch.allclose(a.values, b.values, atol=1e-4)


def test_autoregressive_step_equals_transformers_encoder_and_lm_head(shipped):
    """The AR baseline of benchmarks/infill_latency.py on the fast path decodes the tokens transformers does."""
    from dgls.model.backend import new_cache

    model = shipped.model
    inf = Infiller(shipped)
    prefix = torch.tensor([[shipped.spec.bos_id, *inf.tokenize(CODE[:300])]])
    cap = model.config.get_text_config().final_logit_softcapping
    want, ids, cache = [], prefix, new_cache(model)
    for _ in range(8):
        h = model.model.encoder(input_ids=ids, past_key_values=cache).last_hidden_state[:, -1]
        logits = torch.tanh(model.lm_head(h).float() / cap) * cap
        ids = logits.argmax(-1, keepdim=True)
        want.append(int(ids))
    got, ids, cache = [], prefix, new_cache(model)
    for _ in range(8):
        ids = fastpath.next_token_logits(model, ids, cache).argmax(-1, keepdim=True)
        got.append(int(ids))
    assert got == want and len(set(got)) > 1
