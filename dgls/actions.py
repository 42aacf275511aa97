"""What the code actions work on: hole markers in a range, and an instruction turned into a prompt.

No LSP types and no model here: offsets in, offsets and requests out.
"""

from __future__ import annotations

import re
from dataclasses import replace

from dgls.context import InfillRequest
from dgls.languages import line_comment
from dgls.text import LineTable

__all__ = ["find_holes", "with_instruction"]


def find_holes(text: str, markers: tuple[str, ...], start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Code-point ranges of hole markers between `start` and `end`: lines holding only a marker (indent aside).

    One regular-expression pass (code actions are asked for on every cursor move, documents can be large: about
    0.1 s for 9 MB). Lines end at ``\n`` or ``\r\n``; a file using bare ``\r`` line ends has no holes.
    """
    end = len(text) if end is None else end
    if not markers:
        return []
    alternatives = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
    pattern = re.compile(rf"(?m)^[ \t]*({alternatives})[ \t]*\r?$")
    return [m.span(1) for m in pattern.finditer(text) if m.start(1) >= start and m.end(1) <= end]


def with_instruction(request: InfillRequest, text: str, instruction: str) -> InfillRequest:
    """The request with `instruction` as a comment line just above the line where the middle starts."""
    instruction = " ".join(instruction.split())
    if not instruction:
        return request
    lines = LineTable(text)
    line_start = lines.start(lines.line_of(request.start))
    line_start = max(line_start, request.prefix_start)
    comment = f"{request.indent}{line_comment(request.language)} {instruction}\n"
    prefix = text[request.prefix_start : line_start] + comment + text[line_start : request.start]
    return replace(request, prefix=prefix)
