"""Syntax-guided denoising: tree-sitter finds where a middle breaks the parse, the guide names those tokens."""

from __future__ import annotations

from dgls.context import build_request
from dgls.engine import Engine, EngineOptions, syntax_guide
from dgls.languages import SpanChecker
from dgls.model.infill import Infiller


def test_span_checker_blames_the_middle_not_the_window():
    text = "def f(a):\n    return \n"
    at = text.index("return ") + 7
    check = SpanChecker("python", text, at, at)
    assert check.error_spans("a + 1") == []
    assert check.error_spans("a +") and all(0 <= s <= e <= 3 for s, e in check.error_spans("a +"))
    # a window that starts inside a construct has an error of its own before the span: not the middle's fault
    window = "        y = 2\n    z = \n"
    at = window.index("z = ") + 4
    assert SpanChecker("python", window, at, at).error_spans("3") == []
    assert SpanChecker("text", "x", 0, 0).error_spans("(") is None  # no grammar: nothing to check


def test_guide_flags_the_tokens_that_break_the_parse(tiny_loaded):
    """With the real tokenizer: `a + b)` in `return |` -> the `)` token (and nothing else) goes back to noise."""
    inf = Infiller(tiny_loaded)
    text = "def f(a, b):\n    return \n"
    request = build_request(text, text.index("return ") + 7, language="python")
    guide = syntax_guide(inf, request)
    assert guide is not None
    good, bad = inf.tokenize("a + b"), inf.tokenize("a + b)")
    assert guide(0, good) == []
    flagged = guide(0, bad)
    assert flagged and all(k >= len(good) - 1 for k in flagged)  # the close paren (the token holding it)
    assert guide.renoised == len(flagged)


def test_no_guide_without_a_grammar(tiny_loaded):
    request = build_request("hello \n", 6, language="text")
    assert syntax_guide(Infiller(tiny_loaded), request) is None


def test_engine_reports_syntax_renoised_and_the_switch_works(tiny_checkpoint):
    """A random model writes broken code: guided, some tokens are renoised for syntax; unguided, none."""
    engine = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu"))
    engine.wait_ready()
    try:
        text = "def f(a, b):\n    return \n"
        request = engine.build_request(text, text.index("return ") + 7, language="python")
        off = engine.complete(request, min_tokens=1, syntax_guided=False)
        on = engine.complete(request, min_tokens=1, syntax_guided=True)
        assert off.syntax_renoised == 0 and on.syntax_renoised > 0
        assert not on.cached  # a different request for the result cache
    finally:
        engine.shutdown()


def test_with_the_document_the_guide_checks_in_the_whole_file_without_parsing_it_again(tiny_loaded):
    """Given the text the request was built on, the guide's checker works on the document's own cached tree (the
    context parsed it); without it, on the request's window."""
    from dgls.languages import parse
    from dgls.text import Utf8Index

    inf = Infiller(tiny_loaded)
    text = "import os\n\n\ndef f(a, b):\n    return \n"
    request = build_request(text, text.index("return ") + 7, language="python")
    checker = syntax_guide(inf, request, text).check.__self__
    assert checker.tree is parse("python", text, Utf8Index(text).data)  # the cache's tree: no second parse
    assert (checker.start, checker.end) == (request.start, request.end)
    assert syntax_guide(inf, request, text).check("a + b)") and not syntax_guide(inf, request, text).check("a + b")
    window = syntax_guide(inf, request).check.__self__
    assert window.index.data == (request.prefix + request.suffix).encode()
