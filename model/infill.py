"""Text in, ranked middles out: tokenize, lay out canvases, run the sampler block by block, decode.

This is the one call the engine makes on the model layer. It owns the prefix cache, so consecutive
requests that share a prefix skip the encoder (hit) or encode only the new tokens (extend).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dgls.model import fastpath
from dgls.model.backend import DiffusionGemmaDenoiser, PrefixCache, batched, encode
from dgls.model.canvas import Canvas, Free, Segment
from dgls.model.fastpath import FastDenoiser
from dgls.model.loading import LoadedModel
from dgls.model.sampler import CancelCheck, SamplerConfig, denoise


@dataclass
class Candidate:
    """One filled middle: its text and tokens, and how sure the model was of them."""

    text: str
    token_ids: list[int]  # the middle's tokens, filler and end tokens removed
    raw_ids: list[int]  # every free slot's argmax, all blocks, as the sampler returned them
    token_confidence: list[float]  # per kept token, probability of the chosen token at temperature 1
    score: float  # mean log-probability over all free slots of the row (filler included)
    n_free: int  # free slots of the canvas row that produced it (per block)
    ended: bool  # the model ended the middle (filler or EOS) before its canvas ran out
    tokens: tuple[tuple[int, int, float], ...] = ()  # per kept token: (start, end) code points of `text`, confidence

    @property
    def confidence(self) -> float:
        """Mean per-token confidence of the kept tokens (1.0 for an empty middle)."""
        c = self.token_confidence
        return sum(c) / len(c) if c else 1.0


def token_spans(
    decode: Callable[[list[int]], str], ids: list[int], confidence: list[float]
) -> tuple[tuple[int, int, float], ...]:
    """Where each token of a middle lies in its decoded text: ``(start, end, confidence)``, code points.

    Decoded cumulatively (a token may hold part of a character, or decode to nothing on its own), so the last
    end is the length of the whole middle; ends never go backwards.
    """
    spans, start = [], 0
    for k, c in enumerate(confidence[: len(ids)]):
        end = max(start, len(decode(ids[: k + 1])))
        spans.append((start, end, float(c)))
        start = end
    return tuple(spans)


@dataclass
class InfillResult:
    """Candidates best first (distinct texts) with the cost of producing them."""

    candidates: list[Candidate]
    nfe: int  # decoder passes, all blocks
    blocks: int
    ms: float
    encode_ms: float
    prefix_cache: str  # "hit", "extend" or "miss"
    prefix_tokens: int
    suffix_tokens: int
    step_ms: list[float] = field(default_factory=list)


@dataclass
class SegmentsResult:
    """One middle per free run of a canvas (:meth:`Infiller.fill_segments`), with the cost of the one call."""

    runs: list[Candidate]
    nfe: int
    ms: float
    encode_ms: float
    prefix_cache: str


class Infiller:
    """Fills the middle between a prefix and a suffix with a loaded DiffusionGemma model."""

    def __init__(self, loaded: LoadedModel, fast: bool | None = None):
        """`fast`: run the model through :mod:`dgls.model.fastpath` (None: on a CPU, where it covers the model).

        On a GPU the reference path stays the default: its per-call overhead is hidden behind the device, and the
        fast path's fused copies of the attention and MLP weights would cost memory a large model needs.
        """
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.spec = loaded.spec
        why_not = fastpath.supports(self.model)
        if fast and why_not:
            raise ValueError(f"the fast decoder path does not cover this model: {why_not}")
        self.fast = why_not is None and self.model.device.type == "cpu" if fast is None else fast
        self.encode = fastpath.encode if self.fast else encode
        self.prefix_cache = PrefixCache(self.model, encoder=self.encode)
        specials = (self.spec.eos_id, self.spec.pad_id, self.spec.bos_id, self.spec.filler_id)
        self._end_ids = {i for i in (self.spec.eos_id,) if i is not None}
        self._drop_ids = {i for i in specials if i is not None}
        filler = set() if self.spec.filler_id is None else {self.spec.filler_id}
        self._stop_ids = sorted(self._end_ids | filler)  # what the sampler keeps out of a run's first slots

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def infill(self, prefix: str, suffix: str, **kw) -> InfillResult:
        """Fill between two strings; keyword arguments as :meth:`infill_ids`."""
        return self.infill_ids(self.tokenize(prefix), self.tokenize(suffix), **kw)

    def infill_ids(
        self,
        prefix_ids: Sequence[int],
        suffix_ids: Sequence[int],
        *,
        lengths: Sequence[int] | None = None,
        n_candidates: int = 1,
        max_blocks: int = 1,
        sampler: SamplerConfig | None = None,
        seed: int | None = 0,
        cancel: CancelCheck | None = None,
        on_step: Callable[[int, int], None] | None = None,
        min_tokens: int = 0,
        guide: MiddleGuide | None = None,
        seed_ids: Sequence[int] = (),
        seed_alone: bool = False,
    ) -> InfillResult:
        """Fill between prefix and suffix tokens (BOS is prepended to the prefix here).

        `lengths`: free slots per canvas row to try (default: the model's largest trained length); each is run
        with `n_candidates` seeds, all rows in one batch, one decoder pass per step. `max_blocks` > 1 lets a
        middle that fills its canvas without ending continue in further blocks (one length only): the block's
        argmax is committed to the encoder cache and a fresh canvas follows, the suffix pinned after it.
        `min_tokens` keeps the filler and EOS out of the first slots of the first block (no empty middle).
        `guide` (syntax-guided denoising, :class:`MiddleGuide`) runs only when the middle is one block.
        `seed_ids` (a continuation found in the workspace) start the first block's first row of each length
        instead of noise, filler after them; the sampler keeps what the model agrees with and renoises the rest.
        With one candidate asked for, a noise row runs beside the seeded one and both are candidates, unless
        `seed_alone` (ghost text while typing, where a decoder pass over one row instead of two counts).
        """
        t_start = time.perf_counter()
        cfg = sampler or self.spec.sampler
        lengths = tuple(lengths or (self.spec.canvas_lengths[-1],))
        if min(lengths) < 1 or n_candidates < 1 or max_blocks < 1:
            raise ValueError(
                f"need lengths >= 1, n_candidates >= 1 and max_blocks >= 1; got lengths={lengths}, "
                f"n_candidates={n_candidates}, max_blocks={max_blocks}"
            )
        if max_blocks > 1 and len(set(lengths)) > 1:
            raise ValueError(f"multi-block infill takes one canvas length, got {lengths}")
        if max_blocks > 1:
            guide = None  # a block's middle is checked alone, and later blocks would continue it
        device = self.model.device
        generator = self._generator(cfg, seed)
        per_length = rows_per_length(n_candidates, seed_ids, seed_alone)
        rows = [n for n in lengths for _ in range(per_length)]
        B = len(rows)

        t0 = time.perf_counter()
        full_prefix = [self.spec.bos_id, *prefix_ids]
        base_cache, cache_kind = self.prefix_cache.get(full_prefix)
        encode_ms = (time.perf_counter() - t0) * 1e3
        # the fast path reads a batch-1 cache for every row; the reference path and multi-block (which appends
        # each row's block to its own cache) need one row per canvas row
        cache = base_cache if max_blocks == 1 and (B == 1 or self.fast) else batched(base_cache, B)

        noise_low = 0 if cfg.compat_generate else self.spec.noise_low  # generate() draws from the whole vocabulary
        raw: list[list[int]] = [[] for _ in range(B)]
        pieces: list[list[int]] = [[] for _ in range(B)]
        confs: list[list[float]] = [[] for _ in range(B)]
        scores = torch.zeros(B)
        ended = [False] * B
        nfe, blocks, step_ms = 0, 0, []
        while blocks < max_blocks and not all(ended):
            denoiser = self.denoiser(cache, noise_low)
            noise = functools.partial(denoiser.noise, generator=generator)
            if seed_ids and blocks == 0:
                layout: list[list[Segment]] = [
                    [Free(n, self._seed_row(seed_ids, n) if i % per_length == 0 else ()), tuple(suffix_ids)]
                    for i, n in enumerate(rows)
                ]
                canvas = Canvas.from_segments(layout, denoiser.prefix_len, noise, self.spec.pad_id or 0, device)
            else:
                canvas = Canvas.build(rows, suffix_ids, denoiser.prefix_len, noise, self.spec.pad_id or 0, device)
            res = denoise(
                denoiser,
                canvas,
                cfg,
                generator=generator,
                cancel=cancel,
                on_step=on_step,
                min_tokens=min_tokens if blocks == 0 else 0,
                end_ids=self._stop_ids,
                guide=guide,
            )
            nfe += res.steps
            blocks += 1
            step_ms += [t * 1e3 for t in res.step_times]
            tokens, conf = res.tokens.tolist(), res.confidence.tolist()
            for i, n in enumerate(rows):
                if ended[i]:
                    continue
                scores[i] = (scores[i] * (blocks - 1) + res.score[i].item()) / blocks
                row = tokens[i][:n]
                if guide is not None:
                    row = guide.repair(row, self.spec.filler_id)
                raw[i] += row
                kept, kept_conf, ended[i] = keep_middle(
                    row, conf[i][:n], self._end_ids, self.spec.filler_id, self._drop_ids
                )
                pieces[i] += kept
                confs[i] += kept_conf
            if blocks < max_blocks and not all(ended):
                block = res.tokens[:, : rows[0]]  # every row has the same length here
                self.encode(self.model, block.to(device), cache)  # commit the block as clean context
        candidates = self._rank(raw, pieces, confs, scores.tolist(), rows, ended)
        return InfillResult(
            candidates=candidates,
            nfe=nfe,
            blocks=blocks,
            ms=(time.perf_counter() - t_start) * 1e3,
            encode_ms=encode_ms,
            prefix_cache=cache_kind,
            prefix_tokens=len(full_prefix),
            suffix_tokens=len(suffix_ids),
            step_ms=step_ms,
        )

    def fill_segments(
        self,
        prefix_ids: Sequence[int],
        segments: Sequence[Segment],
        *,
        sampler: SamplerConfig | None = None,
        seed: int | None = 0,
        cancel: CancelCheck | None = None,
        on_step: Callable[[int, int], None] | None = None,
        min_tokens: int = 0,
        guides: Sequence[MiddleGuide | None] = (),
    ) -> SegmentsResult:
        """Fill every free run of one canvas row jointly: one denoising loop, each run seeing the others.

        `segments` is the row after the prefix (BOS is prepended to it here): :class:`Free` runs (the holes, or the
        re-noised parts of a selection) and pinned token ids between them (the code around them, the suffix).
        Returns one :class:`Candidate` per free run, left to right; `min_tokens` holds for each run. `guides`
        (one per free run, or None) make it syntax-guided, each run checked as its own middle.
        """
        t_start = time.perf_counter()
        cfg = sampler or self.spec.sampler
        device = self.model.device
        generator = self._generator(cfg, seed)
        t0 = time.perf_counter()
        cache, cache_kind = self.prefix_cache.get([self.spec.bos_id, *prefix_ids])
        encode_ms = (time.perf_counter() - t0) * 1e3
        denoiser = self.denoiser(cache, 0 if cfg.compat_generate else self.spec.noise_low)
        noise = functools.partial(denoiser.noise, generator=generator)
        canvas = Canvas.from_segments([segments], denoiser.prefix_len, noise, self.spec.pad_id or 0, device)
        res = denoise(
            denoiser,
            canvas,
            cfg,
            generator=generator,
            cancel=cancel,
            on_step=on_step,
            min_tokens=min_tokens,
            end_ids=self._stop_ids,
            guide=RunsGuide(guides, [s.n for s in segments if isinstance(s, Free)]) if any(guides) else None,
        )
        assert canvas.hole is not None
        tokens, conf, hole = res.tokens[0].tolist(), res.confidence[0].tolist(), canvas.hole[0].tolist()
        runs = []
        for k in range(max(hole) + 1):
            ids = [tokens[j] for j, h in enumerate(hole) if h == k]
            cs = [conf[j] for j, h in enumerate(hole) if h == k]
            run_guide = guides[k] if k < len(guides) else None
            if run_guide is not None:
                ids = run_guide.repair(ids, self.spec.filler_id)
            kept, kept_conf, ended = keep_middle(ids, cs, self._end_ids, self.spec.filler_id, self._drop_ids)
            runs.append(
                Candidate(
                    text=self._decode(kept),
                    token_ids=kept,
                    raw_ids=ids,
                    token_confidence=kept_conf,
                    score=sum(math.log(max(c, 1e-30)) for c in cs) / len(cs),
                    n_free=len(ids),
                    ended=ended,
                    tokens=token_spans(self._decode, kept, kept_conf),
                )
            )
        return SegmentsResult(
            runs=runs,
            nfe=res.steps,
            ms=(time.perf_counter() - t_start) * 1e3,
            encode_ms=encode_ms,
            prefix_cache=cache_kind,
        )

    def regenerate(
        self,
        prefix_ids: Sequence[int],
        old_ids: Sequence[int],
        suffix_ids: Sequence[int],
        share: float,
        *,
        slack: int = 2,
        sampler: SamplerConfig | None = None,
        seed: int | None = 0,
        cancel: CancelCheck | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> InfillResult:
        """Regenerate a selection in place: renoise the `share` of its tokens the model believes least, keep the rest.

        One decoder pass scores the old tokens (the selection on the canvas as it is, the suffix pinned after it);
        the ``ceil(share * n)`` least probable become free runs, each with `slack` extra slots so a fix may grow
        (filler ends it early, or empties it); every other old token stays pinned, so it is in the result
        unchanged. Then one joint denoising loop (:meth:`fill_segments`). The candidate's text is the whole new
        selection; its kept old tokens have confidence 1.
        """
        if not 0 < share <= 1 or not old_ids:
            raise ValueError(f"regenerate needs 0 < share <= 1 and a non-empty selection, got {share}, {len(old_ids)}")
        t_start = time.perf_counter()
        cfg = sampler or self.spec.sampler
        n = len(old_ids)
        cache, _ = self.prefix_cache.get([self.spec.bos_id, *prefix_ids])
        denoiser = self.denoiser(cache, self.spec.noise_low)
        scored = Canvas.from_segments(
            [[Free(n, seed=tuple(old_ids)), tuple(suffix_ids)]],
            denoiser.prefix_len,
            lambda shape: torch.zeros(shape, dtype=torch.long),
            self.spec.pad_id or 0,
            self.model.device,
        )
        logp = torch.log_softmax(denoiser(scored, None)[0, :n].float(), dim=-1)
        belief = logp.gather(-1, torch.tensor(old_ids, device=logp.device)[:, None]).squeeze(-1)
        renoise = set(belief.argsort()[: max(1, math.ceil(share * n))].tolist())
        parts: list[Segment] = []  # the selection: runs of kept old tokens and free runs, in order
        for k, tok in enumerate(old_ids):
            last = parts[-1] if parts else None
            if k in renoise and isinstance(last, Free):
                parts[-1] = Free(last.n + 1)
            elif k in renoise:
                parts.append(Free(slack + 1))
            elif isinstance(last, tuple):
                parts[-1] = (*last, tok)
            else:
                parts.append((tok,))
        res = self.fill_segments(
            prefix_ids, [*parts, tuple(suffix_ids)], sampler=cfg, seed=seed, cancel=cancel, on_step=on_step
        )
        ids: list[int] = []
        conf: list[float] = []
        runs = iter(res.runs)
        for part in parts:
            if isinstance(part, Free):
                run = next(runs)
                ids += run.token_ids
                conf += run.token_confidence
            else:
                ids += list(part)
                conf += [1.0] * len(part)
        text = self._decode(ids)
        score = sum(r.score for r in res.runs) / max(1, len(res.runs))
        candidate = Candidate(text, ids, ids, conf, score, n, True, token_spans(self._decode, ids, conf))
        return InfillResult(
            candidates=[candidate],
            nfe=res.nfe + 1,
            blocks=1,
            ms=(time.perf_counter() - t_start) * 1e3,
            encode_ms=res.encode_ms,
            prefix_cache=res.prefix_cache,
            prefix_tokens=len(prefix_ids) + 1,
            suffix_tokens=len(suffix_ids),
        )

    def _rank(self, raw, pieces, confs, scores, rows, ended) -> list[Candidate]:
        return rank_candidates(self.tokenizer, raw, pieces, confs, scores, rows, ended)

    def guide(self, check: Callable[[str], list[tuple[int, int]] | None], budget: int = 3) -> MiddleGuide:
        """A syntax guide for :meth:`infill_ids` from a text-level `check` (see :class:`MiddleGuide`)."""
        return MiddleGuide(self._decode, check, self._end_ids, self._drop_ids, budget)

    def denoiser(self, cache, noise_low: int) -> DiffusionGemmaDenoiser | FastDenoiser:
        """One decoder pass over a canvas reading `cache`: the fast path where it runs, else transformers' forward."""
        if self.fast:
            return FastDenoiser(self.model, cache, noise_low)
        return DiffusionGemmaDenoiser(self.model, cache, noise_low)

    def _generator(self, cfg: SamplerConfig, seed: int | None) -> torch.Generator | None:
        """The sampler's RNG for `seed` (None: generate()'s global RNG, for the compat draw or no seed)."""
        if seed is None or cfg.compat_generate:
            return None
        return torch.Generator(device=self.model.device).manual_seed(int(seed))

    def _seed_row(self, seed_ids: Sequence[int], n: int) -> tuple[int, ...]:
        """`n` slots seeded with `seed_ids`, then filler: a seed is a whole middle and ends where it does."""
        seed = tuple(seed_ids[:n])
        return seed if self.spec.filler_id is None else seed + (self.spec.filler_id,) * (n - len(seed))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class MiddleGuide:
    """Syntax-guided denoising from a text-level check: the sampler's :class:`~dgls.model.sampler.Guide`.

    At a step, each row's free-slot argmax is read as the output would read it (up to the first end token,
    special tokens left out), decoded, and handed to `check`, which returns code-point ranges of the middle that
    are inside syntax errors; the tokens overlapping them are the slots to renoise (for an empty range, a
    MISSING token, the token that ends at it). ``renoised`` counts the tokens flagged over the request.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        check: Callable[[str], list[tuple[int, int]] | None],
        end_ids: set[int],
        drop_ids: set[int],
        budget: int = 3,
    ) -> None:
        self.decode, self.check, self.end_ids, self.drop_ids = decode, check, end_ids, drop_ids
        self.budget = budget
        self.renoised = 0
        self.checks = 0
        self.repaired = 0  # rows whose middle was cut before what still broke the parse
        self.backoff = 8  # tokens before the first error a repair may cut back to

    def repair(self, free_ids: list[int], filler_id: int | None) -> list[int]:
        """The output row; or, if its middle still breaks the parse after the guided steps, cut before the error.

        The cut row has filler from the first token inside an error on (the middle ends early), or from up to
        ``backoff`` tokens before it: the longest such middle that parses and is not empty, else the row as it is.
        """
        if filler_id is None:
            return free_ids
        picks = self._flagged(free_ids)
        if not picks:
            return free_ids
        first = min(picks)
        for k in range(first, max(first - self.backoff, 0), -1):  # the longest parsing middle, at most `backoff` back
            cut = free_ids[:k] + [filler_id] * (len(free_ids) - k)
            if any(t not in self.drop_ids for t in cut[:k]) and not self._flagged(cut):
                self.repaired += 1
                return cut
        return free_ids  # no shorter middle parses (or it would be empty): keep the model's

    def __call__(self, row: int, free_ids: list[int]) -> list[int]:
        """The free slots (indices into `free_ids`) whose tokens the check finds inside a syntax error."""
        picks = self._flagged(free_ids)
        self.renoised += len(picks)
        return picks

    def _flagged(self, free_ids: list[int]) -> list[int]:
        slots: list[int] = []
        for k, tok in enumerate(free_ids):
            if tok in self.end_ids:
                break
            if tok not in self.drop_ids:
                slots.append(k)
        ids = [free_ids[k] for k in slots]
        self.checks += 1
        bad = self.check(self.decode(ids)) if ids else None
        if not bad:
            return []
        spans = token_spans(self.decode, ids, [0.0] * len(ids))
        picks = [
            slots[j]
            for j, (a, b, _) in enumerate(spans)
            if any((a < e and s < b) if s < e else (a < s <= b or (s == 0 and j == 0)) for s, e in bad)
        ]
        return picks


def rows_per_length(n_candidates: int, seed_ids: Sequence[int], seed_alone: bool = False) -> int:
    """Canvas rows per length for `n_candidates`: a seed does not run alone unless `seed_alone` says it may.

    A lone seeded row gets a noise row beside it, and both middles are candidates: the caller's pick (the
    best scored that survives shaping and the parse check) decides between them, so a wrong seed that the model
    goes along with does not push out what noise would have given.
    """
    return n_candidates + (1 if seed_ids and not seed_alone and n_candidates == 1 else 0)


def keep_middle(
    tokens: Sequence[int], conf: Sequence[float], end_ids: set[int], filler_id: int | None, drop_ids: set[int]
) -> tuple[list[int], list[float], bool]:
    """The tokens of one block's free slots that belong to the middle, their confidences, and whether it ended.

    The middle ends at the first end token (EOS, not kept); a filler marks it ended too. Filler and other
    special tokens (`drop_ids`) are left out.
    """
    kept: list[int] = []
    kept_conf: list[float] = []
    ended = False
    for tok, c in zip(tokens, conf, strict=True):
        if tok in end_ids:
            return kept, kept_conf, True
        if tok == filler_id:
            ended = True
        if tok not in drop_ids:
            kept.append(tok)
            kept_conf.append(c)
    return kept, kept_conf, ended


def rank_candidates(tokenizer, raw, pieces, confs, scores, rows, ended) -> list[Candidate]:
    """Distinct middles, best score first (ties keep batch order, so the preferred length wins)."""
    order = sorted(range(len(rows)), key=lambda i: -scores[i])
    seen: set[str] = set()
    out = []
    for i in order:
        text = tokenizer.decode(pieces[i], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if text in seen:
            continue
        seen.add(text)
        out.append(
            Candidate(
                text=text,
                token_ids=pieces[i],
                raw_ids=raw[i],
                token_confidence=confs[i],
                score=scores[i],
                n_free=rows[i],
                ended=ended[i],
                tokens=token_spans(tokenizer.decode, pieces[i], confs[i]),
            )
        )
    return out


class RunsGuide:
    """Syntax-guided denoising of a joint canvas: one :class:`MiddleGuide` per free run (hole), left to right."""

    def __init__(self, guides: Sequence[MiddleGuide | None], lengths: Sequence[int]) -> None:
        self.guides, self.lengths = list(guides), list(lengths)
        self.budget = max((g.budget for g in self.guides if g is not None), default=0)

    def __call__(self, row: int, free_ids: list[int]) -> list[int]:
        """The free slots of any run whose middle its guide finds inside a syntax error."""
        picks, start = [], 0
        for guide, n in zip(self.guides, self.lengths, strict=False):
            if guide is not None:
                picks += [start + k for k in guide(row, free_ids[start : start + n])]
            start += n
        return picks
