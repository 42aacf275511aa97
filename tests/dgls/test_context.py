import dataclasses
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dgls import languages
from dgls.context import (
    ContextBudget,
    ContextError,
    InfillRequest,
    SpanKind,
    build_request,
)
from dgls.languages import language_for_path
from dgls.text import LineTable, split_lines

EMOJI = "\U0001f600"
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)


def at(marked: str, **kwargs) -> InfillRequest:
    """Build a request for a text with the cursor written as `|` (one, not in the rest of the text)."""
    offset = marked.index("|")
    return build_request(marked.replace("|", "", 1), offset, **kwargs)


def py(marked: str, **kwargs) -> InfillRequest:
    return at(textwrap.dedent(marked), language="python", **kwargs)


def check_invariants(text: str, req: InfillRequest) -> None:
    table = LineTable(text)
    assert req.prefix == text[req.prefix_start : req.start]
    assert req.suffix == text[req.end : req.suffix_end]
    assert 0 <= req.prefix_start <= req.start <= req.end <= req.suffix_end <= len(text)
    assert req.prefix_start == table.start(table.line_of(req.prefix_start))  # cut at a line start
    assert req.suffix_end == table.end(table.line_of(req.suffix_end))  # cut at a line end
    # the cursor's line is never cut
    assert req.prefix_start <= table.start(table.line_of(req.start))
    assert req.suffix_end >= table.end(table.line_of(req.end))
    assert req.canvas_lengths and all(n % 16 == 0 and n > 0 for n in req.canvas_lengths)


# A module of 40 small functions, each line ~20 characters.
FUNCS = "".join(f"def f{i}(x):\n    y = x + {i}\n    z = y * 2\n    return z\n\n" for i in range(40))


# --- windows and budgets ------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["python", None])
@pytest.mark.parametrize("budget", [ContextBudget(50, 20), ContextBudget(300, 120), ContextBudget(0, 0)])
def test_budget_respected_with_counting_function(language, budget):
    for offset in range(0, len(FUNCS), 37):
        req = build_request(FUNCS, offset, language=language, budget=budget, count_tokens=len)
        check_invariants(FUNCS, req)
        table = LineTable(FUNCS)
        line = table.line_of(req.start)
        # count=len: a window's token count is its length; only the cursor's own line may exceed it
        assert len(req.prefix) <= budget.prefix_tokens or req.prefix_start == table.start(line)
        assert len(req.suffix) <= budget.suffix_tokens or req.suffix_end == table.end(line)


def test_whole_document_fits_when_budget_allows():
    req = build_request(FUNCS, 500, language="python", count_tokens=len, budget=ContextBudget(10**6, 10**6))
    assert (req.prefix_start, req.suffix_end) == (0, len(FUNCS))


def test_current_line_kept_even_over_budget():
    text = "a = 1\n" + "x" * 500 + "|" + "y" * 500 + "\nb = 2\n"
    req = at(text, language="python", budget=ContextBudget(10, 10), count_tokens=len)
    assert req.prefix == "x" * 500
    assert req.suffix == "y" * 500


def test_tokens_counted_per_line_near_the_cursor_only():
    text = "".join(f"line {i} = {i}\n" for i in range(5000))
    calls = []

    def count(s):
        calls.append(s)
        return len(s.split())

    req = build_request(text, text.index("line 2500 "), budget=ContextBudget(60, 30), count_tokens=count)
    assert max(len(s) for s in calls) <= len("line 9999 = 9999\n")  # never the document
    assert len(calls) < 40  # stops when the budget is spent
    assert req.prefix.count("\n") == 15 and req.suffix.count("\n") == 6  # 4 tokens a line


