"""Postprocess: middle -> edit (range, closers, rest-of-line cut, trailing blank lines), parse check, ranking."""

from __future__ import annotations

from dataclasses import dataclass

from dgls.context import SpanKind, build_request
from dgls.languages import count_syntax_errors
from dgls.postprocess import make_edits, shape_middle
from dgls.text import Edit, apply_edits


@dataclass
class S:
    text: str
    score: float = 0.0
    confidence: float = 1.0


def at(text: str, marker: str = "|", **kw):
    offset = text.index(marker)
    text = text.replace(marker, "", 1)
    return text, build_request(text, offset, language=kw.pop("language", "python"), **kw)


def apply(text, edit):
    return apply_edits(text, [Edit(edit[0], edit[1], edit[2])])


def test_rest_of_line_cut_at_first_newline():
    text, req = at("x = |\nprint(x)\n")
    assert req.span is SpanKind.REST_OF_LINE
    assert shape_middle(text, req, "1 + 2   \ny = 3\n") == (4, 4, "1 + 2")


def test_closer_already_on_the_line_is_replaced_not_duplicated():
    text, req = at("print(|)\n")
    edit = shape_middle(text, req, '"hi")')
    assert edit == (6, 7, '"hi")')
    assert apply(text, edit) == 'print("hi")\n'
    text, req = at("f(g(|))\n")
    assert apply(text, shape_middle(text, req, "1))")) == "f(g(1))\n"
    assert apply(text, shape_middle(text, req, "1)")) == "f(g(1))\n"
    assert apply(text, shape_middle(text, req, "1")) == "f(g(1))\n"  # nothing to replace


def test_trailing_whitespace_lines_stripped_and_suffix_kept():
    text, req = at("def f(a):\n    |\n\nprint(f(1))\n")
    assert req.span is SpanKind.BLOCK
    edit = shape_middle(text, req, "return a\n   \n\n")
    assert edit[2] == "return a"
    assert apply(text, edit) == "def f(a):\n    return a\n\nprint(f(1))\n"


def test_whitespace_only_middle_is_nothing():
    text, req = at("x = |\n")
    assert shape_middle(text, req, "  \n \n") is None
    assert shape_middle(text, req, "") is None


def test_selection_of_whole_lines_keeps_its_line_break():
    text = "a = 1\nb = 2\nc = 3\n"
    start, end = text.index("b"), text.index("c")
    req = build_request(text, start, language="python", selection=(start, end))
    edit = shape_middle(text, req, "b = 20")
    assert apply(text, edit) == "a = 1\nb = 20\nc = 3\n"


def test_hole_marker_is_replaced():
    text, req = at("def f():\n    .|..\n")
    assert (req.start, req.end) == (13, 16)
    assert apply(text, shape_middle(text, req, "return 1")) == "def f():\n    return 1\n"


def test_syntax_errors_counted():
    assert count_syntax_errors("python", b"x = 1\n") == 0
    assert count_syntax_errors("python", b"x = (1\n") >= 1
    assert count_syntax_errors("text", b"anything (") is None


def test_make_edits_drops_parse_breakers_and_ranks():
    text, req = at("def f(a):\n    return |\n\nprint(f(1))\n")
    edits = make_edits(
        text,
        req,
        [
            S("a + (1", score=-0.1),
            S("a + 1", score=-2.0),
            S("a * 2", score=-1.0),
            S("a * 2\n", score=-3.0),
            S("   ", score=0.0),
        ],
    )
    assert [e.new_text for e in edits] == ["a * 2", "a + 1"]  # broken one dropped, duplicate merged, blank gone
    assert all(e.no_new_syntax_errors is True and e.parses is True for e in edits)


def test_make_edits_when_the_original_does_not_parse():
    text, req = at("x = [1, 2|\ny = 3\n")
    edits = make_edits(text, req, [S("]"), S(", 3]"), S("))))")])
    got = {e.new_text for e in edits}
    assert "]" in got and ", 3]" in got  # fixing or keeping the error count is fine
    assert all(e.no_new_syntax_errors is True for e in edits)


def test_parses_says_whether_the_document_parses_not_whether_errors_grew():
    """`, 4` leaves `[1, 2, 4` unclosed: no new error, but the file does not parse (the old syntax_ok said true);
    the middle that makes the file parse ranks first even with a lower score."""
    text, req = at("x = [1, 2|\ny = 3\n")
    edits = make_edits(text, req, [S(", 4", score=-0.1), S("]", score=-5.0)])
    assert [(e.new_text, e.parses) for e in edits] == [("]", True), (", 4", False)]


def test_unknown_language_is_not_checked():
    text, req = at("hello |world\n", language="text")
    (edit,) = make_edits(text, req, [S("big ")])
    assert edit.no_new_syntax_errors is None and edit.parses is None and edit.new_text == "big"


def test_whitespace_before_the_cursor_is_not_written_twice():
    text, req = at("def f(simple):\n    return |\n")
    assert apply(text, shape_middle(text, req, " simple")) == "def f(simple):\n    return simple\n"
    text, req = at("def f():\n    |\n")  # the cursor after a 4-space indent; the model wrote one more space
    assert apply(text, shape_middle(text, req, " x = 1\n    return x")) == "def f():\n    x = 1\n    return x\n"
    text, req = at("x = (1,|)\n")  # no whitespace before the cursor: the middle's own space stays
    assert apply(text, shape_middle(text, req, " 2)")) == "x = (1, 2)\n"


def test_token_confidence_follows_the_middle_onto_the_edit():
    text, req = at("def f(a, b):\n    return |\n")
    # the middle as sampled: a blank the line already has, then 'a + b' and a new line the edit drops
    middle = S(" a + b\n", 0.0, 0.5)
    middle.tokens = ((0, 2, 0.9), (2, 4, 0.2), (4, 6, 0.8), (6, 7, 0.1))  # " a", " +", " b", "\n"
    (edit,) = make_edits(text, req, [middle])
    assert edit.new_text == "a + b"
    assert edit.tokens == ((0, 1, 0.9), (1, 3, 0.2), (3, 5, 0.8))


def test_token_spans_decode_cumulatively():
    from dgls.model.infill import token_spans

    pieces = {1: "ab", 2: "\xc3", 3: "\xa9", 4: "c"}  # 2 and 3: one character in two byte tokens

    def decode(ids):
        return bytes("".join(pieces[i] for i in ids), "latin-1").decode("utf-8", "replace")

    assert token_spans(decode, [1, 4], [0.5, 0.25]) == ((0, 2, 0.5), (2, 3, 0.25))
    spans = token_spans(decode, [1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6])
    assert spans[-1][1] == len(decode([1, 2, 3, 4])) and all(s <= e for s, e, _ in spans)


def test_completion_edit_starts_at_the_word_before_the_cursor():
    from dgls.postprocess import Edit, from_word_start

    text = "def f(a_1, b):\n    return a_1\n"
    cursor = text.index("a_1\n") + 3
    widened = from_word_start(text, Edit(cursor, cursor, " + b", tokens=((0, 2, 0.5), (2, 4, 0.9))))
    assert (widened.start, widened.end, widened.new_text) == (text.index("a_1\n"), cursor, "a_1 + b")
    assert widened.tokens == ((3, 5, 0.5), (5, 7, 0.9))
    after_space = text.index("return ") + 7
    plain = Edit(after_space, after_space, "b")
    assert from_word_start(text, plain) is plain
