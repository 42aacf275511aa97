"""Cursor context: document text + cursor (+ selection) -> the :class:`InfillRequest` the engine runs.

The request names the middle to generate (``start..end``, code-point offsets), the prefix and suffix
windows around it (whole lines, inside a token budget, cut at a statement boundary when one is near the
cut), the kind of span (rest of line, a line, an empty block body, a selection) with the canvas lengths
to try, and a few facts about the cursor (in a string, in a comment, inside a word).

Syntax comes from tree-sitter (:mod:`dgls.languages`: the language table, grammars and the parse cache): a
language whose wheel is missing, or that is unknown, gets line-based windows and never an error. Tree-sitter
speaks UTF-8 bytes; every conversion goes through :mod:`dgls.text`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dgls.languages import Language, language_spec, parse, string_or_comment
from dgls.text import LineTable, Utf8Index

__all__ = [
    "ContextBudget",
    "ContextError",
    "InfillRequest",
    "SpanKind",
    "build_request",
]

CANVAS_STEP = 16  # canvas lengths are multiples of this many tokens
MAX_CANVAS = 64  # the largest canvas in tokens unless the settings say otherwise
_SYNTAX_SLACK = 0.25  # a window may shrink by this fraction of itself to end on a statement boundary


class SpanKind(str, Enum):
    """What the middle is, which decides how long a canvas to try."""

    REST_OF_LINE = "rest_of_line"  # cursor after code on its line: complete the rest of this line
    LINE = "line"  # only whitespace before the cursor on its line: fill one or a few lines
    BLOCK = "block"  # empty block body, or a hole marker (`...`, `pass`) that is the whole body
    SELECTION = "selection"  # a selected range: regenerate it


_CANVAS_LENGTHS = {
    SpanKind.REST_OF_LINE: (16,),
    SpanKind.LINE: (32, 16),
    SpanKind.BLOCK: (64, 32),
}


@dataclass(frozen=True)
class ContextBudget:
    """How many tokens of prefix and suffix the model sees around the middle."""

    prefix_tokens: int = 1024
    suffix_tokens: int = 256


@dataclass(frozen=True)
class InfillRequest:
    """One infill: fill ``document[start:end]`` between ``prefix`` and ``suffix``.

    ``end == start`` except for a selection and for a hole marker (``...``, ``pass``), whose text the
    middle replaces. The current line's text before ``start`` and after ``end`` is always inside the
    windows, even when it alone is over the budget.
    """

    prefix: str  # text[prefix_start:start]
    suffix: str  # text[end:suffix_end]
    language: str  # LSP language id ("python", ...) or "text" when unknown
    span: SpanKind
    canvas_lengths: tuple[int, ...]  # middle lengths in tokens to try, preferred first
    start: int  # code-point offset where the middle begins
    end: int  # code-point offset where the suffix begins
    prefix_start: int
    suffix_end: int
    indent: str  # leading whitespace of the line the middle starts on
    in_string: bool  # cursor inside a string literal
    in_comment: bool  # cursor inside a comment
    inside_word: bool  # an identifier character directly after the middle (at ``end``)
    # the code at the cursor is unfinished as it stands, so an empty middle is not what the user is after: a
    # syntax error starts on the cursor's line (``for i in ra|``); the line up to the cursor ends in an operator,
    # opener or keyword that needs more and nothing but closers follow it (``x = |``, ``f(a, |)``,
    # ``import |``: tree-sitter often takes the next line as the missing operand); or the middle is an empty
    # block body (which the user is about to write; Python even requires a statement there). False for a
    # selection, inside a string or comment, and for a language dgls has no table row for.
    incomplete: bool = False
    replaced: str = ""  # text[start:end]: the selection or hole marker the middle replaces ('' at a cursor)


class ContextError(ValueError):
    """The cursor or selection does not name a place in the document."""


# --- the request --------------------------------------------------------------------------------------


def estimate_tokens(s: str) -> int:
    """A token count for `s` without a tokenizer: about 3 characters a token."""
    return len(s) // 3 + 1


def build_request(
    text: str,
    offset: int,
    *,
    language: str | None = None,
    selection: tuple[int, int] | None = None,
    budget: ContextBudget = ContextBudget(),  # noqa: B008 (frozen, so a shared default is safe)
    count_tokens: Callable[[str], int] | None = None,
    max_canvas: int = MAX_CANVAS,
    keep_prefix_start: int | None = None,
) -> InfillRequest:
    """Build the infill request for a cursor at code-point ``offset`` (or a selection) in ``text``.

    ``selection`` is a ``(start, end)`` pair of code-point offsets; an empty one is no selection.
    ``count_tokens`` is the tokenizer's length function (default: an estimate of 3 characters a token);
    it is called on single lines outward from the cursor until the budget is spent, never on the whole
    document. ``max_canvas`` caps the canvas lengths (at least 16). Raises :class:`ContextError` for an
    offset or selection outside the document or a reversed selection.

    ``keep_prefix_start`` (the start of the last window on this document, at a line start) makes the window's
    start sticky, so that while the user types the encoded prefix stays a prefix of the next one (the encoder
    cache extends instead of starting over): it is kept while the text from it to the cursor fits the budget;
    when it no longer does, the start moves a quarter of the budget further than it must.
    """
    if not 0 <= offset <= len(text):
        raise ContextError(f"cursor offset {offset} is out of range: the document has {len(text)} characters")
    if max_canvas < CANVAS_STEP:
        raise ContextError(f"max_canvas must be at least {CANVAS_STEP} tokens, got {max_canvas}")
    if selection is not None:
        sel_start, sel_end = selection
        if sel_start > sel_end:
            raise ContextError(f"selection {sel_start}..{sel_end} is reversed: start must not be after end")
        if sel_start < 0 or sel_end > len(text):
            raise ContextError(
                f"selection {sel_start}..{sel_end} is out of range: the document has {len(text)} characters"
            )
        if sel_start == sel_end:
            selection = None
    count = count_tokens or estimate_tokens
    language = (language or "").strip().lower() or "text"
    spec = language_spec(language)
    lines = LineTable(text)
    index = Utf8Index(text)
    tree = parse(language, text, index.data) if spec is not None else None

    if selection is not None:
        span, (start, end) = SpanKind.SELECTION, selection
    else:
        span, start, end = _span_at(text, lines, offset, spec)
    cursor_line = lines.line_of(start)
    line_text = text[lines.start(cursor_line) : lines.end(cursor_line)]

    prefix_start = _prefix_start(text, lines, start, budget.prefix_tokens, count)
    keep = keep_prefix_start
    kept = (
        keep is not None
        and prefix_start <= keep <= lines.start(cursor_line)
        and lines.start(lines.line_of(keep)) == keep
    )
    if keep is not None and keep < prefix_start:  # typed past the budget: move on, with room for what comes next
        prefix_start = _prefix_start(text, lines, start, budget.prefix_tokens * 3 // 4, count)
    suffix_end = _suffix_end(text, lines, end, budget.suffix_tokens, count)
    if tree is not None and spec is not None:
        prefix_start, suffix_end = _snap_to_syntax(tree, index, lines, spec, start, end, prefix_start, suffix_end)
    if kept and keep is not None:  # it was snapped when it was chosen
        prefix_start = keep
    in_string, in_comment = string_or_comment(text, lines, index, tree, spec, start)

    cap = max_canvas // CANVAS_STEP * CANVAS_STEP
    if span is SpanKind.SELECTION:
        wanted = -(-count(text[start:end]) // CANVAS_STEP) * CANVAS_STEP
        canvas_lengths: tuple[int, ...] = (min(max(wanted, CANVAS_STEP), cap),)
    else:
        canvas_lengths = tuple(n for n in _CANVAS_LENGTHS[span] if n <= cap) or (cap,)

    return InfillRequest(
        prefix=text[prefix_start:start],
        suffix=text[end:suffix_end],
        language=language,
        span=span,
        canvas_lengths=canvas_lengths,
        start=start,
        end=end,
        prefix_start=prefix_start,
        suffix_end=suffix_end,
        indent=line_text[: len(line_text) - len(line_text.lstrip(" \t"))],
        in_string=in_string,
        in_comment=in_comment,
        inside_word=end < len(text) and (text[end].isalnum() or text[end] == "_"),
        replaced=text[start:end],
        incomplete=span is SpanKind.BLOCK
        or (
            spec is not None
            and span is not SpanKind.SELECTION
            and not in_string
            and not in_comment
            and (
                _dangling(text[lines.start(cursor_line) : start], text[end : lines.end(lines.line_of(end))], spec)
                or (tree is not None and _error_starts_on_line(tree, index, lines, cursor_line))
            )
        ),
    )


# --- span ---------------------------------------------------------------------------------------------


_COMPLETE_ENDINGS = ("++", "--", "...", "*/", "import *")  # end in an operator character, but need nothing more
_NUMBER_WITH_POINT = re.compile(r"(?:^|[^\w.])\d+\.$")  # ``1.``: a float literal, not an attribute access
_LAST_WORD = re.compile(r"(?:^|\W)(\w+)$")
_ONLY_CLOSERS = re.compile(r"[\s)\]};]*")


def _dangling(before: str, after: str, spec: Language) -> bool:
    """Whether the line's code up to the cursor (`before`) needs more, with only closers in `after` (its rest)."""
    code = before.rstrip()
    if not code or code.endswith(_COMPLETE_ENDINGS) or _NUMBER_WITH_POINT.search(code):
        return False
    if not _ONLY_CLOSERS.fullmatch(after):  # ``x = |(a + b)``: the operand is already there
        return False
    if code.endswith(",") and not after.strip():  # a trailing comma at a line end: the next line goes on
        return False
    if spec.dangling_operator.search(code):
        return True
    word = _LAST_WORD.search(code)
    return word is not None and word.group(1) in spec.dangling_words


