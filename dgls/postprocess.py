"""Middles -> edits: the range a middle replaces, closers already on the line, syntax checks, ranking.

The engine returns middles for an :class:`~dgls.context.InfillRequest`; an editor wants edits. This module
turns each middle into an :class:`Edit` on the document (code-point offsets; the server converts them to LSP
positions through :mod:`dgls.text`):

* a rest-of-line middle stops at its first line break; trailing whitespace-only lines are dropped;
* a middle's leading spaces or tabs are dropped where the line already has whitespace before the cursor
  (``return |`` + `` simple`` -> ``return simple``, not two spaces or a five-space indent);
* when a middle ends with closers (``)``, ``]``, ``}``, quotes) that the rest of the line already starts with,
  the edit replaces them instead of writing them twice (``print(|)`` + ``"hi")`` -> ``print("hi")``);
* where tree-sitter has a grammar for the language, a candidate that leaves the document with more syntax
  errors than it had (any at all, when the original parsed cleanly) is dropped;
* the rest are ranked: parse-clean first, then by the model's score; identical edits are merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from dgls.context import InfillRequest, SpanKind
from dgls.languages import errors_after_edit, parse, tree_errors
from dgls.text import Edit, Utf8Index

__all__ = ["Edit", "Suggested", "from_word_start", "make_edits", "shape_middle"]

CLOSERS = ")]}\"'`"


class Suggested(Protocol):
    """What ranking uses of a candidate middle (:class:`dgls.model.infill.Candidate` has it)."""

    @property
    def text(self) -> str:
        """The middle as decoded."""

    @property
    def score(self) -> float:
        """The model's score of it (mean log-probability)."""

    @property
    def confidence(self) -> float:
        """Mean per-token confidence, 0..1."""

    # and optionally ``tokens``: per token ``(start, end, confidence)``, code points of `text`


def shape_middle(text: str, request: InfillRequest, middle: str) -> tuple[int, int, str] | None:
    """Return the ``(start, end, new_text)`` a middle becomes in `text`, or None when nothing is left of it."""
    start, end = request.start, request.end
    if request.span is SpanKind.REST_OF_LINE:
        middle = middle.split("\n", 1)[0].split("\r", 1)[0].rstrip(" \t")
    lines = middle.splitlines(keepends=True)
    while lines and not lines[-1].strip():
        lines.pop()
    middle = "".join(lines).rstrip("\r\n")  # the suffix brings the line's own terminator
    if not middle.strip():
        return None
    if start > 0 and text[start - 1] in " \t":  # whitespace already before the cursor: do not write it twice
        middle = middle.lstrip(" \t")
    replaced = text[start:end]
    if replaced.endswith(("\n", "\r")):  # a selection of whole lines: keep the last line break
        middle += replaced[len(replaced.rstrip("\r\n")) :]
    end += _closers_to_replace(text, end, middle)
    return start, end, middle


def _closers_to_replace(text: str, end: int, middle: str) -> int:
    """How many closers at `end` the middle's own trailing closers stand for (0 when they do not match)."""
    n = 0
    while end + n < len(text) and text[end + n] in CLOSERS:
        n += 1
    for k in range(n, 0, -1):
        if middle.endswith(text[end : end + k]):
            return k
    return 0


def from_word_start(text: str, edit: Edit) -> Edit:
    """`edit` widened back to the start of the word it continues (``return a|``), the typed part in its text.

    What a completion item needs: clients filter items by the word before the cursor, so an item that starts at
    the cursor with the rest of the word would be filtered out. Unchanged when no word char is before `edit`.
    """
    start = edit.start
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    if start == edit.start:
        return edit
    typed = text[start : edit.start]
    tokens = tuple((a + len(typed), b + len(typed), c) for a, b, c in edit.tokens)
    return replace(edit, start=start, new_text=typed + edit.new_text, tokens=tokens)


def _tokens_in(new_text: str, s: Suggested) -> tuple[tuple[int, int, float], ...]:
    """The suggestion's token spans moved onto `new_text`, which is a slice of its text (see shape_middle)."""
    shift = s.text.find(new_text.rstrip("\r\n") or new_text)  # leading blanks dropped; the rest a prefix
    if shift < 0:
        return ()
    out = []
    for start, end, confidence in getattr(s, "tokens", ()):
        start, end = max(start - shift, 0), min(end - shift, len(new_text))
        if start < end:
            out.append((start, end, confidence))
    return tuple(out)


def make_edits(text: str, request: InfillRequest, candidates: Iterable[Suggested]) -> list[Edit]:
    """Edits for the engine's candidates on `text`, best first; candidates that break the parse are dropped."""
    shaped: dict[tuple[int, int, str], Suggested] = {}
    for s in candidates:
        edit = shape_middle(text, request, s.text)
        if edit is not None and edit not in shaped:
            shaped[edit] = s
    if not shaped:
        return []
    index = Utf8Index(text)
    tree = parse(request.language, text, index.data)  # the request's own parse (context's cache): no new parse
    base = tree_errors(tree)
    edits = []
    for (start, end, new_text), s in shaped.items():
        after: int | None = None
        if base is not None:
            after = errors_after_edit(request.language, text, index, start, end, new_text)
            assert after is not None, f"grammar for {request.language!r} vanished"
            if not (after <= base and (base > 0 or after == 0)):
                continue
        edits.append(
            Edit(
                start,
                end,
                new_text,
                score=s.score,
                confidence=s.confidence,
                no_new_syntax_errors=None if after is None else True,
                parses=None if after is None else after == 0,
                tokens=_tokens_in(new_text, s),
            )
        )
    edits.sort(key=lambda e: (e.parses is not True, -e.score))
    return edits
