"""The completion policy: when the model runs, on what, and what comes back. No LSP types: text and offsets.

- **Newest wins.** Each document has at most one infill in flight; a new one cancels it (:meth:`InfillPolicy.claim`),
  and so do a close, a model restart and shutdown. A cancel stops the worker at its next denoising step.
- **Automatic triggers are cheap to skip.** They wait ``debounceMs`` and give up if a newer keystroke came; they
  get nothing inside a word, nor in a string or comment unless ``completionInStrings``; they may get an empty
  middle, unless the code at the cursor is unfinished.
- **Typed-through ghost text.** While the user types the ghost text last shown, the rest of it is the answer,
  with no model call (:class:`~dgls.ghost.GhostCache`). Invoked triggers always get fresh candidates.
- **Edits regenerate spans** (holes, a selection, a rewrite), one model call each, with cancellable progress.

The caller (the language server, or a command line) converts positions to offsets and edits back; it provides
the engine, the current text, status and fault reports (:class:`Host`) and shows progress (:class:`Progress`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dgls.actions import find_holes, with_instruction
from dgls.context import ContextError, InfillRequest
from dgls.engine import Completion, Engine, JointRequest
from dgls.ghost import Ghost, GhostCache
from dgls.postprocess import make_edits
from dgls.seeds import SeedIndex
from dgls.settings import Settings
from dgls.text import Edit

log = logging.getLogger(__name__)


WINDOW_MARK = 64  # characters at a kept window start that must be unchanged for it to stay


class Refused(Exception):
    """The request cannot be served as asked (a bad span, cancelled); the message says why."""


class Host(Protocol):
    """What the policy needs of whoever serves it."""

    settings: Settings

    def ready_engine(self) -> Engine | None:
        """The engine when it can serve, else None (having told the user why, if it should)."""

    def current_text(self, uri: str) -> str | None:
        """The text of `uri` as it is now (None when it is not open)."""

    def open_texts(self) -> list[tuple[str, str]]:
        """Every open document as ``(uri, text)`` (where workspace seeds are looked for)."""

    def send_status(self, **event: Any) -> None:
        """Report the state, with optional event fields."""

    def report_fault(self, message: str) -> None:
        """A request failed in the model."""


class Progress(Protocol):
    """How one request shows its progress; cancelling it sets the request's cancel event."""

    async def begin(self, title: str, cancel: threading.Event) -> None:
        """Start showing progress."""

    def on_step(self, part: int, parts: int) -> Callable[[int, int], None] | None:
        """The worker's step callback for part `part` of `parts` (None: no progress)."""

    def end(self, message: str) -> None:
        """Stop showing progress."""


class _Silent:
    """No progress shown."""

    async def begin(self, title: str, cancel: threading.Event) -> None:
        return None

    def on_step(self, part: int, parts: int) -> None:
        return None

    def end(self, message: str) -> None:
        return None


SILENT: Progress = _Silent()


@dataclass
class Infill:
    """An answer at the cursor: edits on the text it was asked on, best first."""

    request: InfillRequest | None  # None: the rest of the ghost text, no model call
    edits: list[Edit]


# the counters of ``dgls.stats``: model calls and their function evaluations, items served, what became of them
USAGE_COUNTERS = (
    "modelCalls",
    "nfe",
    "itemsServed",
    "accepted",
    "partiallyAccepted",
    "acceptedChars",
    "dismissed",
    "cacheHits",
)
FEEDBACK = ("accepted", "partiallyAccepted", "dismissed")  # what an editor reports about an item it showed