def _error_starts_on_line(tree: Any, index: Utf8Index, lines: LineTable, line: int) -> bool:
    """Whether an ERROR node of ``tree`` starts on ``line``, or a MISSING node lies on it.

    Not an ERROR node that merely covers the line: an unclosed bracket far above can make one that runs to the
    end of the file.
    """
    lo, hi = index.byte_offset(lines.start(line)), index.byte_offset(lines.end(line))
    stack = [tree.root_node] if tree.root_node.has_error else []
    while stack:
        node = stack.pop()
        if node.end_byte < lo or node.start_byte > hi:
            continue
        if (node.is_error or node.is_missing) and lo <= node.start_byte <= hi:
            return True
        stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return False


def _span_at(text: str, lines: LineTable, offset: int, spec: Language | None) -> tuple[SpanKind, int, int]:
    """Span kind and middle range for a cursor without a selection."""
    line = lines.line_of(offset)
    line_start, line_end = lines.start(line), lines.end(line)
    offset = min(offset, line_end)  # between \r and \n: the end of the line
    line_text = text[line_start:line_end]
    stripped = line_text.strip()
    maybe_body = not stripped or (spec is not None and stripped in spec.hole_markers)
    if maybe_body and spec is not None and _is_sole_body_line(text, lines, line, spec):
        if not stripped:
            return SpanKind.BLOCK, offset, offset
        marker_start = line_start + len(line_text) - len(line_text.lstrip())
        marker_end = marker_start + len(stripped)
        if stripped in spec.hole_markers and marker_start <= offset <= marker_end:
            return SpanKind.BLOCK, marker_start, marker_end
    if text[line_start:offset].strip():
        return SpanKind.REST_OF_LINE, offset, offset
    return SpanKind.LINE, offset, offset


