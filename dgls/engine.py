"""Scheduling: one worker thread owns the model; requests go through it as futures, cancellable between steps.

The engine is the only thing above ``dgls.model`` that touches the model. Callers (the CLI, the language
server) build an :class:`~dgls.context.InfillRequest` with :meth:`Engine.build_request` (token budgets use the
model's tokenizer) and submit it; the future resolves to a :class:`Completion` or raises
:class:`~dgls.model.sampler.Cancelled` / :class:`EngineError`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from dgls.context import MAX_CANVAS, ContextBudget, InfillRequest, SpanKind, build_request, estimate_tokens
from dgls.languages import SpanChecker, grammar
from dgls.memory import release_freed_memory
from dgls.model import DEFAULT_MODEL
from dgls.model.remote import RemoteError, RemoteOptions
from dgls.settings import Settings

if TYPE_CHECKING:  # the model layer imports torch: not at dgls.engine's import
    from dgls.model.infill import Candidate, Infiller
    from dgls.model.remote import VllmInfiller
    from dgls.model.sampler import SamplerConfig

log = logging.getLogger("dgls.engine")


class TokenCounter:
    """Token ids and counts for the caller's thread, on a tokenizer of its own.

    The context budget counts tokens line by line on the server's event loop while the worker runs the model;
    sharing the model's tokenizer object between the two threads is not safe (a fast tokenizer's settings are
    mutable state), so this one holds an independent copy of the same tokenizer. Lines repeat from one keystroke
    to the next, so their counts are kept (least recently used first out); a request's prefix and suffix are
    tokenized once, here, and the worker runs on those ids.
    """

    def __init__(self, tokenizer: Any, max_lines: int = 8192) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._max_lines = max_lines

    def ids(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def count(self, text: str) -> int:
        """Number of tokens of `text` (remembered for the most recent texts)."""
        n = self._counts.get(text)
        if n is not None:
            self._counts.move_to_end(text)
            return n
        n = self._counts[text] = len(self.ids(text))
        if len(self._counts) > self._max_lines:
            self._counts.popitem(last=False)
        return n


@dataclass(frozen=True)
class _Call:
    """One request as the worker runs it: the request's tokens and how to sample them."""

    request: InfillRequest
    prefix_ids: list[int]
    suffix_ids: list[int]
    key: tuple  # the result cache's key
    lengths: tuple[int, ...]
    n_candidates: int
    seed: int | None
    cancel: Callable[[], bool] | None
    on_step: Callable[[int, int], None] | None
    min_tokens: int
    syntax_guided: bool
    renoise_share: float  # < 1: regenerate the selection in place (request.replaced's least believed tokens)
    old_ids: list[int]  # request.replaced's tokens when renoise_share < 1
    seed_ids: list[int]  # a workspace seed for the first free slots ([] for noise)
    seed_alone: bool  # an Automatic trigger: the seed row without a noise row beside it (speed while typing)
    document: str | None  # the whole text the request was built on (the syntax guide checks in it), if known
    sampler: SamplerConfig  # the engine's, with this request's step cap


class EngineError(Exception):
    """The engine cannot serve: the model failed to load or is not loaded yet."""


class AutomaticBudget(NamedTuple):
    """What an Automatic trigger (ghost text while typing) may spend; None: no cap."""

    steps: int | None  # denoising steps
    canvas: int | None  # largest canvas (middle tokens)
    suffix: int | None  # suffix tokens the model reads (the request's window is unchanged)


