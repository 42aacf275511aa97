"""Code-action helpers: hole markers in a range, the instruction as a comment line in the prefix."""

from dgls.actions import find_holes, with_instruction
from dgls.context import build_request
from dgls.languages import line_comment

SRC = "def f():\n    ...\n\nx = ...\n\ndef g():\n    pass\n  ...  \n"


def test_find_holes_whole_lines_only():
    first = SRC.index("    ...") + 4
    last = SRC.index("  ...  ") + 2
    assert find_holes(SRC, ("...",)) == [(first, first + 3), (last, last + 3)]  # `x = ...` is not a hole
    g = SRC.index("    pass") + 4
    assert find_holes(SRC, ("...", "pass"), SRC.index("def g"), len(SRC)) == [(g, g + 4), (last, last + 3)]
    assert find_holes(SRC, ("...",), 0, first + 1) == []  # a hole must lie inside the range


def test_instruction_goes_above_the_middle_line():
    text = "def f(a):\n    return a + 1\n"
    start, end = text.index("return"), len(text) - 1
    req = build_request(text, start, language="python", selection=(start, end))
    out = with_instruction(req, text, "  multiply\n by two ")
    assert out.prefix == "def f(a):\n    # multiply by two\n    "
    assert (out.start, out.end, out.suffix) == (req.start, req.end, req.suffix)
    assert with_instruction(req, text, "   ") == req
    assert line_comment("typescript") == "//" and line_comment("lua") == "--"


def test_find_holes_with_crlf_and_longest_marker_first():
    text = "def f():\r\n    ...\r\n    pass  \r\n"
    dots, ps = text.index("..."), text.index("pass")
    assert find_holes(text, ("...", "pass")) == [(dots, dots + 3), (ps, ps + 4)]
    assert find_holes("# TODO!\n# TODO\n", ("# TODO", "# TODO!")) == [(0, 7), (8, 14)]
    assert find_holes(text, ()) == []