def _indent_width(line: str) -> int:
    """Width of a line's indentation, tabs to multiples of 8 as Python's tokenizer counts them."""
    return len(line[: len(line) - len(line.lstrip(" \t"))].expandtabs(8))


def _is_sole_body_line(text: str, lines: LineTable, line: int, spec: Language) -> bool:
    """Whether ``line`` is the only line of a block body: after a block opener, before its end."""

    def line_text(i: int) -> str:
        return text[lines.start(i) : lines.end(i)]

    header = line - 1
    while header >= 0 and not line_text(header).strip():
        header -= 1
    if header < 0 or not line_text(header).rstrip().endswith(spec.block_openers):
        return False
    after = line + 1
    while after < len(lines) and not line_text(after).strip():
        after += 1
    if after == len(lines):
        return True
    if spec.block_closer is not None:
        return line_text(after).lstrip().startswith(spec.block_closer)
    return _indent_width(line_text(after)) <= _indent_width(line_text(header))


# --- windows ------------------------------------------------------------------------------------------


def _prefix_start(text: str, lines: LineTable, start: int, budget: int, count: Callable[[str], int]) -> int:
    """Start of the widest run of whole lines before ``start`` that fits ``budget`` tokens."""
    line = lines.line_of(start)
    first = lines.start(line)
    used = count(text[first:start])
    for i in range(line - 1, -1, -1):
        used += count(text[lines.start(i) : lines.start(i + 1)])
        if used > budget:
            break
        first = lines.start(i)
    return first