def test_default_estimate_is_about_three_characters_a_token():
    req = build_request(FUNCS, len(FUNCS) // 2, budget=ContextBudget(100, 50))
    assert 200 <= len(req.prefix) <= 300
    assert 80 <= len(req.suffix) <= 150


def test_prefix_cut_moves_to_a_definition_start():
    start = FUNCS.index("def f20")
    offset = FUNCS.index("return z", start)
    for budget in range(60, 260, 7):
        by_line = build_request(FUNCS, offset, budget=ContextBudget(budget, 40), count_tokens=len)
        by_syntax = build_request(FUNCS, offset, language="python", budget=ContextBudget(budget, 40), count_tokens=len)
        check_invariants(FUNCS, by_syntax)
        window = offset - by_line.prefix_start
        moved = by_syntax.prefix_start - by_line.prefix_start
        assert 0 <= moved <= window // 4
        # a function start lies in the slack: the prefix begins with it
        slack = FUNCS[by_line.prefix_start : by_line.prefix_start + window // 4]
        if by_line.prefix_start > 0 and ("\ndef " in slack or slack.startswith("def ")):
            assert by_syntax.prefix.startswith("def "), budget
        if moved:
            assert by_syntax.prefix.startswith(("def ", "    ")), budget


def test_suffix_cut_moves_to_a_definition_end():
    offset = FUNCS.index("def f20")
    for budget in range(40, 260, 7):
        by_line = build_request(FUNCS, offset, budget=ContextBudget(40, budget), count_tokens=len)
        by_syntax = build_request(FUNCS, offset, language="python", budget=ContextBudget(40, budget), count_tokens=len)
        check_invariants(FUNCS, by_syntax)
        window = by_line.suffix_end - offset
        moved = by_line.suffix_end - by_syntax.suffix_end
        assert 0 <= moved <= window // 4
        if moved:
            assert by_syntax.suffix.endswith("return z"), budget


def test_cut_at_a_method_inside_a_long_class():
    methods = "".join(f"    def m{i}(self):\n        a = {i}\n        return a\n\n" for i in range(30))
    text = "class C:\n" + methods
    offset = text.index("return a", text.index("def m20"))
    snapped = 0
    for budget in range(60, 400, 11):
        by_line = build_request(text, offset, budget=ContextBudget(budget, 10), count_tokens=len)
        req = build_request(text, offset, language="python", budget=ContextBudget(budget, 10), count_tokens=len)
        check_invariants(text, req)
        slack = text[by_line.prefix_start : by_line.prefix_start + (offset - by_line.prefix_start) // 4]
        if "\n    def m" in slack or slack.startswith("    def m"):
            assert req.prefix.startswith("    def m"), budget
            snapped += 1
    assert snapped > 5


def test_no_cut_inside_an_uncut_window():
    text = "import os\n\n\ndef f():\n    return os.sep\n"
    req = build_request(text, text.index("return"), language="python")
    assert (req.prefix_start, req.suffix_end) == (0, len(text))  # the empty last line included


# --- span kinds ---------------------------------------------------------------------------------------


def test_rest_of_line():
    req = py("x = foo(|)\n")
    assert req.span is SpanKind.REST_OF_LINE
    assert req.canvas_lengths == (16,)
    assert req.start == req.end == 8
    assert req.suffix.startswith(")")


@pytest.mark.parametrize(
    "marked",
    [
        "x = 1\n|\ny = 2\n",
        "x = 1\n    |\ny = 2\n",
        "def f():\n    x = 1\n    |\n    return x\n",
        "x = 1\n|y = 2\n",  # only whitespace before the cursor: lines go in front of the code
        "|",
    ],
)
def test_line(marked):
    req = py(marked)
    assert req.span is SpanKind.LINE
    assert req.canvas_lengths == (32, 16)


@pytest.mark.parametrize(
    "marked",
    [
        "def f(x):\n    |",
        "def f(x):\n    |\n",
        "def f(x):\n|\n",
        "def f(x):\n\n    |\n\n\ndef g():\n    pass\n",
        "class A:\n    def f(self):\n        |\n\n    def g(self):\n        pass\n",
        "if x:\n    |\nelse:\n    y = 1\n",
        "def f(x):  \n    |  \nprint(1)\n",
    ],
)
def test_empty_block_body(marked):
    req = py(marked)
    assert req.span is SpanKind.BLOCK
    assert req.canvas_lengths == (64, 32)
    assert req.start == req.end


@pytest.mark.parametrize(
    ("marked", "language", "incomplete"),
    [
        ("x = |\n", "python", True),
        ("def f(items):\n    result = |\n    for i in items:\n        result += i\n", "python", True),  # tree parses
        ("y = f(a, |)\n", "python", True),
        ("from os import |\n", "python", True),
        ("y = a.|\n", "python", True),
        ("if a and |\n", "python", True),
        ("def f() -> |\n", "python", True),
        ("for i in ra|\n", "python", True),  # a syntax error starts on the line
        ("def f(x):\n    |\n", "python", True),  # an empty block body
        ("def f(x):\n    ...|\n", "python", True),  # a hole marker: the middle replaces it
        ("function f() {\n  |\n}\n", "javascript", True),
        ("x = await |\n", "javascript", True),
        ("x = a && |\n", "javascript", True),
        ("let mut |\n", "rust", True),
        ("import |\n", "go", True),
        ("x = 1|\n", "python", False),
        ("x = ...|\n", "python", False),
        ("x = 1.|\n", "python", False),  # a float literal
        ("from os import *|\n", "python", False),
        ("return|\n", "python", False),
        ("print(x)|\n", "python", False),
        ("x = 1  # a =|\n", "python", False),  # in a comment
        ('s = "a + |"\n', "python", False),  # in a string
        ("s = 'a ='|\n", "python", False),
        ("x = 1\n|\ny = 2\n", "python", False),  # a fresh line between complete ones
        ("x = |(a + b)\n", "python", False),  # the operand follows the cursor
        ("foo(a, |'x')\n", "python", False),
        ("[\n    1,\n    2,|\n    3,\n]\n", "python", False),  # a trailing comma at a line end
        ("def f():\n    x = foo(1,\n    return x\n\ndef g(y):\n    return y|\n", "python", False),  # error above
        ("foo(:\nx = 1|\n", "python", False),
        ("match x {\n    A => 1,|\n}\n", "rust", False),
        ("let v: Vec<u8>|;\n", "rust", False),
        ("fn f() { g()?|; }\n", "rust", False),
        ("const a = <Foo />|;\n", "typescriptreact", False),
        ("/** doc */|\n", "javascript", False),
        ("x = /ab/|;\n", "javascript", False),
        ("m!|;\n", "typescript", False),
        ("x = |", "plaintext", False),  # no table row for the language
    ],
)
def test_incomplete_where_an_empty_middle_is_not_the_answer(marked, language, incomplete):
    assert at(marked, language=language).incomplete is incomplete


def test_not_a_block_when_the_body_has_lines():
    assert py("def f(x):\n    |\n    return x\n").span is SpanKind.LINE


@pytest.mark.parametrize("marker", ["...", "pass"])
@pytest.mark.parametrize("where", [0, 1, -1])
def test_hole_marker_as_whole_body_is_replaced(marker, where):
    cursor = len(marker) if where == -1 else where
    marked = f"def f(x):\n    {marker[:cursor]}|{marker[cursor:]}\n\nx = 1\n"
    text = marked.replace("|", "")
    req = py(marked)
    assert req.span is SpanKind.BLOCK
    assert text[req.start : req.end] == marker
    assert req.prefix.endswith("def f(x):\n    ")
    assert req.suffix == "\n\nx = 1\n"
    assert req.indent == "    "
    assert not req.inside_word


def test_hole_marker_not_alone_in_body_is_just_code():
    req = py("def f(x):\n    pass|\n    return 1\n")
    assert req.span is SpanKind.REST_OF_LINE
    assert req.start == req.end


def test_block_in_a_brace_language():
    marked = "function f(x) {\n  |\n}\n"
    req = at(marked, language="javascript")
    assert req.span is SpanKind.BLOCK
    assert at("function f(x) {\n  |\n  return x;\n}\n", language="javascript").span is SpanKind.LINE


def test_unknown_language_gets_spans_from_the_line_only():
    req = at("def f(x):\n    |\n", language="cobol")
    assert (req.language, req.span) == ("cobol", SpanKind.LINE)
    req = at('x = "abc|"\n')
    assert (req.language, req.span, req.in_string) == ("text", SpanKind.REST_OF_LINE, False)


@pytest.mark.parametrize(
    "max_canvas, span_text, expected",
    [
        (64, "def f(x):\n    |", (64, 32)),
        (32, "def f(x):\n    |", (32,)),
        (16, "x = 1\n|", (16,)),
        (40, "def f(x):\n    |", (32,)),
        (256, "x = |", (16,)),
    ],
)
def test_canvas_lengths_capped(max_canvas, span_text, expected):
    assert py(span_text, max_canvas=max_canvas).canvas_lengths == expected


def test_max_canvas_below_one_step_is_an_error():
    with pytest.raises(ContextError, match="max_canvas must be at least 16 tokens, got 8"):
        build_request("x", 0, max_canvas=8)


# --- selection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_chars, max_canvas, expected",
    [(3, 64, 16), (16, 64, 16), (17, 64, 32), (40, 64, 48), (100, 64, 64), (60, 50, 48), (40, 256, 48)],
)
def test_selection_canvas_is_its_token_length_rounded_up(n_chars, max_canvas, expected):
    text = "a = [\n" + "x" * n_chars + "\n]\n"
    req = build_request(text, 6, selection=(6, 6 + n_chars), count_tokens=len, max_canvas=max_canvas)
    assert req.span is SpanKind.SELECTION
    assert req.canvas_lengths == (expected,)
    assert (req.prefix, req.suffix) == ("a = [\n", "\n]\n")


def test_selection_windows_and_indent():
    text = "def f(x):\n    y = x + 1\n    return y\n"
    start, end = text.index("x + 1"), text.index("return") + 6
    req = build_request(text, end, language="python", selection=(start, end))
    check_invariants(text, req)
    assert (req.start, req.end) == (start, end)
    assert req.prefix == "def f(x):\n    y = "
    assert req.suffix == " y\n"
    assert req.indent == "    "


def test_empty_selection_is_the_cursor():
    text = "x = 1\n"
    assert build_request(text, 5, selection=(3, 3)).span is SpanKind.REST_OF_LINE


@pytest.mark.parametrize(
    "selection, message",
    [
        ((4, 2), "selection 4..2 is reversed"),
        ((-1, 2), "selection -1..2 is out of range: the document has 5 characters"),
        ((2, 6), "selection 2..6 is out of range"),
    ],
)
def test_bad_selection(selection, message):
    with pytest.raises(ContextError, match=message):
        build_request("x = 1", 0, selection=selection)


# --- strings, comments, words -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marked, in_string, in_comment",
    [
        ('x = "ab|c"\n', True, False),
        ('x = "|abc"\n', True, False),
        ('x = "abc|"\n', True, False),
        ('x = "abc"|\n', False, False),
        ('x = |"abc"\n', False, False),
        ('x = """doc\n\nmo|re"""\n', True, False),
        ('x = f"a{ye|s}b"\n', False, False),  # code inside the interpolation
        ('x = f"a{d["k|"]}b"\n', True, False),
        ('x = "a # b|"\n', True, False),
        ('x = ("a" |"b")\n', False, False),  # between the parts of a concatenated string
        ("x = 1  # com|ment\ny = 2\n", False, True),
        ("x = 1  # comment|\ny = 2\n", False, True),
        ("x = 1  # comment\n|y = 2\n", False, False),
        ("x = 1  |# comment\n", False, False),
        ("# top|", False, True),
        ('x = "abc|', True, False),  # unterminated while typing: the line decides
        ("x = 'it|", True, False),
        ('print("a") + x|  # c\nfoo(\n', False, False),
        ("|", False, False),
    ],
)
def test_in_string_in_comment_python(marked, in_string, in_comment):
    req = py(marked)
    assert (req.in_string, req.in_comment) == (in_string, in_comment)


@pytest.mark.parametrize(
    "marked, inside_word",
    [
        ("foo|bar", True),
        ("foo| bar", False),
        ("foo|_x", True),
        ("foo|9", True),
        ("foo|é", True),
        ("foo|(", False),
        ("foo|", False),
        ("foo|\nbar", False),
    ],
)
def test_inside_word(marked, inside_word):
    assert py(marked).inside_word is inside_word


# --- encodings, newlines, tabs ------------------------------------------------------------------------


def test_non_ascii_before_cursor():
    header = f"# {EMOJI} é 中文 {EMOJI}\n" * 30
    text = header + "".join(f"def f{i}():\n    s = '{EMOJI}中{i}'\n    return s\n\n" for i in range(20))
    offset = text.index("中15'", text.index("def f15")) + 1  # inside the string, after CJK + emoji
    for budget in range(80, 400, 13):
        req = build_request(text, offset, language="python", budget=ContextBudget(budget, 60), count_tokens=len)
        check_invariants(text, req)
        assert req.in_string and not req.in_comment
        assert req.prefix.endswith(f"s = '{EMOJI}中")
        assert req.prefix.startswith(("def ", "    ", "\n", "#"))
        assert req.suffix.startswith("15'")


def test_comment_after_emoji():
    req = py(f"s = '{EMOJI}{EMOJI}'  # {EMOJI} 中|文\n")
    assert (req.in_string, req.in_comment) == (False, True)


def test_syntax_cut_with_multibyte_text():
    body = "".join(f"def f{i}():\n    return 'é中{EMOJI}{i}'\n\n" for i in range(40))
    offset = body.index("return", body.index("def f30"))
    req = build_request(body, offset, language="python", budget=ContextBudget(150, 100), count_tokens=len)
    check_invariants(body, req)
    assert req.prefix.startswith("def f")
    assert req.suffix.endswith("'")


def test_crlf_document():
    text = "def f(x):\r\n    y = 1  # note\r\n    return y\r\n\r\nz = 2\r\n"
    req = build_request(text, text.index("# note") + 3, language="python")
    check_invariants(text, req)
    assert req.in_comment and req.span is SpanKind.REST_OF_LINE
    assert req.suffix_end == len(text)
    cut = build_request(text, text.index("note"), language="python", budget=ContextBudget(99, 5), count_tokens=len)
    assert cut.suffix == "note"  # cut before the \r\n
    block = "def f(x):\r\n    \r\n\r\nz = 2\r\n"
    assert build_request(block, 15, language="python").span is SpanKind.BLOCK
    # between \r and \n: the end of the line
    req = build_request(text, text.index("\r\n") + 1, language="python")
    assert req.start == req.end == text.index("\r\n")
    check_invariants(text, req)


def test_lone_cr_lines():
    text = "a = 1\rb = |\rc = 3"
    req = at(text, language="python", budget=ContextBudget(10, 100), count_tokens=len)
    assert (req.prefix, req.suffix) == ("a = 1\rb = ", "\rc = 3")


def test_tabs():
    req = py("class A:\n\tdef f(self):\n\t\t|\n\n\tdef g(self):\n\t\tpass\n")
    assert req.span is SpanKind.BLOCK
    assert req.indent == "\t\t"
    assert py("if x:\n\t y = 1\n\t |\n").indent == "\t "


# --- edges and errors ---------------------------------------------------------------------------------


def test_empty_document():
    req = build_request("", 0)
    assert (req.prefix, req.suffix, req.start, req.end, req.span) == ("", "", 0, 0, SpanKind.LINE)
    assert build_request("", 0, language="python").span is SpanKind.LINE


def test_cursor_at_start_and_end_of_file():
    text = "x = 1\ny = 2"
    first = build_request(text, 0, language="python")
    assert (first.prefix, first.suffix, first.span) == ("", text, SpanKind.LINE)
    last = build_request(text, len(text), language="python")
    assert (last.prefix, last.suffix, last.span) == (text, "", SpanKind.REST_OF_LINE)


@pytest.mark.parametrize("offset", [-1, 12])
def test_cursor_out_of_range(offset):
    with pytest.raises(ContextError, match=f"cursor offset {offset} is out of range: the document has 11"):
        build_request("x = 1\ny = 2", offset)


def test_language_is_normalised():
    assert build_request("x", 0, language=" Python ").language == "python"
    assert build_request("x", 0, language="").language == "text"


def test_missing_grammar_wheel_falls_back_to_lines(monkeypatch):
    spec = languages.LANGUAGES["python"]
    fake = dataclasses.replace(spec, grammar=("no_such_grammar_wheel", "language"))
    monkeypatch.setitem(languages.LANGUAGES, "fakepython", fake)
    req = at("def f(x):\n    |\n", language="fakepython")
    assert req.span is SpanKind.BLOCK  # line rules still apply
    req = at('x = "ab|c"\n', language="fakepython")
    assert req.in_string  # from the line scan


def test_parse_is_reused_for_the_same_text():
    text = FUNCS + "# unique 1\n"
    data = text.encode()
    assert languages.parse("python", text, data) is languages.parse("python", text, data)


def test_javascript_with_grammar():
    text = "".join(f"function f{i}(x) {{\n  const s = `a${{x}}`;\n  return s;\n}}\n" for i in range(30))
    offset = text.index("return", text.index("function f20"))
    req = build_request(text, offset, language="javascript", budget=ContextBudget(150, 60), count_tokens=len)
    check_invariants(text, req)
    assert req.prefix.startswith("function")
    assert at("const s = `a${x|}`;\n", language="javascript").in_string is False
    assert at("const s = `a|${x}`;\n", language="javascript").in_string is True
    assert at("x = 1; // hi|\n", language="javascript").in_comment is True


@pytest.mark.parametrize(
    "path, language",
    [
        ("x.py", "python"),
        ("/a/B.PY", "python"),
        ("file:///home/u/app.tsx", "typescriptreact"),
        ("main.go", "go"),
        ("lib.rs", "rust"),
        ("Makefile", "text"),
        ("notes.unknownext", "text"),
        ("", "text"),
    ],
)
def test_language_for_path(path, language):
    assert language_for_path(path) == language


# --- properties ---------------------------------------------------------------------------------------

_line = st.one_of(
    st.sampled_from(
        [
            "def f(x):",
            "    return x",
            "    ...",
            "class A:",
            "    pass",
            "",
            "    ",
            "\t",
            "x = 'a é'",
            f"s = '{EMOJI}'  # 中",
            '"""doc',
            "y = [1,",
            "}",
        ]
    ),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12),
)
documents = st.tuples(st.lists(_line, max_size=30), st.sampled_from(["\n", "\r\n", "\r"])).map(
    lambda t: t[1].join(t[0])
)