class InfillPolicy:
    """Per-document in-flight work, the ghost cache and the counters of one server's infills."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.inflight: dict[str, threading.Event] = {}  # uri -> cancel event of the newest infill
        self.ghosts = GhostCache()
        self.told_untrained: set[str] = set()  # languages the user was told the model does not know (once each)
        self.stats: dict[str, Any] = {
            "requests": 0,
            "typedThrough": 0,
            "resultCache": 0,
            "cancelled": 0,
            "lastLatencyMs": None,
            "lastNfe": None,
            "seeded": 0,
            "workspaceFiles": 0,  # workspace files read for seeds
        }
        # what the editor did with the ghost text, counted in memory only (no file, nothing leaves the machine)
        self.usage: dict[str, int] = dict.fromkeys(USAGE_COUNTERS, 0)
        self.seeds = SeedIndex()  # open documents (and workspace files, once read) for canvas seeds
        self._indexed: dict[str, str] = {}  # uri -> the text object last indexed
        # uri -> the start of the last completion's prefix window and the text there (to see that it still is)
        self.windows: dict[str, tuple[int, str]] = {}

    # -- newest wins ---------------------------------------------------------------------------------------
    def claim(self, uri: str) -> threading.Event:
        """A cancel event for a new request on `uri`; the one in flight for it is cancelled (newest wins)."""
        previous = self.inflight.get(uri)
        if previous is not None:
            previous.set()
        cancel = self.inflight[uri] = threading.Event()
        return cancel

    def release(self, uri: str, cancel: threading.Event) -> None:
        """The request holding `cancel` on `uri` is done."""
        if self.inflight.get(uri) is cancel:
            del self.inflight[uri]

    def cancel_all(self) -> None:
        """Cancel every infill in flight (model restart, shutdown, client gone)."""
        for cancel in self.inflight.values():
            cancel.set()

    def forget(self, uri: str) -> None:
        """Drop the ghost text of `uri` and cancel its work (document closed)."""
        self.ghosts.forget(uri)
        self.windows.pop(uri, None)
        cancel = self.inflight.pop(uri, None)
        if cancel is not None:
            cancel.set()

    # -- what is served --------------------------------------------------------------------------------------
    def serves(self, text: str, language: str, trained: tuple[str, ...] | None = None) -> bool:
        """Whether completions are offered in a document: its language on, no NUL in it.

        `trained` are the languages the model was trained on (None: it does not say); the ``languages``
        setting adds and removes languages (:class:`~dgls.settings.LanguageSettings`).
        """
        return self.host.settings.languages.enabled(language, trained) and "\x00" not in text

    def untrained_notice(self, language: str, trained: tuple[str, ...] | None) -> str | None:
        """What to tell the user the first time `language` gets no completions because the model does not know it.

        None when it is off for another reason (the user disabled it) or the user was told this session.
        """
        if language in self.told_untrained or not self.host.settings.languages.untrained(language, trained):
            return None
        self.told_untrained.add(language)
        # short: Neovim asks to press ENTER for a message longer than its echo space (the width less the ruler)
        model = self.host.settings.model
        return f"{model} was not trained on {language}: no completions (languages.enable adds {language})"

    def holes(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The hole markers in ``text[start:end]``, or in the whole text when the range is empty."""
        return find_holes(text, self.host.settings.hole_markers, *((start, end) if start < end else (0, len(text))))

    # -- one engine call -------------------------------------------------------------------------------------
    async def run(
        self,
        engine: Engine,
        request: InfillRequest | JointRequest,
        *,
        cancel: threading.Event,
        n_candidates: int = 1,
        explicit: bool = True,
        on_step: Callable[[int, int], None] | None = None,
        renoise_share: float = 1.0,
        seed_text: str = "",
        document: str | None = None,
    ) -> Completion | None:
        """Submit one request (or a joint fill of several holes) and await it; None when superseded or failed.

        An `explicit` request (the user asked: Invoked trigger, code action, command) may not get an empty middle,
        nor may an automatic one where the code at the cursor is unfinished as it stands (``request.incomplete``:
        ``x = |``, an empty block body), since there an empty middle is not what the user is after.

        On cancellation of this task (``$/cancelRequest``) the cancel event stops the worker at its next step;
        the worker is awaited so the next request finds it free, and the cancellation is re-raised so the server
        answers -32800.
        """
        self.stats["requests"] += 1
        t0 = time.perf_counter()
        if isinstance(request, JointRequest):
            fut = engine.submit_joint(request, seed=0, cancel=cancel, on_step=on_step, min_tokens=1, document=document)
            request = request.holes[0]
        else:
            fut = engine.submit(
                request,
                n_candidates=n_candidates,
                seed=0,
                cancel=cancel,
                on_step=on_step,
                min_tokens=1 if explicit or request.incomplete else 0,
                renoise_share=renoise_share,
                syntax_guided=self.host.settings.syntax_guided,
                seed_text=seed_text,
                document=document,
                automatic=not explicit,
            )
        try:
            done = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 1)  # Python 3.10: the client's
            if fut.cancelled() and not cancelling():  # the engine dropped it (model restarted), nobody cancelled us:
                self.stats["cancelled"] += 1  # an empty answer, as for a superseded request, not -32800
                return None
            cancel.set()
            steps = await _stopped(fut)
            self.stats["cancelled"] += 1
            self.host.send_status(event="cancelled", steps=steps)
            raise
        except Exception as exc:
            if cancel.is_set():  # superseded by a newer request, closed document, restart
                self.stats["cancelled"] += 1
                log.debug("infill superseded after %s step(s)", getattr(exc, "steps", "?"))
            else:
                self.host.report_fault(f"the model failed on a request: {exc}")
            return None
        finally:
            # an error raised through `await` carries this frame in its traceback, and the frame holds the future
            # that holds the error: a cycle only the full (rare) collection frees; break it here
            del fut
        ms = (time.perf_counter() - t0) * 1e3
        self.stats.update(lastLatencyMs=round(ms, 1), lastNfe=done.nfe)
        self.stats["resultCache"] += done.cached
        if done.cached:
            self.usage["cacheHits"] += 1
        else:
            self.usage["modelCalls"] += 1
            self.usage["nfe"] += done.nfe
        log.info(
            "infill %s: %d candidate(s) or hole(s), nfe %d, %.0f ms (model %.0f ms, encoder %.0f ms), prefix cache "
            "%s%s",
            request.span.value,
            len(done.holes) if done.holes is not None else len(done.candidates),
            done.nfe,
            ms,
            done.ms,
            done.encode_ms,
            done.prefix_cache,
            ", result cache" if done.cached else "",
        )
        return done

    # -- at the cursor ---------------------------------------------------------------------------------------
    async def complete(
        self,
        uri: str,
        text: str,
        language: str,
        offset: int,
        *,
        automatic: bool,
        n_candidates: int,
        progress: Progress = SILENT,
    ) -> Infill | None:
        """The edits for an infill at `offset` of document `uri`; None for no answer (see the checks below)."""
        ghost = self.ghosts.lookup(uri, text, offset) if automatic else None  # Invoked: the user wants fresh ones
        if ghost is not None:
            self.stats["typedThrough"] += 1
            self.usage["cacheHits"] += 1
            return Infill(None, [ghost.edit])
        engine = self.host.ready_engine()
        if engine is None:
            return None
        cancel = self.claim(uri)
        try:
            if automatic and self.host.settings.debounce_ms:
                await asyncio.sleep(self.host.settings.debounce_ms / 1e3)
                if cancel.is_set():
                    return None  # a newer keystroke superseded this one
                if self.host.current_text(uri) is not text:
                    return None
            try:
                request = engine.build_request(
                    text, offset, language=language, keep_prefix_start=self.window(uri, text)
                )
            except ContextError as exc:
                log.info("no completion: %s", exc)
                return None
            start = request.prefix_start
            self.windows[uri] = (start, text[start : start + WINDOW_MARK])
            if automatic and (
                request.inside_word
                or ((request.in_string or request.in_comment) and not self.host.settings.completion_in_strings)
            ):
                return None
            seed = self.seed_for(uri, text, request.start) if request.start == request.end else ""
            await progress.begin("dgls: infill", cancel)
            try:
                done = await self.run(
                    engine,
                    request,
                    cancel=cancel,
                    n_candidates=n_candidates,
                    explicit=not automatic,
                    on_step=progress.on_step(0, 1),
                    seed_text=seed,
                    document=text,
                )
            finally:
                progress.end("cancelled" if cancel.is_set() else "done")
        finally:
            self.release(uri, cancel)
        if done is None:
            return None
        edits = make_edits(text, request, done.candidates)
        if edits:
            best = edits[0]
            self.ghosts.remember(uri, Ghost(text, Edit(best.start, best.end, best.new_text)))
        self.host.send_status()
        return Infill(request, edits)

    def window(self, uri: str, text: str) -> int | None:
        """Where the last completion's prefix window on `uri` started, if the text there is still the same."""
        start, mark = self.windows.get(uri, (None, ""))
        return start if start is not None and text.startswith(mark, start) else None

    def seed_for(self, uri: str, text: str, offset: int) -> str:
        """A continuation of the code before `offset` from the open documents or the workspace, or ''.

        What the canvas starts from instead of noise; '' when nothing matches or ``workspaceSeeds`` is off.
        """
        if not self.host.settings.workspace_seeds:
            return ""
        for other, other_text in self.host.open_texts():
            if self._indexed.get(other) is not other_text:  # changed since last indexed (texts are immutable)
                self.seeds.update(other, other_text)
                self._indexed[other] = other_text
        found = self.seeds.lookup(text[:offset], exclude_at=(uri, offset))
        if found is None:
            return ""
        self.stats["seeded"] += 1
        log.debug("seed from %s (%d tokens matched): %r", found.source, found.match_tokens, found.text)
        return found.text

    # -- what became of the items --------------------------------------------------------------------------
    def served(self, n: int) -> list[str]:
        """Ids for `n` items about to be shown (counted as served); the editor reports on them by id."""
        first = self.usage["itemsServed"]
        self.usage["itemsServed"] += n
        return [str(first + i + 1) for i in range(n)]

    def feedback(self, kind: str, chars: int = 0) -> None:
        """Count an editor's report on an item: one of :data:`FEEDBACK`; `chars` accepted of a partial accept."""
        if kind not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}, got {kind!r}")
        self.usage[kind] += 1
        if kind == "partiallyAccepted":
            self.usage["acceptedChars"] += max(chars, 0)

    # -- spans -----------------------------------------------------------------------------------------------
    async def edit_spans(
        self,
        engine: Engine,
        text: str,
        language: str,
        spans: list[tuple[int, int]],
        *,
        title: str,
        instruction: str | None = None,
        progress: Progress = SILENT,
        joint: bool = False,
        renoise_share: float = 1.0,
    ) -> list[Edit]:
        """Regenerate each span of `text` (a hole or a selection); Refused when cancelled.

        One model call per span, or, `joint`, the spans (holes) filled together: one call per group of holes that
        fits a canvas (:meth:`Engine.joint_groups`), each hole conditioned on what the others become.
        `renoise_share` < 1 regenerates a selection in place (:meth:`Engine.submit`).
        """
        cancel = threading.Event()
        await progress.begin(title, cancel)
        edits: list[Edit] = []
        try:
            requests = [span_request(engine, text, language, start, end) for start, end in spans]
            if instruction:
                requests = [with_instruction(r, text, instruction) for r in requests]
            calls: list[InfillRequest | JointRequest] = list(requests)
            if joint and engine.joint_capable():
                calls = list(engine.joint_groups(text, requests))
            for i, call in enumerate(calls):
                if cancel.is_set():
                    break
                done = await self.run(
                    engine,
                    call,
                    cancel=cancel,
                    on_step=progress.on_step(i, len(calls)),
                    renoise_share=renoise_share,
                    document=None if instruction else text,  # with an instruction the prefix is not the text's
                )
                if done is None:
                    continue
                if isinstance(call, JointRequest):
                    assert done.holes is not None
                    pairs = [(r, [c]) for r, c in zip(call.holes, done.holes, strict=True)]
                else:
                    pairs = [(call, done.candidates)]
                for request, candidates in pairs:
                    found = make_edits(text, request, candidates)
                    if found:
                        edits.append(found[0])
        finally:
            progress.end("cancelled" if cancel.is_set() else f"{len(edits)} edit(s)")
        if cancel.is_set():
            raise Refused(f"{title}: cancelled")
        self.host.send_status()
        return edits


def span_request(engine: Engine, text: str, language: str, start: int, end: int) -> InfillRequest:
    """The request for a hole (as context sees a cursor on it, when it takes the whole hole) or a selection."""
    try:
        request = engine.build_request(text, start, language=language)
        if (request.start, request.end) == (start, end):
            return request
        return engine.build_request(text, start, language=language, selection=(start, end))
    except ContextError as exc:
        raise Refused(str(exc)) from None


async def _stopped(fut) -> int | None:
    """Wait for a cancelled worker future to stop; the number of steps it ran (None if it finished)."""
    try:
        await asyncio.shield(asyncio.wrap_future(fut))
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        return getattr(exc, "steps", None)
    finally:
        del fut  # as in run: no frame -> future -> error -> traceback -> frame cycle
    return None