def _suffix_end(text: str, lines: LineTable, end: int, budget: int, count: Callable[[str], int]) -> int:
    """End (before the terminator) of the widest run of whole lines after ``end`` that fits ``budget``."""
    line = lines.line_of(end)
    last = max(lines.end(line), end)
    used = count(text[end:last])
    for i in range(line + 1, len(lines)):
        used += count(text[lines.end(i - 1) : lines.end(i)])
        if used > budget:
            break
        last = lines.end(i)
    return last


def _body_ancestors(tree: Any, byte: int, bodies: frozenset[str]) -> list[Any]:
    """Nodes of a statement-list type that contain ``byte``, innermost first."""
    node = tree.root_node.descendant_for_byte_range(byte, byte)
    found = []
    while node is not None:
        if node.type in bodies:
            found.append(node)
        node = node.parent
    return found


def _snap_to_syntax(
    tree: Any,
    index: Utf8Index,
    lines: LineTable,
    spec: Language,
    start: int,
    end: int,
    prefix_start: int,
    suffix_end: int,
) -> tuple[int, int]:
    """Move window cuts onto statement boundaries when one is within the slack of the cut.

    A cut prefix may start later, at the start of a statement in a body that encloses the cursor (a
    top-level definition, a method, a statement of the enclosing function); a cut suffix may end
    earlier, at the end of the line where such a statement ends. Uncut windows stay as they are.
    """
    data = index.data
    if prefix_start > 0:
        limit = min(
            prefix_start + int((start - prefix_start) * _SYNTAX_SLACK),
            lines.start(lines.line_of(start)),
        )
        lo, hi = index.byte_offset(prefix_start), index.byte_offset(limit)
        best = None
        for body in _body_ancestors(tree, index.byte_offset(start), spec.bodies):
            for child in _children_from(body, lo):
                b = child.start_byte
                if b > hi:
                    break
                if child.is_named and b >= lo and (best is None or b < best) and _at_line_start(data, b):
                    best = b
        if best is not None:
            prefix_start = lines.start(lines.line_of(index.offset_from_byte(best)))
    if suffix_end < len(index.text):
        cursor_line_end = lines.end(lines.line_of(end))
        limit = max(suffix_end - int((suffix_end - end) * _SYNTAX_SLACK), cursor_line_end)
        lo, hi = index.byte_offset(limit), index.byte_offset(suffix_end)
        best = None
        for body in _body_ancestors(tree, index.byte_offset(end), spec.bodies):
            for child in _children_from(body, max(lo - 1, 0)):
                if child.start_byte > hi:
                    break
                b = child.end_byte
                if child.is_named and lo <= b <= hi and (best is None or b > best):
                    best = b
        if best is not None:
            node_end = index.offset_from_byte(best)
            line = lines.line_of(node_end)
            if node_end == lines.start(line) and line > 0:  # the node ended with its line's terminator
                line -= 1
            suffix_end = max(lines.end(line), cursor_line_end)
    return prefix_start, suffix_end


def _children_from(body: Any, byte: int) -> Iterator[Any]:
    """Children of ``body`` from the first one that ends after ``byte``.

    Through a tree cursor: ``Node.first_child_for_byte`` crashes the interpreter (tree-sitter 0.26.1)
    when no child ends after the byte.
    """
    cursor = body.walk()
    if cursor.goto_first_child_for_byte(byte) is None:
        return
    yield cursor.node
    while cursor.goto_next_sibling():
        yield cursor.node


def _at_line_start(data: bytes, byte: int) -> bool:
    """Whether only spaces and tabs stand between ``byte`` and the start of its line."""
    line_start = max(data.rfind(b"\n", 0, byte), data.rfind(b"\r", 0, byte)) + 1
    return not data[line_start:byte].strip(b" \t")


# --- strings and comments -----------------------------------------------------------------------------