@dataclass(frozen=True)
class EngineOptions:
    """What the engine loads and how it samples; `sampler` overrides the checkpoint's defaults."""

    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    experts: str = "auto"  # "auto" or "fp8": how the MoE experts run (dgls.model.loading.load_model)
    allow_download: bool = False
    sampler: Mapping[str, Any] = field(default_factory=dict)
    budget: ContextBudget = ContextBudget()
    max_canvas: int = MAX_CANVAS
    max_blocks: int = 1
    cache_size: int = 64
    remote: RemoteOptions | None = None  # a vLLM server denoises instead of an in-process model (model unused)
    syntax_guided: bool = True  # syntax-guided denoising where the language has a grammar (a request may say)
    # Automatic triggers (ghost text while typing): step cap, largest canvas and suffix tokens the model reads;
    # None: the model's dgls.json
    automatic_steps: int | None = None
    automatic_canvas: int | None = None
    automatic_suffix: int | None = None
    threads: int | None = None  # intra-op threads of a model on the CPU (None: dgls.model.loading.cpu_threads)

    @classmethod
    def from_settings(cls, settings: Settings, **extra: Any) -> EngineOptions:
        """The options a user's settings ask for (`extra`: what only the command line sets, e.g. max_blocks)."""
        s = settings
        return cls(
            model=s.model,
            device=s.device,
            dtype=s.dtype,
            experts=s.experts,
            sampler=s.sampler_overrides(),
            budget=s.context_budget,
            max_canvas=s.max_canvas,
            remote=s.remote_options(),
            automatic_steps=s.automatic_steps,
            automatic_canvas=s.automatic_canvas,
            automatic_suffix=s.automatic_suffix,
            threads=s.threads,
            **extra,
        )


# slots of a joint fill's canvas (free slots of every hole plus the pinned code between them): DiffusionGemma's
# canvas; most of it is pinned code, which costs attention, not denoising
JOINT_CANVAS = 256


@dataclass(frozen=True)
class JointRequest:
    """Holes of one document filled in one canvas: free slots for each, the code between them pinned.

    ``holes[k]`` is hole k's own request (its span, shaping and canvas length, as if it were filled alone);
    ``between[k]`` the text after hole k up to hole k+1 (for the last hole: its suffix window). The prefix is the
    first hole's.
    """

    holes: tuple[InfillRequest, ...]
    between: tuple[str, ...]


@dataclass
class Completion:
    """The answer to one request."""

    request: InfillRequest
    candidates: list[Candidate]  # best first
    nfe: int
    ms: float
    blocks: int = 0
    encode_ms: float = 0.0
    prefix_cache: str = "none"
    cached: bool = False  # answered from the result cache, no model call
    syntax_renoised: int = 0  # tokens syntax-guided denoising sent back to noise
    holes: list[Candidate] | None = None  # a joint fill: one middle per hole, left to right

    @property
    def text(self) -> str:
        """The best middle ('' when there is none)."""
        return self.candidates[0].text if self.candidates else ""


