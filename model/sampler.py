"""The denoising loop: entropy-bound acceptance, renoise, temperature schedule, early stop, cancel hook.

One implementation for every use (inline completion, candidates, multi-block, fill holes). It talks to the
model through :class:`Denoiser`: run the denoiser on a canvas, draw noise. Per step:

1. one decoder pass over the whole canvas -> logits (N, V) of the N free slots (the only ones the loop reads:
   a denoiser with ``free_logits`` computes no others);
2. temperature ``t = t_min + (t_max - t_min) * n / N`` with ``n`` counting down from ``N`` to 1;
3. over the free slots only, accept the lowest-entropy slots while ``sum(H) - max(H) <= entropy_bound``
   (at least one per row; arXiv 2505.24857); accepted slots take a sample, every other free slot is renoised
   (also slots accepted at an earlier step: the canvas holds only what is confident now);
4. self-conditioning for the next step: the free slots take this step's logits, pinned slots a one-hot signal
   (exact: softmax of a one-hot times E is the pinned token's embedding);
5. a row stops when its argmax over free slots equals that of the previous ``stability_threshold`` steps and
   its mean entropy is below ``confidence_threshold``; the loop stops when every row has, or at ``max_steps``.

The output of a row is its argmax canvas at the step it stopped, as in ``DiffusionGemma.generate()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

import torch

from dgls.model.canvas import Canvas


class Cancelled(Exception):
    """The caller cancelled the request between two denoising steps."""

    def __init__(self, steps: int):
        super().__init__(f"cancelled after {steps} denoising step(s)")
        self.steps = steps


@dataclass(frozen=True)
class SamplerConfig:
    """Sampler settings; defaults are DiffusionGemma ``generate()``'s."""

    max_steps: int = 48
    t_max: float = 0.8
    t_min: float = 0.4
    entropy_bound: float = 0.1
    stability_threshold: int = 1
    confidence_threshold: float = 0.005
    seed_confidence: float = 0.5  # a seed token stays while it is the argmax with at least this probability
    sc_raw_logits: bool = False  # self-condition on raw logits (how dgls trains) or temperature-scaled (generate())
    compat_generate: bool = False  # sample every slot from the global RNG, in generate()'s order (for tests)

    def __post_init__(self):
        problems = []
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            problems.append(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        if not (0 < self.t_min <= self.t_max):
            problems.append(f"temperatures need 0 < t_min <= t_max, got t_min={self.t_min}, t_max={self.t_max}")
        if not (self.entropy_bound >= 0 and math.isfinite(self.entropy_bound)):
            problems.append(f"entropy_bound must be a finite number >= 0, got {self.entropy_bound!r}")
        if not isinstance(self.stability_threshold, int) or self.stability_threshold < 0:
            problems.append(f"stability_threshold must be an integer >= 0, got {self.stability_threshold!r}")
        if not 0 < self.seed_confidence <= 1:
            problems.append(f"seed_confidence must be in (0, 1], got {self.seed_confidence!r}")
        if not self.confidence_threshold >= 0:
            problems.append(f"confidence_threshold must be >= 0, got {self.confidence_threshold!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: SamplerConfig | None = None) -> SamplerConfig:
        """Build from a mapping, ignoring unknown keys; invalid values raise ValueError."""
        base = base or cls()
        known = {f.name: f.type for f in fields(cls)}
        kw = {f.name: getattr(base, f.name) for f in fields(cls)}
        for k, v in values.items():
            if k not in known:
                continue
            ref = kw[k]
            if isinstance(ref, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"{k} must be true or false, got {v!r}")
            elif isinstance(ref, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{k} must be an integer, got {v!r}")
            elif isinstance(ref, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{k} must be a number, got {v!r}")
                v = float(v)
            kw[k] = v
        return cls(**kw)

    def replace(self, **changes: Any) -> SamplerConfig:
        """A copy with some fields changed (validated)."""
        return SamplerConfig.from_dict(changes, base=self)


class Denoiser(Protocol):
    """What the sampler needs from a model.

    A denoiser may also have ``free_logits(canvas, sc)``: the (N, V) logits of the free slots only, self-conditioned
    on the free slots' previous logits (N, V) or None; the sampler then calls that instead.
    """

    vocab_size: int

    def __call__(self, canvas: Canvas, sc_logits: torch.Tensor | None) -> torch.Tensor:
        """One decoder pass: logits (B, C, V) in float32 for every canvas slot."""
        ...

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """Fresh noise tokens of `shape`."""
        ...


@dataclass
class DenoiseResult:
    """Per-row output of the sampler."""

    tokens: torch.Tensor  # (B, C) argmax canvas at the step each row stopped (pinned slots hold their token)
    confidence: torch.Tensor  # (B, C) probability of the argmax token at temperature 1
    score: torch.Tensor  # (B,) mean log-probability of the argmax tokens over the row's free slots
    steps: int  # decoder passes run (NFE)
    row_steps: list[int]  # the step at which each row stopped
    step_times: list[float] = field(default_factory=list)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: (..., V) -> (...).

    Computed as torch.distributions.Categorical does (the op generate() uses), so acceptance matches it bit
    for bit, without building a distribution object.
    """
    logp = (logits - logits.logsumexp(-1, keepdim=True)).clamp(min=torch.finfo(logits.dtype).min)
    return -(logp * torch.softmax(logp, dim=-1)).sum(-1)


def accept_mask(H: torch.Tensor, free: torch.Tensor, bound: float) -> torch.Tensor:
    """Entropy-bound acceptance (arXiv 2505.24857) over the free slots of each row: (B, C) entropies -> (B, C) bool.

    Sorted by entropy, slot k is accepted iff the k-1 lower entropies sum to <= bound, so the lowest-entropy
    free slot of each row is always accepted. Non-free slots sort last and are never accepted.
    """
    big = torch.finfo(H.dtype).max / (H.shape[-1] + 1)
    Hm = torch.where(free, H, torch.full_like(H, big))
    Hs, order = torch.sort(Hm, dim=-1)
    sel = ((torch.cumsum(Hs, -1) - Hs) <= bound) & torch.gather(free, -1, order)
    return torch.zeros_like(sel).scatter(-1, order, sel)


def temperature(cur_step: int, cfg: SamplerConfig) -> torch.Tensor:
    """Linear schedule, evaluated exactly as generate()'s LinearTemperatureScheduleLogitsProcessor."""
    return cfg.t_min + (cfg.t_max - cfg.t_min) * (torch.tensor(cur_step, dtype=torch.int32) / cfg.max_steps)


def fused_row_stats(logits: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None):
    """(entropy, argmax, log p(argmax) at T=1, a sample per row) of (N, V) logits from dgls.kernels, or None.

    Only on CUDA, and only when ``dgls.kernels`` says its ``canvas_sampler`` kernel passed its self-check; on
    any other device this returns None and :func:`denoise` computes the statistics in torch, unchanged. The
    kernel samples with the Gumbel-max trick from a seed drawn from `generator`, so on CUDA the draws differ
    from the torch path's (same distribution).
    """
    if logits.device.type != "cuda":
        return None
    from dgls import kernels

    if not kernels.usable("canvas_sampler"):
        return None
    from dgls.kernels.canvas_sampler import row_stats

    gen_device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device))
    st = row_stats(logits, float(t), seed=seed)
    assert st.sample is not None  # a seed was given
    return st.entropy, st.argmax, st.logp_max, st.sample


class SlotDraw(NamedTuple):
    """One step's statistics of every canvas slot and the acceptance it implies, each (B, C).

    Only free slots are computed; a pinned or padding slot has entropy 0, log p 0 and its own token as argmax.
    """

    entropy: torch.Tensor  # of softmax(logits / t)
    argmax: torch.Tensor  # of logits / t
    logp_max: torch.Tensor  # log p(argmax) at temperature 1: the confidence
    accept: torch.Tensor  # bool: free slots that keep a sample this step
    sampled: torch.Tensor  # a draw from softmax(logits / t) in every accepted slot


DrawFn = Callable[..., SlotDraw]  # (logits, scaled, t, free, tokens, bound, generator) -> SlotDraw


def logp_of_argmax(logits: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """Confidence at temperature 1: ``log p(argmax) = x[argmax] - logsumexp(x)``, (..., V) -> (...).

    One reduction over V instead of a log_softmax.
    """
    return torch.gather(logits, -1, argmax.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def on_slots(free: torch.Tensor, values: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """(N,) values of the free slots (row-major) laid out as (B, C), `fill` in every other slot."""
    if isinstance(fill, torch.Tensor):
        out = fill.to(values.dtype, copy=True)
    else:
        out = torch.full(free.shape, fill, dtype=values.dtype, device=values.device)
    out[free] = values
    return out


def sample_rows(scaled: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of softmax(`scaled`) (k, V) -> (k,), by inverting the CDF with one uniform per row.

    The same distribution as ``torch.multinomial``, at a fraction of its cost: multinomial draws an exponential
    for every vocabulary entry (3-13 ms of a step on a 2-core CPU), this one draws k uniforms and searches the
    cumulative sums. The uniform is scaled by the row's total, so rounding in the cumulative sum never lets it
    fall past the last entry.
    """
    cdf = torch.softmax(scaled, dim=-1).cumsum(-1)
    u = torch.rand(scaled.shape[0], 1, generator=generator, device=scaled.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=scaled.shape[-1] - 1)


def draw_accepted(
    logits: torch.Tensor,
    scaled: torch.Tensor,
    t: torch.Tensor,
    free: torch.Tensor,
    tokens: torch.Tensor,
    bound: float,
    generator: torch.Generator | None,
) -> SlotDraw:
    """Statistics of the free slots' (N, V) logits, a sample only where accepted: the fused kernel on CUDA, else torch.

    Acceptance depends only on entropy, so only accepted slots need a sample; the other slots of `sampled` keep
    `tokens`.
    """
    fused = fused_row_stats(logits, t, generator)  # None on CPU
    if fused is not None:  # the kernel drew a sample for every slot in its single pass
        H, argmax, logp_max, sample = fused
        H = on_slots(free, H, 0.0)
        accept = accept_mask(H, free, bound)
        sampled = torch.where(accept, on_slots(free, sample, tokens), tokens)
        return SlotDraw(H, on_slots(free, argmax, tokens), on_slots(free, logp_max, 0.0), accept, sampled)
    argmax = scaled.argmax(-1)  # (N,)
    H = on_slots(free, entropy(scaled), 0.0)  # (B, C)
    accept = accept_mask(H, free, bound)
    sampled = tokens.clone()
    picked = accept[free].nonzero().squeeze(-1)
    if picked.numel():
        sampled[accept] = sample_rows(scaled[picked], generator)
    logp_max = on_slots(free, logp_of_argmax(logits, argmax), 0.0)
    return SlotDraw(H, on_slots(free, argmax, tokens), logp_max, accept, sampled)


CancelCheck = Callable[[], bool]


class _StopRule:
    """Step 5 of the loop: which rows are stable and confident.

    A row stops when its free-slot argmax repeats that of the previous ``stability_threshold`` steps and its
    mean free-slot entropy is below ``confidence_threshold``.
    """

    def __init__(self, cfg: SamplerConfig, free: torch.Tensor):
        self.cfg = cfg
        self.free = free  # (B, C)
        self.n_free = free.sum(-1).clamp(min=1)  # (B,)
        self.history: torch.Tensor | None = None  # (stability_threshold, B, C): the last argmax canvases

    def __call__(self, argmax: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """(B,) bool: rows that are stable and confident after this step."""
        B, C = self.free.shape
        masked_argmax = torch.where(self.free, argmax, -1)
        if self.cfg.stability_threshold == 0:
            stable = torch.ones(B, dtype=torch.bool, device=argmax.device)
        else:
            if self.history is None:
                self.history = torch.full(
                    (self.cfg.stability_threshold, B, C), -2, dtype=torch.long, device=argmax.device
                )
            stable = (self.history == masked_argmax[None]).all(-1).all(0)
            self.history = torch.roll(self.history, -1, 0)
            self.history[-1] = masked_argmax
        mean_h = (H * self.free).sum(-1) / self.n_free
        return stable & (mean_h < self.cfg.confidence_threshold)


class Guide(Protocol):
    """Which free slots of a row's argmax canvas to renoise (syntax-guided denoising, :func:`denoise`)."""

    budget: int  # guided steps that may flag something, per row

    def __call__(self, row: int, free_ids: list[int]) -> list[int]:
        """Indices into `free_ids` (the row's free slots' argmax, left to right) to renoise; [] when all is well."""
        ...


def _guided(
    guide: Guide, argmax: torch.Tensor, free: torch.Tensor, live: torch.Tensor, used: list[int]
) -> torch.Tensor | None:
    """(B, C) bool of the free slots the guide flags in live rows within their budget, or None when none."""
    flagged = None
    for i in live.nonzero().flatten().tolist():
        if used[i] >= guide.budget:
            continue
        slots = free[i].nonzero().flatten()
        picks = guide(i, argmax[i, slots].tolist())
        if not picks:
            continue
        used[i] += 1
        if flagged is None:
            flagged = torch.zeros_like(free)
        flagged[i, slots[torch.tensor(picks, dtype=torch.long, device=slots.device)]] = True
    return flagged


def _ban_argmax(bans: torch.Tensor | None, flagged: torch.Tensor, argmax: torch.Tensor, V: int) -> torch.Tensor:
    """`bans` plus, in each flagged slot, the token it held (the argmax the guide rejected)."""
    if bans is None:
        bans = torch.zeros(*flagged.shape, V, dtype=torch.bool, device=flagged.device)
    rows = flagged.nonzero(as_tuple=True)
    bans[rows + (argmax[rows],)] = True
    return bans


class _FreeLogits:
    """Logits of the free slots (N, V), row-major, self-conditioned on the free slots' previous logits.

    A denoiser with ``free_logits`` (:class:`~dgls.model.fastpath.FastDenoiser`) computes only those rows. Any
    other gets the whole (B, C, V) signal it expects: the free slots' logits, and for a pinned slot a one-hot of
    its token (exact: softmax of a one-hot times E is that token's embedding), built once.
    """

    def __init__(self, denoiser: Denoiser, canvas: Canvas):
        self.denoiser, self.canvas = denoiser, canvas
        self.free = canvas.free
        self.fast = getattr(denoiser, "free_logits", None)
        self.full: torch.Tensor | None = None

    def __call__(self, sc: torch.Tensor | None) -> torch.Tensor:
        if self.fast is not None:
            return self.fast(self.canvas, sc)
        if sc is None:
            return self.denoiser(self.canvas, None)[self.free]
        if self.full is None:
            B, C = self.free.shape
            self.full = torch.zeros(B, C, sc.shape[-1], device=sc.device)
            rows = self.canvas.pinned.nonzero(as_tuple=True)
            self.full[rows] = -1e4
            self.full[rows + (self.canvas.tokens[rows],)] = 1e4
        self.full[self.free] = sc
        return self.denoiser(self.canvas, self.full)[self.free]


@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    canvas: Canvas,
    cfg: SamplerConfig,
    *,
    generator: torch.Generator | None = None,
    cancel: CancelCheck | None = None,
    on_step: Callable[[int, int], None] | None = None,
    min_tokens: int = 0,
    end_ids: Sequence[int] = (),
    guide: Guide | None = None,
) -> DenoiseResult:
    """Denoise the free slots of `canvas` in place; return the argmax canvas, confidences and NFE.

    `cancel` is checked before every decoder pass; when it returns True, :class:`Cancelled` is raised, so a
    cancel costs at most one step. `on_step(step, max_steps)` is called after each step. The first
    `min_tokens` free slots of each row may not hold any of `end_ids` (filler, EOS): a middle that must not be
    empty, as AR decoders suppress EOS below a minimum length. ``cfg.compat_generate`` draws in ``generate()``'s
    order instead (:mod:`dgls.model.sampler_ref`; tests only).

    Free slots that start from seed tokens (:attr:`Canvas.seed`, a continuation found in the workspace) keep
    them for as long as the model's argmax agrees with probability >= ``cfg.seed_confidence`` (accepted,
    whatever their entropy); a seed is read left to right, so from the first slot where the model does not
    agree, that slot and the seed slots after it are renoised like any other and their seed is gone.

    `guide` (syntax-guided denoising) reads a row's argmax canvas when the row would give it as its output:
    at the step the stop rule stops it, and at the last step but one (while a step is left to act), not at the
    noisy early steps. It names free slots to renoise: they are not accepted this step, lose their
    self-conditioning signal, and may not take the rejected token again (a per-slot ban), so the argmax must
    change there; a row the guide flags does not stop, and stops at the next step whose argmax the guide passes.
    The guide flags at most ``guide.budget`` times per row, so it never holds the loop past that.
    """
    draw: DrawFn = draw_accepted
    if cfg.compat_generate:
        from dgls.model.sampler_ref import draw_every_slot

        draw, generator = draw_every_slot, None  # generate() draws everything from the global RNG
    free = canvas.free  # (B, C)
    row_of = free.nonzero(as_tuple=True)[0]  # (N,): the canvas row of each free slot, row-major
    B, C = canvas.tokens.shape
    device = canvas.tokens.device
    n_free = free.sum(-1).clamp(min=1)  # (B,)
    run = _FreeLogits(denoiser, canvas)

    banned = None
    if min_tokens > 0 and end_ids:
        banned = (canvas.run_rank() < min_tokens)[free]  # (N,): the first slots of each run of free slots
        ban_ids = torch.tensor(sorted(set(end_ids)), device=device)
    stop_rule = _StopRule(cfg, free)

    sc = None  # (N, V): the free slots' self-conditioning logits
    slot_bans: torch.Tensor | None = None  # (N, V) bool: tokens the guide rejected in a slot
    guided_rows = [0] * B  # guided steps that flagged something, per row
    seed_tokens = canvas.seed
    seed_alive = seed_tokens >= 0 if seed_tokens is not None else free  # slots still holding their seed token
    out_tokens = canvas.tokens.clone()
    out_conf = torch.zeros(B, C, device=device)
    out_score = torch.zeros(B, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    row_steps = [cfg.max_steps] * B
    steps = 0
    just_guided = torch.zeros(B, dtype=torch.bool, device=device)  # rows the guide flagged at the last step
    step_times: list[float] = []
    for cur_step in range(cfg.max_steps, 0, -1):
        if cancel is not None and cancel():
            raise Cancelled(steps)
        t0 = time.perf_counter()
        logits = run(sc)  # (N, V) float32
        if banned is not None:
            # -1e4 rather than -inf: the entropy and the self-conditioning softmax stay finite
            logits[:, ban_ids] = torch.where(banned[:, None], -1e4, logits[:, ban_ids])
        if slot_bans is not None:
            logits = logits.masked_fill(slot_bans, -1e4)
        t = temperature(cur_step, cfg)
        scaled = logits / t
        d = draw(logits, scaled, t, free, canvas.tokens, cfg.entropy_bound, generator)
        if seed_tokens is not None:  # a seed token is kept while the model agrees, then lost for good
            agree = seed_alive & (d.argmax == seed_tokens) & (d.logp_max >= math.log(cfg.seed_confidence))
            agree &= torch.cumsum((seed_alive & ~agree).long(), dim=-1) == 0  # a seed is read left to right
            d = d._replace(accept=d.accept | agree, sampled=torch.where(agree, seed_tokens, d.sampled))
            seed_alive = agree
        live = ~done
        stopping = live & stop_rule(d.argmax, d.entropy)
        flagged = None
        if guide is not None:
            # the guide reads the canvas a row would give: when it stops (a row the guide flagged at the last
            # step stops as soon as its argmax passes), and at the last step but one, while a step is left
            stopping |= live & just_guided
            flagged = _guided(guide, d.argmax, free, live if cur_step == 2 else stopping, guided_rows)
            just_guided = torch.zeros_like(done) if flagged is None else flagged.any(-1)
            stopping &= ~just_guided
            if flagged is not None:
                d = d._replace(accept=d.accept & ~flagged)
                slot_bans = _ban_argmax(slot_bans, flagged[free], d.argmax[free], logits.shape[-1])
        noise_ids = denoiser.noise((B, C), generator)
        previous = canvas.tokens
        canvas.renoise(d.accept, d.sampled, noise_ids)
        canvas.tokens = torch.where(done[:, None], previous, canvas.tokens)  # stopped rows stay as they were

        # the output of a live row is its argmax canvas at this step (the loop has left when no row is live)
        out_tokens = torch.where(live[:, None] & free, d.argmax, out_tokens)
        out_conf = torch.where(live[:, None], d.logp_max.exp(), out_conf)
        out_score = torch.where(live, (d.logp_max * free).sum(-1) / n_free, out_score)
        steps += 1
        newly = stopping
        for i in newly.nonzero().flatten().tolist():
            row_steps[i] = steps
        done |= newly

        next_sc = logits if cfg.sc_raw_logits else scaled
        if flagged is not None:  # the flagged slots start over: no memory of the rejected prediction
            next_sc = next_sc.masked_fill(flagged[free][:, None], 0.0)
        if sc is not None:
            keep = (done & ~newly)[row_of]  # rows that stopped before this step keep their signal
            next_sc = torch.where(keep[:, None], sc, next_sc)
        sc = next_sc
        step_times.append(time.perf_counter() - t0)
        if on_step is not None:
            on_step(steps, cfg.max_steps)
        if bool(done.all()):
            break
    return DenoiseResult(
        tokens=out_tokens, confidence=out_conf, score=out_score, steps=steps, row_steps=row_steps, step_times=step_times
    )