@SETTINGS
@given(
    documents,
    st.data(),
    st.sampled_from(["python", "javascript", None]),
    st.integers(0, 120),
    st.integers(0, 60),
)
def test_any_document_any_cursor(text, data, language, prefix_tokens, suffix_tokens):
    offset = data.draw(st.integers(0, len(text)))
    budget = ContextBudget(prefix_tokens, suffix_tokens)
    req = build_request(text, offset, language=language, budget=budget, count_tokens=len)
    check_invariants(text, req)
    table = LineTable(text)
    assert len(req.prefix) <= prefix_tokens or req.prefix_start == table.start(table.line_of(req.start))
    assert len(req.suffix) <= suffix_tokens or req.suffix_end == table.end(table.line_of(req.end))
    if req.span is not SpanKind.BLOCK:
        assert req.start == req.end
    lines = split_lines(text)
    assert req.indent == lines[table.line_of(req.start)][: len(req.indent)]


# --- grammars: every common language parses offline, from its pinned wheel -------------------------------

SNIPPETS = {  # language id -> a small valid program, an empty block body marked `@`
    "python": "def f(x):\n    @\n",
    "javascript": "function f(x) {\n  @\n}\n",
    "typescript": "function f(x: number): number {\n  @\n}\n",
    "typescriptreact": "const A = () => {\n  @\n};\nconst b = <div>{1}</div>;\n",
    "go": "package main\n\nfunc f(x int) int {\n\t@\n}\n",
    "rust": "fn f(x: i32) -> i32 {\n    @\n}\n",
    "c": "int f(int x) {\n    @\n}\n",
    "cpp": "template <typename T> T f(T x) {\n    @\n}\n",
    "java": "class A {\n    int f(int x) {\n        @\n    }\n}\n",
    "ruby": "[1, 2].each do |x|\n  @\nend\n",
    "shellscript": "if true; then\n  @\nfi\n",
    "json": '{\n  "a": [1, 2, {"b": null}],\n  "c": "d"\n}\n',
    "lua": "local function f(x)\n  @\nend\n",
}


