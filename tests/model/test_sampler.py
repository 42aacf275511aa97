"""The sampler with a model whose logits we control: acceptance, pinning, stopping, cancel, seeds; canvases of
several free runs (joint holes, regenerate in place), seeded free slots and the syntax guide."""

from __future__ import annotations

import pytest
import torch

from dgls.model.canvas import Canvas, Free
from dgls.model.infill import MiddleGuide
from dgls.model.sampler import (
    Cancelled,
    SamplerConfig,
    accept_mask,
    denoise,
    draw_accepted,
    entropy,
    sample_rows,
    temperature,
)

V = 50


class ScriptedDenoiser:
    """Logits that put `margin` nats on a target token per slot; records every call."""

    vocab_size = V

    def __init__(self, target: torch.Tensor, margin: float | torch.Tensor = 30.0):
        self.target = target  # (B, C)
        self.margin = margin
        self.calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def __call__(self, canvas: Canvas, sc):
        self.calls.append((canvas.tokens.clone(), None if sc is None else sc.clone()))
        B, C = canvas.tokens.shape
        logits = torch.zeros(B, C, V)
        margin = self.margin if isinstance(self.margin, torch.Tensor) else torch.full((B, C), self.margin)
        logits.scatter_(-1, self.target.unsqueeze(-1), margin.unsqueeze(-1))
        return logits

    def noise(self, shape, generator=None):
        return torch.randint(10, V, shape, generator=generator)


