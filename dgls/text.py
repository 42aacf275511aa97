"""Text positions: LSP (line, character) in utf-8/16/32 <-> code-point offsets <-> UTF-8 bytes, and edits.

Every offset in dgls is a code-point index into the Python ``str`` of the document. This module is the
only place that converts between that and the other ways of naming a place in a text:

* LSP positions: 0-based line and a 0-based character counted in the negotiated encoding's units
  (UTF-16 code units by default, or UTF-8 bytes, or UTF-32 = code points).
* UTF-8 byte offsets, which tree-sitter speaks.
* 1-based ``line:column`` (columns in code points) as written by compilers, for the headless CLI.

Lines end at ``"\\n"``, ``"\\r\\n"`` or ``"\\r"``, as the LSP specification says; nothing else
(``str.splitlines`` also splits at ``\\v``, ``\\f``, ``\\x1c``, ``\\u2028`` ... and must not be used for
positions). A text ending with a line terminator has an empty last line, so ``"a\\n"`` has two lines.

Lone surrogates (which a JSON decoder can put in a ``str``) count as one UTF-16 unit and three UTF-8
bytes (Python's ``surrogatepass``), so no conversion here ever raises on them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass
from enum import Enum

__all__ = [
    "Edit",
    "LineTable",
    "PositionEncoding",
    "PositionError",
    "Utf8Index",
    "apply_edits",
    "byte_offset",
    "offset_at",
    "offset_from_byte",
    "offset_from_line_col",
    "position_at",
    "split_lines",
    "units",
]

_NEWLINE = re.compile(r"\r\n|\r|\n")


class PositionError(ValueError):
    """A position or offset that does not name a place in the text."""


class PositionEncoding(str, Enum):
    """The unit LSP characters are counted in (``PositionEncodingKind``)."""

    UTF8 = "utf-8"
    UTF16 = "utf-16"
    UTF32 = "utf-32"


def _units(s: str, encoding: PositionEncoding) -> int:
    """Length of ``s`` in ``encoding`` units."""
    if encoding is PositionEncoding.UTF32 or s.isascii():
        return len(s)
    if encoding is PositionEncoding.UTF16:
        return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)
    return len(s.encode("utf-8", "surrogatepass"))


def units(s: str, encoding: PositionEncoding) -> int:
    """Length of ``s`` in ``encoding`` units (what an LSP ``character`` counts)."""
    return _units(s, encoding)


def _char_units(ch: str, encoding: PositionEncoding) -> int:
    """Width of one code point in ``encoding`` units."""
    cp = ord(ch)
    if encoding is PositionEncoding.UTF32:
        return 1
    if encoding is PositionEncoding.UTF16:
        return 2 if cp > 0xFFFF else 1
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


def _index_for_units(s: str, units: int, encoding: PositionEncoding) -> int:
    """Code-point index in ``s`` of the character that ``units`` units from its start fall in.

    A count that falls inside a character (the low half of a surrogate pair, the middle of a multi-byte
    UTF-8 sequence) snaps back to that character's start; a count past the end gives ``len(s)``.
    """
    if encoding is PositionEncoding.UTF32 or s.isascii():
        return min(units, len(s))
    seen = 0
    for i, ch in enumerate(s):
        seen += _char_units(ch, encoding)
        if seen > units:
            return i
    return len(s)


class LineTable:
    """The line starts of one text, for repeated conversions on an unchanged document.

    Building it is one pass over the text; each lookup after that is a bisection.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts: list[int] = [0]
        self._ends: list[int] = []  # content end (before the terminator) of every line but the last
        for m in _NEWLINE.finditer(text):
            self._ends.append(m.start())
            self.starts.append(m.end())

    def __len__(self) -> int:
        """Count the lines (LSP counting: at least one, and one more after a final terminator)."""
        return len(self.starts)

    def start(self, line: int) -> int:
        """Offset where ``line`` (0-based) begins."""
        return self.starts[line]

    def end(self, line: int) -> int:
        """Offset where ``line``'s content ends, before its terminator."""
        return self._ends[line] if line < len(self._ends) else len(self.text)

    def line_of(self, offset: int) -> int:
        """0-based line that ``offset`` lies on; an offset inside a terminator belongs to its line."""
        _check_offset(self.text, offset)
        return bisect.bisect_right(self.starts, offset) - 1

    def offset_at(self, line: int, character: int, encoding: PositionEncoding) -> int:
        """See :func:`offset_at`."""
        if line < 0 or character < 0:
            raise PositionError(f"position ({line}, {character}) is invalid: line and character must not be negative")
        if line >= len(self.starts):
            return len(self.text)
        start = self.starts[line]
        content = self.text[start : self.end(line)]
        return start + _index_for_units(content, character, PositionEncoding(encoding))

    def position_at(self, offset: int, encoding: PositionEncoding) -> tuple[int, int]:
        """See :func:`position_at`."""
        line = self.line_of(offset)
        start = self.starts[line]
        offset = min(offset, self.end(line))
        return line, _units(self.text[start:offset], PositionEncoding(encoding))


def _check_offset(text: str, offset: int) -> None:
    if not 0 <= offset <= len(text):
        raise PositionError(f"offset {offset} is out of range: the text has {len(text)} characters")


def split_lines(text: str) -> list[str]:
    """Split ``text`` into lines without their terminators, the LSP way (``"a\\n"`` -> ``["a", ""]``)."""
    return _NEWLINE.split(text)