class Engine:
    """A resident model behind a single worker thread."""

    def __init__(self, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dgls-model")
        self._infiller: Infiller | VllmInfiller | None = None
        self._counter: TokenCounter | None = None
        self._loading: Future | None = None
        self._results: OrderedDict[tuple, Completion] = OrderedDict()
        self._lock = threading.Lock()
        self.state = "idle"  # idle -> loading -> ready | error
        self.error: str | None = None
        self.info: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Future:
        """Load the model on the worker thread (once); the future resolves when it is ready or failed."""
        with self._lock:
            if self._loading is None:
                self.state = "loading"
                self._loading = self._pool.submit(self._load)
            return self._loading

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise EngineError if it failed."""
        self.start().result(timeout)
        if self.state != "ready":
            raise EngineError(self.error or "model not loaded")

    def _load(self) -> None:
        import torch

        from dgls.model.infill import Infiller
        from dgls.model.loading import ModelLoadError, cpu_threads, load_model

        t0 = time.perf_counter()
        o = self.options
        if o.remote is not None:
            return self._load_remote(o.remote, t0)
        try:
            loaded = load_model(
                o.model, device=o.device, dtype=o.dtype, allow_download=o.allow_download, experts=o.experts
            )
            sampler = loaded.spec.sampler.replace(**dict(o.sampler)) if o.sampler else loaded.spec.sampler
        except (ModelLoadError, ValueError) as exc:
            self.state, self.error = "error", str(exc)
            log.info("model failed to load: %s", exc)  # the caller reports it (CLI, dgls/status)
            return
        if loaded.device.type == "cpu":
            torch.set_num_threads(cpu_threads(o.threads))
        info = {
            "model": str(loaded.path),
            "device": str(loaded.device),
            "threads": torch.get_num_threads(),
            "dtype": str(loaded.dtype)[6:],
            "params": loaded.n_params,
            "experts": loaded.experts,
            "load_ms": round((time.perf_counter() - t0) * 1e3, 1),
            "filler": loaded.spec.filler_id is not None,
            "languages": None if loaded.spec.languages is None else list(loaded.spec.languages),
        }
        with self._lock:
            if self.state == "stopped":  # shut down while loading: do not pin the weights
                return
            self._counter = TokenCounter(loaded.tokenizer)
            self._infiller, self._sampler, self.info, self.state = Infiller(loaded), sampler, info, "ready"
        log.info("model ready: %s", self.info)

    def _load_remote(self, remote: RemoteOptions, t0: float) -> None:
        """Connect to a vLLM server: only the served checkpoint's tokenizer and layout facts load here."""
        from dgls.model.loading import ModelLoadError
        from dgls.model.remote import load_vllm

        try:
            infiller = load_vllm(remote, dict(self.options.sampler))
        except ModelLoadError as exc:
            self.state, self.error = "error", str(exc)
            log.info("backend failed to start: %s", exc)
            return
        info = {
            "model": remote.model or "(the server's default)",
            "device": f"vllm {infiller.url}",
            "dtype": None,
            "backend": "vllm",
            "tokenizer": infiller.tokenizer_path,
            "filler": infiller.spec.filler_id is not None,
            "load_ms": round((time.perf_counter() - t0) * 1e3, 1),
            "languages": None if infiller.spec.languages is None else list(infiller.spec.languages),
        }
        with self._lock:
            if self.state == "stopped":
                infiller.close()
                return
            self._counter = TokenCounter(infiller.tokenizer)
            self._infiller, self._sampler, self.info, self.state = infiller, infiller.spec.sampler, info, "ready"
        log.info("backend ready: %s", self.info)

    def backend_status(self) -> dict[str, Any] | None:
        """The vLLM connection for ``dgls/status`` (None for the in-process model)."""
        status = getattr(self._infiller, "status", None)
        return status() if status is not None else None

    def shutdown(self) -> None:
        """Stop the worker (pending requests are cancelled) and let go of the model.

        The weights are freed with the last reference: a model call still running keeps its own until it ends,
        and whoever still holds this Engine (a request in flight on the server, a callback) no longer pins them.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self.state = "stopped"
            self._results.clear()
            infiller, self._infiller = self._infiller, None
        close = getattr(infiller, "close", None)
        if close is not None:  # the vLLM client: its connections and loop thread
            close()

    @property
    def languages(self) -> tuple[str, ...] | None:
        """The LSP language ids the model was trained on; None when it does not say (or is not loaded)."""
        languages = self.info.get("languages")
        return None if languages is None else tuple(languages)

    # -- requests --------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the model's tokenizer (an estimate before the model is loaded)."""
        counter = self._counter
        return estimate_tokens(text) if counter is None else counter.count(text)

    def build_request(
        self,
        text: str,
        offset: int,
        *,
        language: str | None = None,
        selection: tuple[int, int] | None = None,
        keep_prefix_start: int | None = None,
    ) -> InfillRequest:
        """Cursor context for `text` at code-point `offset` (ContextError for a bad offset or selection).

        `keep_prefix_start`: the last window's start on this document, kept while it fits (see
        :func:`dgls.context.build_request`).
        """
        return build_request(
            text,
            offset,
            language=language,
            selection=selection,
            budget=self.budget(),
            count_tokens=self.count_tokens,
            max_canvas=self.options.max_canvas,
            keep_prefix_start=keep_prefix_start,
        )

    def budget(self) -> ContextBudget:
        """The configured context budget, capped by the windows the model was trained on."""
        b = self.options.budget
        spec = self._infiller.spec if self._infiller is not None else None
        if spec is None:
            return b
        return ContextBudget(
            prefix_tokens=min(b.prefix_tokens, spec.max_prefix_tokens or b.prefix_tokens),
            suffix_tokens=min(b.suffix_tokens, spec.max_suffix_tokens or b.suffix_tokens),
        )

    def automatic_budget(self) -> AutomaticBudget:
        """The budget of Automatic triggers: the settings', else the model's tuned defaults (None: no cap)."""
        spec = self._infiller.spec if self._infiller is not None else None
        o = self.options

        def pick(mine: int | None, theirs: str) -> int | None:
            return mine if mine is not None else getattr(spec, theirs, None)

        return AutomaticBudget(
            pick(o.automatic_steps, "automatic_steps"),
            pick(o.automatic_canvas, "automatic_canvas"),
            pick(o.automatic_suffix, "automatic_suffix"),
        )

    def lengths_for(self, request: InfillRequest) -> tuple[int, ...]:
        """Canvas rows to run: one (the longest wanted) when the model ends middles itself, else each length."""
        inf = self._infiller
        if inf is None:
            raise EngineError("the engine was shut down")
        spec = inf.spec
        wanted = request.canvas_lengths or spec.canvas_lengths
        if spec.filler_id is not None:
            return (min(max(wanted), max(spec.canvas_lengths)),)
        return tuple(dict.fromkeys(wanted))

    def submit(
        self,
        request: InfillRequest,
        *,
        n_candidates: int = 1,
        lengths: tuple[int, ...] | None = None,
        seed: int | None = 0,
        cancel: threading.Event | None = None,
        on_step: Callable[[int, int], None] | None = None,
        min_tokens: int = 0,
        syntax_guided: bool | None = None,
        renoise_share: float = 1.0,
        seed_text: str = "",
        document: str | None = None,
        automatic: bool = False,
        max_steps: int | None = None,
    ) -> Future:
        """Queue a request on the worker; the future gives a Completion (or raises Cancelled / EngineError).

        An `automatic` request (ghost text while typing) runs within the Automatic budget
        (:meth:`automatic_budget`: fewer steps, a smaller canvas); `max_steps` caps this request's steps.

        `min_tokens` > 0 forbids an empty middle (the model may not end it in its first slots). `syntax_guided`
        (default: the engine's option) renoises tokens that break the parse while denoising, where the language
        has a tree-sitter grammar. `renoise_share` < 1 regenerates a selection in place: only that share of its
        tokens (the ones the model believes least) is renoised, the rest stays as it is. `seed_text` (a
        continuation found in the workspace, :mod:`dgls.seeds`) starts the canvas instead of noise. `document`,
        the text the request was built on, lets the syntax guide check the middle in the whole file, not only in
        the request's window (where a window cut inside a construct can hide an error).
        """
        if syntax_guided is None:
            syntax_guided = self.options.syntax_guided
        if self.state != "ready":
            return _failed(self.error if self.state == "error" else f"model is {self.state}")
        lengths = tuple(lengths) if lengths else self.lengths_for(request)
        sampler = self._sampler
        suffix_cap: int | None = None
        if automatic:
            steps, canvas, suffix_cap = self.automatic_budget()
            lengths = tuple(dict.fromkeys(min(n, canvas) for n in lengths)) if canvas else lengths
            if steps:
                sampler = sampler.replace(max_steps=min(steps, sampler.max_steps))
        if max_steps is not None:
            sampler = sampler.replace(max_steps=max_steps)
        in_place = renoise_share < 1 and bool(request.replaced) and self.joint_capable()
        key: tuple = (request.prefix, request.suffix, lengths, n_candidates, seed, min_tokens, syntax_guided)
        counter = self._counter
        if counter is None:  # shut down meanwhile
            return _failed("the engine was shut down")
        suffix_ids = counter.ids(request.suffix)[:suffix_cap]
        key += (sampler.max_steps, len(suffix_ids))  # an Automatic trigger may read less of the suffix
        if in_place:
            key += (request.replaced, renoise_share)
        if seed_text:
            key += (seed_text, automatic)  # an Automatic trigger runs the seed alone
        with self._lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
        if hit is not None:
            fut: Future = Future()
            fut.set_result(Completion(request=request, candidates=hit.candidates, nfe=0, ms=0.0, cached=True))
            return fut
        check = cancel.is_set if cancel is not None else None
        call = _Call(
            request,
            counter.ids(request.prefix),
            suffix_ids,
            key,
            lengths,
            n_candidates,
            seed,
            check,
            on_step,
            min_tokens,
            syntax_guided,
            renoise_share if in_place else 1.0,
            counter.ids(request.replaced) if in_place else [],
            counter.ids(seed_text) if seed_text else [],
            automatic,
            document,
            sampler,
        )  # the ids: the one tokenization of this request
        return self._pool.submit(self._run, call)

    def joint_groups(self, text: str, holes: list[InfillRequest]) -> list[JointRequest]:
        """The holes (left to right) as joint requests: consecutive holes share a canvas while it fits.

        A canvas holds each hole's free slots and the code between the holes, up to :data:`JOINT_CANVAS` tokens
        (or ``max_canvas`` when larger); past that the next hole starts a new group (a model call of its own,
        which sees the other groups' holes as their markers). A hole too big for a canvas with anything after it
        is a group alone, with its own suffix window.
        """
        groups: list[JointRequest] = []
        cur: list[InfillRequest] = []
        between: list[str] = []
        size = 0
        for k, r in enumerate(holes):
            gap = text[r.end : holes[k + 1].start] if k + 1 < len(holes) else r.suffix
            cost = self.lengths_for(r)[0] + self.count_tokens(gap)
            if cur and size + cost > max(self.options.max_canvas, JOINT_CANVAS):
                groups.append(JointRequest(tuple(cur), (*between[:-1], cur[-1].suffix)))
                cur, between, size = [], [], 0
            cur.append(r)
            between.append(gap)
            size += cost
        if cur:
            groups.append(JointRequest(tuple(cur), (*between[:-1], cur[-1].suffix)))
        return groups

    def joint_capable(self) -> bool:
        """Whether the loaded backend fills several holes in one canvas (the in-process model; not vLLM's)."""
        return hasattr(self._infiller, "fill_segments")

    def submit_joint(
        self,
        joint: JointRequest,
        *,
        seed: int | None = 0,
        cancel: threading.Event | None = None,
        on_step: Callable[[int, int], None] | None = None,
        min_tokens: int = 0,
        document: str | None = None,
    ) -> Future:
        """Queue a joint fill on the worker; the future gives a Completion whose ``holes`` has a middle per hole.

        `document` (the text the holes are in) is where each hole's syntax guide checks it, as in :meth:`submit`.
        """
        counter = self._counter
        if self.state != "ready":
            return _failed(self.error if self.state == "error" else f"model is {self.state}")
        if counter is None:
            return _failed("the engine was shut down")
        if not self.joint_capable():
            return _failed("the vLLM backend fills one hole per call")
        from dgls.model.canvas import Free

        segments: list[Any] = []
        for r, gap in zip(joint.holes, joint.between, strict=True):
            segments += [Free(self.lengths_for(r)[0]), tuple(counter.ids(gap))]
        prefix_ids = counter.ids(joint.holes[0].prefix)
        check = cancel.is_set if cancel is not None else None
        guided = self.options.syntax_guided
        return self._pool.submit(
            self._run_joint, joint, prefix_ids, segments, seed, check, on_step, min_tokens, guided, document
        )

    def _run_joint(
        self, joint, prefix_ids, segments, seed, cancel, on_step, min_tokens, guided, document
    ) -> Completion:
        from dgls.model.sampler import Cancelled

        inf = self._infiller
        guides = [syntax_guide(inf, r, document) for r in joint.holes] if guided and inf is not None else []
        try:
            if inf is None or (cancel is not None and cancel()):
                raise Cancelled(0)
            res = cast("Infiller", inf).fill_segments(  # joint_capable() said it is the in-process model
                prefix_ids,
                segments,
                sampler=self._sampler,
                seed=seed,
                cancel=cancel,
                on_step=on_step,
                min_tokens=min_tokens,
                guides=guides,
            )
        except Cancelled as exc:
            raise exc.with_traceback(None) from None
        finally:
            release_freed_memory()
        return Completion(
            request=joint.holes[0],
            candidates=[],
            nfe=res.nfe,
            ms=res.ms,
            blocks=1,
            encode_ms=res.encode_ms,
            prefix_cache=res.prefix_cache,
            holes=res.runs,
            syntax_renoised=sum(g.renoised for g in guides if g is not None),
        )

    def complete(self, request: InfillRequest, **kw) -> Completion:
        """Blocking :meth:`submit`."""
        return self.submit(request, **kw).result()

    def _run(self, call: _Call) -> Completion:
        from dgls.model.sampler import Cancelled  # the model layer imports torch: not at dgls.engine's import

        try:
            return self._infill(call)
        except Cancelled as exc:
            # the traceback's frames hold the request's tensors (encoder cache, canvas, logits: megabytes), and the
            # future keeps the exception for as long as anyone holds the future: raise it without those frames
            raise exc.with_traceback(None) from None
        except RemoteError as exc:  # the vLLM server failed: the reason, without the HTTP client's frames
            raise EngineError(str(exc)) from None
        finally:
            release_freed_memory()

    def _infill(self, call: _Call) -> Completion:
        inf, request, lengths = self._infiller, call.request, call.lengths
        if inf is None or (call.cancel is not None and call.cancel()):  # shut down or cancelled while queued
            from dgls.model.sampler import Cancelled

            raise Cancelled(0)
        max_blocks = self.options.max_blocks if len(lengths) == 1 else 1
        if request.span is SpanKind.REST_OF_LINE:
            max_blocks = 1
        guide = syntax_guide(inf, request, call.document) if call.syntax_guided and max_blocks == 1 else None
        if call.renoise_share < 1 and call.old_ids:
            guide = None
            res = cast("Infiller", inf).regenerate(  # submit() asked joint_capable()
                call.prefix_ids,
                call.old_ids,
                call.suffix_ids,
                call.renoise_share,
                sampler=call.sampler,
                seed=call.seed,
                cancel=call.cancel,
                on_step=call.on_step,
            )
        else:
            res = inf.infill_ids(
                call.prefix_ids,
                call.suffix_ids,
                lengths=lengths,
                n_candidates=call.n_candidates,
                max_blocks=max_blocks,
                sampler=call.sampler,
                seed=call.seed,
                cancel=call.cancel,
                on_step=call.on_step,
                min_tokens=call.min_tokens,
                guide=guide,
                seed_ids=call.seed_ids,
                seed_alone=call.seed_alone,
            )
        if any(math.isnan(c.score) for c in res.candidates):  # NaN logits: broken weights or an overflowing dtype
            raise EngineError(
                f"the model produced NaN scores ({self.info.get('model')}, "
                f"{self.info.get('dtype')}): its weights may be corrupt or the dtype overflows"
            )
        done = Completion(
            request=request,
            candidates=res.candidates,
            nfe=res.nfe,
            ms=res.ms,
            blocks=res.blocks,
            encode_ms=res.encode_ms,
            prefix_cache=res.prefix_cache,
            syntax_renoised=guide.renoised if guide is not None else 0,
        )
        with self._lock:
            self._results[call.key] = done
            while len(self._results) > self.options.cache_size:
                self._results.popitem(last=False)
        return done


def _failed(reason: str | None) -> Future:
    """A future that already failed with EngineError(`reason`): a request the engine cannot take."""
    fut: Future = Future()
    fut.set_exception(EngineError(reason or "the model failed to load"))
    return fut


def syntax_guide(infiller: Any, request: InfillRequest, document: str | None = None) -> Any | None:
    """The request's syntax guide (:class:`dgls.model.infill.MiddleGuide`), or None without a grammar.

    It checks the whole middle (a rest-of-line one too, though post-processing keeps only its first line) in the
    `document` the request was built on, or, without it, in the request's own window (prefix + middle + suffix).
    """
    if grammar(request.language) is None or not hasattr(infiller, "guide"):
        return None
    if document is not None and document[request.start : request.end] == request.replaced:
        checker = SpanChecker(request.language, document, request.start, request.end, document=True)
    else:
        window = request.prefix + request.suffix
        checker = SpanChecker(request.language, window, len(request.prefix), len(request.prefix))
    if checker.tree is None:
        return None
    return infiller.guide(checker.error_spans)