def make_canvas(n_free=(6,), suffix=(3, 4, 5), start=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Canvas.build(n_free, suffix, start, lambda s: torch.randint(10, V, s, generator=g))


def test_canvas_layout_rows_of_different_lengths():
    c = make_canvas(n_free=(2, 4), suffix=(7, 8))
    assert c.tokens.shape == (2, 6)
    assert c.pinned.tolist() == [[False, False, True, True, False, False], [False, False, False, False, True, True]]
    assert c.valid.tolist() == [[True, True, True, True, False, False], [True] * 6]
    assert c.tokens[0, 2:4].tolist() == [7, 8] and c.tokens[1, 4:6].tolist() == [7, 8]
    assert c.positions[0].tolist() == [7, 8, 9, 10, 11, 12]  # each row's suffix follows its own middle
    mask = c.attention_mask(prefix_len=7)
    assert mask.shape == (2, 13) and mask[0].sum() == 11 and mask[1].all()
    assert make_canvas(n_free=(3, 3)).attention_mask(7) is None


@pytest.mark.parametrize("bad", [dict(n_free=()), dict(n_free=(0, 3)), dict(start=0)])
def test_canvas_rejects_bad_layout(bad):
    with pytest.raises(ValueError):
        make_canvas(**bad)


def test_accept_mask_follows_entropy_bound():
    H = torch.tensor([[0.01, 0.02, 0.5, 0.03, 0.0]])
    free = torch.tensor([[True, True, True, True, False]])
    # sorted free entropies 0.01, 0.02, 0.03, 0.5; sums of the lower ones 0, 0.01, 0.03, 0.06
    assert accept_mask(H, free, 0.05).tolist() == [[True, True, False, True, False]]
    assert accept_mask(H, free, 0.0).tolist() == [[True, False, False, False, False]]  # always at least one
    assert accept_mask(H, free, 10.0).tolist() == [[True, True, True, True, False]]  # pinned never accepted


def test_entropy_matches_categorical():
    logits = torch.randn(3, 7, V) * 4
    ref = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.equal(entropy(logits), ref)


def test_sample_rows_draws_from_the_softmax_and_never_a_zero_probability_token():
    # three rows: a skewed distribution, a uniform one over 4 tokens (the rest banned to -1e4), a near one-hot
    scaled = torch.full((3, V), -1e4)
    scaled[0, :5] = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    scaled[1, 10:14] = 0.0
    scaled[2, 7], scaled[2, 8] = 12.0, 0.0
    n = 20_000
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([sample_rows(scaled, gen) for _ in range(n)])  # (n, 3)
    for row in range(3):
        freq = torch.bincount(draws[:, row], minlength=V).double() / n
        want = torch.softmax(scaled[row].double(), -1)
        assert freq[want < 1e-12].sum() == 0, "a token of zero probability was drawn"
        # 5 standard errors of a frequency estimate over n draws
        assert torch.all((freq - want).abs() <= 5 * (want * (1 - want) / n).sqrt() + 1e-9), (row, freq[:15], want[:15])
    # the same seed gives the same draws, another seed others
    a = sample_rows(scaled.repeat(64, 1), torch.Generator().manual_seed(5))
    assert torch.equal(a, sample_rows(scaled.repeat(64, 1), torch.Generator().manual_seed(5)))
    assert not torch.equal(a, sample_rows(scaled.repeat(64, 1), torch.Generator().manual_seed(6)))


def test_temperature_schedule_matches_generate():
    cfg = SamplerConfig(max_steps=10, t_max=0.8, t_min=0.4)
    assert temperature(10, cfg).item() == pytest.approx(0.8)
    assert temperature(1, cfg).item() == pytest.approx(0.44)


def test_pinned_suffix_never_changes_and_gets_onehot_selfconditioning():
    canvas = make_canvas()
    target = torch.randint(10, V, canvas.tokens.shape)
    den = ScriptedDenoiser(target, margin=torch.linspace(0.5, 8, canvas.tokens.numel()).view(canvas.tokens.shape))
    res = denoise(den, canvas, SamplerConfig(max_steps=6, entropy_bound=0.05, confidence_threshold=0.0))
    assert res.steps == 6 == len(den.calls)
    for tokens, sc in den.calls:
        assert tokens[0, 6:].tolist() == [3, 4, 5]
        if sc is not None:
            assert sc[0, 6:].argmax(-1).tolist() == [3, 4, 5]
            assert sc[0, 6:].max() > 1e3
    assert den.calls[0][1] is None  # no self-conditioning at the first step
    assert res.tokens[0, 6:].tolist() == [3, 4, 5]


def test_accepted_slots_take_the_sample_others_are_renoised():
    """Two sure slots and four spread over ids 0-9 (noise is 10+): the rule accepts the two sure ones plus the
    lowest-entropy uncertain one (the entropies below it sum to ~0), and renoises the other three."""

    class Spread(ScriptedDenoiser):
        def __call__(self, canvas, sc):
            self.calls.append((canvas.tokens.clone(), sc))
            logits = torch.full((1, 6, V), -1e4)
            logits[0, :2, 7] = 0.0
            logits[0, 2:, :10] = 0.0  # uniform over ids 0-9: equal entropies, one of them is accepted
            return logits

    den = Spread(torch.zeros(1, 6, dtype=torch.long))
    denoise(
        den,
        make_canvas(n_free=(6,), suffix=()),
        SamplerConfig(max_steps=2, entropy_bound=0.01, confidence_threshold=0.0),
    )
    second = den.calls[1][0][0].tolist()
    assert second[:2] == [7, 7]
    assert sum(t < 10 for t in second[2:]) == 1  # one accepted sample from ids 0-9
    assert sum(t >= 10 for t in second[2:]) == 3  # the rest renoised from the noise range


def test_one_step_accepts_and_renoises_only_free_slots():
    """The step's draw and Canvas.renoise on rows with a pinned suffix and padding: acceptance is the entropy
    rule, accepted slots take their sample, other free slots fresh noise, pinned and padding slots stay."""
    B, C, low = 3, 9, 10
    tokens = torch.randint(0, V, (B, C))
    pinned = torch.zeros(B, C, dtype=torch.bool)
    pinned[:, 6:] = True  # pinned suffix
    valid = torch.ones(B, C, dtype=torch.bool)
    valid[2, 4:6] = False  # padding
    canvas = Canvas(
        tokens=tokens.clone(), pinned=pinned, valid=valid, positions=7 + torch.arange(C).expand(B, C), n_free=(6, 6, 4)
    )
    free = canvas.free
    logits = torch.randn(B, C, V) * torch.rand(B, C, 1) * 30  # from nearly uniform to nearly one-hot slots
    t = torch.tensor(0.7)
    d = draw_accepted(logits[free], logits[free] / t, t, free, canvas.tokens, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(d.entropy[free], entropy(logits / t)[free])
    assert torch.equal(d.argmax[free], logits[free].argmax(-1))
    assert torch.equal(d.argmax[~free], canvas.tokens[~free]), "a slot that is not free keeps its own token"
    assert torch.equal(d.accept, accept_mask(d.entropy, free, 0.1))
    accept = d.accept
    assert accept.any(-1).all(), "every row accepts its lowest-entropy free slot"
    canvas.renoise(accept, d.sampled, torch.randint(low, V, (B, C), generator=torch.Generator().manual_seed(1)))
    new = canvas.tokens
    assert torch.equal(new[~free], tokens[~free]), "pinned and padding slots never change"
    assert torch.equal(new[accept], d.sampled[accept])
    renoised = free & ~accept
    assert renoised.any() and ((new[renoised] >= low) & (new[renoised] < V)).all()


def test_early_stop_when_stable_and_confident():
    canvas = make_canvas()
    target = torch.randint(10, V, canvas.tokens.shape)
    res = denoise(ScriptedDenoiser(target), canvas, SamplerConfig(max_steps=20))
    assert res.steps == 2  # stability_threshold=1: two identical argmax canvases
    assert res.row_steps == [2]
    assert res.tokens[0, :6].tolist() == target[0, :6].tolist()
    res0 = denoise(ScriptedDenoiser(target), make_canvas(), SamplerConfig(max_steps=20, stability_threshold=0))
    assert res0.steps == 1
    unsure = denoise(ScriptedDenoiser(target, margin=1.0), make_canvas(), SamplerConfig(max_steps=9))
    assert unsure.steps == 9  # never confident: runs to max_steps


def test_rows_stop_independently_and_stay_frozen():
    canvas = make_canvas(n_free=(4, 4), suffix=())
    target = torch.randint(10, V, (2, 4))
    margin = torch.tensor([[30.0] * 4, [1.0] * 4])
    res = denoise(ScriptedDenoiser(target, margin), canvas, SamplerConfig(max_steps=7))
    assert res.row_steps == [2, 7] and res.steps == 7
    assert res.tokens[0].tolist() == target[0].tolist()


def test_cancel_stops_within_one_step():
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 3

    target = torch.randint(10, V, (1, 9))
    den = ScriptedDenoiser(target, margin=1.0)
    with pytest.raises(Cancelled) as err:
        denoise(den, make_canvas(), SamplerConfig(max_steps=20), cancel=cancel)
    assert err.value.steps == 3 and len(den.calls) == 3


def test_fixed_seed_reproduces_and_other_seed_differs():
    target = torch.randint(10, V, (1, 9))

    def run(seed):
        den = ScriptedDenoiser(target, margin=1.5)
        g = torch.Generator().manual_seed(seed)
        denoise(den, make_canvas(seed=seed), SamplerConfig(max_steps=4, confidence_threshold=0.0), generator=g)
        return torch.stack([c[0] for c in den.calls])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_on_step_reports_progress():
    seen = []
    target = torch.randint(10, V, (1, 9))
    denoise(
        ScriptedDenoiser(target, 1.0),
        make_canvas(),
        SamplerConfig(max_steps=3),
        on_step=lambda s, n: seen.append((s, n)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_steps=0),
        dict(t_min=0.0),
        dict(t_min=0.9, t_max=0.5),
        dict(entropy_bound=-1.0),
        dict(stability_threshold=-1),
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        SamplerConfig(**bad)


def test_config_from_dict_ignores_unknown_and_checks_types():
    cfg = SamplerConfig.from_dict({"max_steps": 8, "entropy_bound": 1, "nonsense": 3})
    assert cfg.max_steps == 8 and cfg.entropy_bound == 1.0
    with pytest.raises(ValueError, match="max_steps"):
        SamplerConfig.from_dict({"max_steps": "8"})
    with pytest.raises(ValueError, match="sc_raw_logits"):
        SamplerConfig.from_dict({"sc_raw_logits": 1})


def test_min_tokens_keeps_end_tokens_out_of_the_first_slots():
    canvas = make_canvas(n_free=(4, 6), suffix=(3,))
    target = torch.full(canvas.tokens.shape, 8)  # the model wants to end the middle at once (8 = "filler")
    den = ScriptedDenoiser(target)
    res = denoise(den, canvas, SamplerConfig(max_steps=5), min_tokens=2, end_ids=[8, 9])
    free = canvas.free
    assert (res.tokens[:, :2] != 8).all() and (res.tokens[:, :2] != 9).all()
    assert (res.tokens[:, 2:4] == 8).all() and res.tokens[1, 4:6].tolist() == [8, 8]
    assert res.tokens[0, 4].item() == 3 and free[0, :4].all()  # the pinned suffix is untouched


# --- several free runs, seeds, the guide ---------------------------------------------------------------------


def noise_fn(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randint(10, V, shape, generator=g)


def test_segments_lay_out_holes_between_pinned_code():
    c = Canvas.from_segments([[Free(2), (7, 8), Free(3, seed=(40,)), (9,)]], 5, noise_fn())
    assert c.pinned.tolist() == [[False, False, True, True, False, False, False, True]]
    assert c.hole.tolist() == [[0, 0, -1, -1, 1, 1, 1, -1]]
    assert c.tokens[0, [2, 3, 4, 7]].tolist() == [7, 8, 40, 9]  # pinned ids and the seed token in place
    assert c.n_free == (5,) and c.positions[0].tolist() == list(range(5, 13))
    assert c.run_rank().tolist()[0][:2] + c.run_rank().tolist()[0][4:7] == [0, 1, 0, 1, 2]


def test_build_is_the_one_run_layout():
    """Canvas.build and from_segments draw the same noise into the same slots (outputs stay bit-identical)."""
    a = Canvas.build((3, 5), (7, 8), 4, noise_fn(1))
    b = Canvas.from_segments([[Free(3), (7, 8)], [Free(5), (7, 8)]], 4, noise_fn(1))
    for name in ("tokens", "pinned", "valid", "positions"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.n_free == b.n_free


@pytest.mark.parametrize(
    "rows",
    [lambda: [[(1, 2)]], lambda: [[Free(2), Free(2)]], lambda: [[Free(0)]], lambda: [[Free(1, seed=(3, 4))]]],
)
def test_segments_reject_bad_layouts(rows):
    with pytest.raises(ValueError):
        Canvas.from_segments(rows(), 3, noise_fn())


def test_min_tokens_holds_for_every_hole():
    """Filler is banned from the first slot of each free run, not only the canvas' first slots."""
    c = Canvas.from_segments([[Free(2), (7,), Free(2), (8,)]], 5, noise_fn())
    filler = 3
    target = torch.full((1, c.tokens.shape[1]), filler)  # the model wants filler everywhere
    res = denoise(ScriptedDenoiser(target), c, SamplerConfig(max_steps=6), min_tokens=1, end_ids=[filler])
    out = res.tokens[0].tolist()
    assert out[0] != filler and out[3] != filler  # each hole's first slot
    assert out[1] == filler and out[4] == filler  # the rest may end the middle


def test_seeded_slots_start_from_the_seed():
    c = Canvas.from_segments([[Free(3, seed=(41, 42, 43)), (5,)]], 4, noise_fn())
    den = ScriptedDenoiser(torch.tensor([[41, 42, 43, 5]]))
    denoise(den, c, SamplerConfig(max_steps=4))
    assert den.calls[0][0][0, :3].tolist() == [41, 42, 43]  # the first pass sees the seed, not noise


class FlagSlot:
    """A guide that rejects `bad` wherever it is the argmax; counts its calls."""

    def __init__(self, bad: int, budget: int = 3, clock=lambda: 0):
        self.bad, self.budget, self.calls = bad, budget, 0
        self.clock = clock  # e.g. the decoder passes so far
        self.called_at: list[int] = []  # the clock at each call
        self.flagged_at: list[int] = []  # the clock at each call that flagged something

    def __call__(self, row: int, free_ids: list[int]) -> list[int]:
        self.calls += 1
        self.called_at.append(self.clock())
        picks = [k for k, t in enumerate(free_ids) if t == self.bad]
        if picks:
            self.flagged_at.append(self.clock())
        return picks


def test_guide_renoises_flagged_tokens_and_the_argmax_moves_on():
    """The model prefers token 20 in slot 1 (a token the guide says breaks the parse), 21 a little less: the
    guide's slot is renoised and the rejected token banned there, so the row ends with 21 instead."""
    c = Canvas.from_segments([[Free(3), (5,)]], 4, noise_fn())
    margin = torch.tensor([[30.0, 30.0, 30.0, 30.0]])
    target = torch.tensor([[11, 20, 12, 5]])
    den = ScriptedDenoiser(target, margin)
    second = ScriptedDenoiser(torch.tensor([[11, 21, 12, 5]]), torch.tensor([[0.0, 25.0, 0.0, 0.0]]))

    def both(canvas, sc):  # slot 1: 20 best (30 nats), 21 next (25 nats)
        return den(canvas, sc) + second(canvas, sc)

    both.vocab_size = V
    both.noise = den.noise
    guide = FlagSlot(20, clock=lambda: len(den.calls))
    res = denoise(both, c, SamplerConfig(max_steps=8), guide=guide)
    assert res.tokens[0, :3].tolist() == [11, 21, 12]
    assert guide.calls >= 2  # flagged once, then checked clean
    # the guide read the canvas when the row would have stopped (its argmax stable and confident: the second
    # pass), not the first pass's
    assert guide.flagged_at == [2]
    # the step after the flag, slot 1 held fresh noise, not the rejected token, and no self-conditioning for it
    tokens_after, sc_after = den.calls[guide.flagged_at[0]]
    assert sc_after is not None and torch.all(sc_after[0, 1] == 0) and not torch.all(sc_after[0, 0] == 0)
    assert tokens_after[0, 0].item() == 11  # the unflagged slots were accepted as usual


def test_guide_budget_ends_the_loop():
    """A guide that objects to slot 0 at every step is consulted while it flags, at most `budget` times; then
    the row stops as the stop rule says (here: on the third choice, 14, long before max_steps)."""
    c = Canvas.from_segments([[Free(3), (5,)]], 4, noise_fn())
    choices = [
        ScriptedDenoiser(torch.tensor([[t, 20, 12, 5]]), torch.tensor([[m, 30.0, 30.0, 30.0]]))
        for t, m in ((11, 30.0), (13, 25.0), (14, 20.0))
    ]

    def model(canvas, sc):
        return sum(d(canvas, sc) for d in choices)

    model.vocab_size = V
    model.noise = choices[0].noise

    class Always(FlagSlot):
        def __call__(self, row, free_ids):
            self.calls += 1
            return [0]

    always = Always(0, budget=2)
    res = denoise(model, c, SamplerConfig(max_steps=30), guide=always)
    assert always.calls == 2
    assert res.tokens[0, 0].item() == 14 and res.steps < 30


def test_middle_guide_maps_error_ranges_to_tokens():
    """Text-level error ranges become slots: overlapping tokens, a MISSING point to the token ending there;
    tokens after the end token and special tokens are not part of the middle."""
    pieces = {1: "a", 2: " +", 3: " b", 4: ")", 9: "<filler>"}

    def decode(ids):
        return "".join(pieces[i] for i in ids if i != 9)

    seen = []

    def check(text):
        seen.append(text)
        return [(1, 3)] if text == "a + b)" else [(5, 5)] if text == "a + b" else []

    g = MiddleGuide(decode, check, end_ids={7}, drop_ids={7, 9}, budget=3)
    assert g(0, [1, 2, 3, 4, 7, 4]) == [1]  # " +" covers (1, 3); the ")" after the end token is not read
    assert seen == ["a + b)"] and g.renoised == 1
    assert g(0, [1, 9, 2, 3]) == [3]  # the missing token at the end: the last token; filler slot skipped
    assert g(0, [4]) == [] and g.checks == 3


def test_seed_tokens_stay_while_the_model_agrees():
    """Slot 0's seed is the model's argmax with probability 0.53, though with high entropy (never accepted on
    entropy alone): it stays. Slot 1's seed is not the argmax: renoised at once and replaced by the model's
    choice."""
    c = Canvas.from_segments([[Free(3, seed=(11, 13)), (5,)]], 4, noise_fn())
    margin = torch.tensor([[4.0, 30.0, 30.0, 30.0]])  # slot 0: 11 preferred, p = e^4 / (e^4 + 49) = 0.53
    den = ScriptedDenoiser(torch.tensor([[11, 20, 12, 5]]), margin)
    res = denoise(den, c, SamplerConfig(max_steps=3, entropy_bound=0.01))
    assert res.tokens[0, :3].tolist() == [11, 20, 12]
    assert [t[0, 0].item() for t, _ in den.calls] == [11] * len(den.calls)  # the seed was never renoised
    assert den.calls[1][0][0, 1].item() == 20  # slot 1 lost its seed at once: the model's own token is there


def test_middle_guide_repair_cuts_the_middle_before_what_still_breaks_it():
    """After the guided steps, `a + b)` still breaks the parse: the row ends before the `)` (filler from there);
    a middle with nothing parseable before its error is left as the model wrote it."""
    pieces = {1: "a", 2: " +", 3: " b", 4: ")", 9: "", 5: "("}

    def decode(ids):
        return "".join(pieces[i] for i in ids)

    def check(text):  # a stand-in parse check: unbalanced parentheses and a dangling operator are errors
        bad = [(i, i + 1) for i, ch in enumerate(text) if ch == ")" and text[:i].count("(") < text[: i + 1].count(")")]
        return bad + ([(len(text), len(text))] if text.rstrip().endswith("+") else [])

    g = MiddleGuide(decode, check, end_ids=set(), drop_ids={9}, budget=3)
    assert g.repair([1, 2, 3, 4, 9], filler_id=9) == [1, 2, 3, 9, 9] and g.repaired == 1
    assert g.repair([1, 2, 3, 9], filler_id=9) == [1, 2, 3, 9]  # parses: unchanged
    assert g.repair([4, 1], filler_id=9) == [4, 1]  # the error is the first token: nothing to keep
    assert g.repair([1, 2, 4], filler_id=9) == [1, 9, 9]  # `a +` dangles too: back off to `a`


def test_a_seed_the_model_barely_prefers_is_dropped_and_so_is_the_rest_of_it():
    """A seed is kept only where the argmax agrees with probability >= seed_confidence, and read left to right:
    after the first slot it loses, the later seed slots are renoised too even where the model agrees."""
    c = Canvas.from_segments([[Free(3, seed=(11, 20, 12)), (5,)]], 4, noise_fn())
    margin = torch.tensor([[2.0, 30.0, 30.0, 30.0]])  # slot 0: 11 is the argmax but p = 0.13
    den = ScriptedDenoiser(torch.tensor([[11, 20, 12, 5]]), margin)
    gen = torch.Generator().manual_seed(3)  # the renoise draws (none of them 11, 20 or 12 in the slots below)
    denoise(den, c, SamplerConfig(max_steps=3, entropy_bound=0.0), generator=gen)  # one acceptance per step
    second = den.calls[1][0][0]
    assert second[0].item() != 11  # dropped: the model barely prefers it
    assert not (second[1].item() == 20 and second[2].item() == 12)  # only one is accepted, on entropy: no seed left


def test_guide_reads_the_last_step_but_one_of_a_row_that_never_stops():
    """A row whose argmax never settles (high entropy) is not looked at step by step: the guide reads it once, at
    the last step but one, while a step is left to act on what it finds."""
    c = Canvas.from_segments([[Free(3), (5,)]], 4, noise_fn())
    den = ScriptedDenoiser(torch.tensor([[11, 20, 12, 5]]), torch.tensor([[1.0, 1.0, 1.0, 30.0]]))
    never = FlagSlot(-1, clock=lambda: len(den.calls))  # flags nothing
    res = denoise(den, c, SamplerConfig(max_steps=5, entropy_bound=0.0, confidence_threshold=0.0), guide=never)
    assert res.steps == 5 and never.called_at == [4]