def offset_at(text: str, line: int, character: int, encoding: PositionEncoding = PositionEncoding.UTF16) -> int:
    """Code-point offset of the 0-based LSP position ``(line, character)``.

    ``character`` counts ``encoding`` units. As the LSP specification says, a character past the end of
    the line means the end of the line (before its terminator); a line past the last line means the end
    of the text. A character inside a code point (the second half of a surrogate pair in UTF-16, the
    middle of a multi-byte sequence in UTF-8) snaps back to the start of that code point. Negative values
    raise :class:`PositionError`.
    """
    return LineTable(text).offset_at(line, character, encoding)


def position_at(text: str, offset: int, encoding: PositionEncoding = PositionEncoding.UTF16) -> tuple[int, int]:
    """0-based LSP ``(line, character)`` of a code-point offset, ``character`` in ``encoding`` units.

    An offset between the ``\\r`` and ``\\n`` of a CRLF is reported as the end of its line (LSP cannot name
    that place). An offset outside ``0..len(text)`` raises :class:`PositionError`.
    """
    return LineTable(text).position_at(offset, encoding)


class Utf8Index:
    """Code points <-> UTF-8 byte offsets for one text, encoding it once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ascii = text.isascii()
        self.data = text.encode("utf-8", "surrogatepass")

    def byte_offset(self, offset: int) -> int:
        """See :func:`byte_offset`."""
        _check_offset(self.text, offset)
        if self.ascii:
            return offset
        return len(self.text[:offset].encode("utf-8", "surrogatepass"))

    def offset_from_byte(self, byte: int) -> int:
        """See :func:`offset_from_byte`."""
        if not 0 <= byte <= len(self.data):
            raise PositionError(f"byte offset {byte} is out of range: the text has {len(self.data)} bytes")
        if self.ascii:
            return byte
        while byte < len(self.data) and self.data[byte] & 0xC0 == 0x80:  # continuation byte
            byte -= 1
        return len(self.data[:byte].decode("utf-8", "surrogatepass"))


def byte_offset(text: str, offset: int) -> int:
    """UTF-8 byte offset of a code-point offset (what tree-sitter takes); out of range -> PositionError."""
    return Utf8Index(text).byte_offset(offset)


def offset_from_byte(text: str, byte: int) -> int:
    """Code-point offset of a UTF-8 byte offset; a byte inside a multi-byte character snaps to its start.

    A byte offset outside ``0..len(utf-8 bytes)`` raises :class:`PositionError`.
    """
    return Utf8Index(text).offset_from_byte(byte)


def offset_from_line_col(text: str, line: int, col: int) -> int:
    """Code-point offset of a 1-based ``line:col`` as in compiler messages (``file.py:3:5``).

    ``col`` counts code points; ``len(line) + 1`` is the end of the line. After a final line terminator
    the empty last line can be named (``line`` = number of lines + 1, ``col`` 1 = end of the file).
    Anything else out of range raises :class:`PositionError` saying what was given and what is valid.
    """
    table = LineTable(text)
    if line < 1 or line > len(table):
        if not text:
            raise PositionError(f"line {line} is out of range: the file is empty (only 1:1 is valid)")
        n_lines = len(table) - 1 if table.start(len(table) - 1) == len(text) else len(table)
        plural = "line" if n_lines == 1 else "lines"
        raise PositionError(f"line {line} is out of range: the file has {n_lines} {plural}")
    start, end = table.start(line - 1), table.end(line - 1)
    if col < 1 or col > end - start + 1:
        raise PositionError(
            f"column {col} is out of range for line {line}: the line has {end - start} characters "
            f"(columns 1-{end - start + 1})"
        )
    return start + col - 1


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` (code-point offsets) with ``new_text``: a middle placed in a document.

    The one edit type of dgls. Post-processing fills in how the model rated it (``score``, mean ``confidence``,
    ``syntax_ok``: None when not checked) and per token ``(start, end, confidence)`` spans of ``new_text``; an
    edit that did not come from the model (the rest of a ghost text, a test's) keeps the defaults.
    """

    start: int
    end: int
    new_text: str
    _: KW_ONLY  # how it was rated: by name only
    score: float = 0.0
    confidence: float = 1.0
    no_new_syntax_errors: bool | None = None
    parses: bool | None = None
    tokens: tuple[tuple[int, int, float], ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"edit range {self.start}..{self.end} is invalid: need 0 <= start <= end")

    def unsure(self, threshold: float) -> list[tuple[int, int]]:
        """The runs of tokens whose confidence is at most `threshold`, as code-point ranges of ``new_text``."""
        runs: list[tuple[int, int]] = []
        for start, end, confidence in self.tokens:
            if confidence > threshold:
                continue
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        return runs


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits, all given against the original ``text``, in any order.

    Edits that touch (one ends where the next starts) are fine; several insertions at one offset are
    applied in the order given. Overlapping edits, or an edit past the end of the text, raise
    ``ValueError``.
    """
    ordered = sorted(edits, key=lambda e: (e.start, e.end))  # stable: equal insertions keep their order
    parts: list[str] = []
    pos = 0
    prev: Edit | None = None
    for edit in ordered:
        if edit.end > len(text):
            raise ValueError(f"edit {edit.start}..{edit.end} is out of range: the text has {len(text)} characters")
        if prev is not None and edit.start < prev.end:
            raise ValueError(f"edits overlap: {prev.start}..{prev.end} and {edit.start}..{edit.end}")
        parts.append(text[pos : edit.start])
        parts.append(edit.new_text)
        pos = edit.end
        prev = edit
    parts.append(text[pos:])
    return "".join(parts)