@pytest.mark.parametrize("language", sorted(SNIPPETS))
def test_grammar_loads_and_parses(language):
    from dgls.languages import count_syntax_errors

    assert languages.grammar(language) is not None, f"no grammar for {language}: is its wheel installed?"
    marked = SNIPPETS[language]
    text = marked.replace("@", "")
    assert count_syntax_errors(language, text.encode()) == 0, text
    assert count_syntax_errors(language, (text + "\n(((\n").encode()) > 0
    if "@" in marked and language != "shellscript":  # bash blocks end in `fi`/`done`: context goes by indent there
        assert build_request(text, marked.index("@"), language=language).span is SpanKind.BLOCK, language


def test_a_kept_prefix_start_stays_while_it_fits_then_moves_past_what_it_must():
    """Typing line after line at the end: without a kept start the window's start moves with every line (the
    encoder cache starts over each time); with it, the start stays while the text from it fits the budget, and
    when it must move it moves a quarter of the budget further, so it then stays for several lines again."""
    lines = [f"x{i} = {i}\n" for i in range(60)]  # 7-8 characters a line, counted as characters
    budget = ContextBudget(100, 10)
    starts_free, starts_kept, kept = [], [], None
    for n in range(20, 60):
        text = "".join(lines[:n])
        free = build_request(text, len(text), budget=budget, count_tokens=len)
        req = build_request(text, len(text), budget=budget, count_tokens=len, keep_prefix_start=kept)
        kept = req.prefix_start
        starts_free.append(free.prefix_start)
        starts_kept.append(kept)
        assert len(req.prefix) <= 100 and text[kept - 1] == "\n"  # within the budget, at a line start
    assert len(set(starts_free)) >= 35  # the plain window moves at nearly every line
    assert len(set(starts_kept)) <= 14  # kept: it moves once every few lines
    assert starts_kept == sorted(starts_kept)


def test_a_kept_prefix_start_that_no_longer_fits_or_is_past_the_cursor_is_not_used():
    text = "".join(f"y{i} = {i}\n" for i in range(40))
    budget = ContextBudget(60, 10)
    natural = build_request(text, len(text), budget=budget, count_tokens=len).prefix_start
    below = text.index("y38")  # a line start later than the natural window's: it fits, so it stays
    assert natural < below
    req = build_request(text, len(text), budget=budget, count_tokens=len, keep_prefix_start=below)
    assert req.prefix_start == below
    up = text.index("y5 ")  # cursor moved up above the kept start: the natural window
    req = build_request(text, up, budget=budget, count_tokens=len, keep_prefix_start=below)
    assert req.prefix_start == build_request(text, up, budget=budget, count_tokens=len).prefix_start
    mid = text.index("y20") + 1  # not a line start: not kept
    req = build_request(text, len(text), budget=budget, count_tokens=len, keep_prefix_start=mid)
    assert req.prefix_start != mid
