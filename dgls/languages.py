"""What dgls knows about each language: the table, the tree-sitter grammars, one parse cache, syntax checks.

One row per LSP language id (:data:`LANGUAGES`): the grammar wheel, the node types whose children are statements,
how blocks open and close, the line comment, the string quotes, the hole markers and what makes a line
unfinished. Context (windows, spans), the code actions (an instruction as a comment) and post-processing (does a
candidate keep the document parsing) all read this table and share :func:`parse`'s cache, so a request parses its
document once; a candidate is checked by an incremental re-parse of that tree (:func:`errors_after_edit`).

Grammars come from the official per-language wheels (``tree_sitter_python`` ...), imported lazily: a language
whose wheel is missing, or that is unknown, has no grammar and never raises.
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dgls.text import LineTable, Utf8Index

__all__ = [
    "LANGUAGES",
    "Language",
    "count_syntax_errors",
    "errors_after_edit",
    "grammar",
    "language_for_path",
    "line_comment",
    "parse",
    "language_spec",
    "string_or_comment",
    "tree_errors",
]

MAX_PARSE_BYTES = 1_000_000  # larger documents are not parsed (a full parse costs ~0.2 s a MB)


# Code ending in one of these needs an operand. Not in the C-like set: ``>`` (generics, JSX), ``/`` (regex
# literals, ``*/``), ``?`` and ``!`` (Rust's ``?``, TypeScript's non-null ``!``), ``*`` (``import *``-like).
_C_LIKE_DANGLING = re.compile(r"(?:[-=+%&|^<,(\[{.~]|->|=>|::|&&|\|\||[=!<>]=|\*\*|>>)$")
_PYTHON_DANGLING = re.compile(r"(?:[-=+*/%&|^<>,(\[{.~@]|->|:=)$")


@dataclass(frozen=True)
class Language:
    """What context needs to know about one language."""

    grammar: tuple[str, str] | None  # (wheel module, function returning the language pointer)
    bodies: frozenset[str]  # node types whose children are statements: the cut points
    block_openers: tuple[str, ...]  # a line ending in one of these opens a block
    block_closer: str | None  # a line starting with this closes one; None: blocks end by dedent
    line_comment: str
    quotes: tuple[str, ...]  # string delimiters, longest first
    hole_markers: tuple[str, ...] = ()  # a line holding only this, as a whole body, is a hole
    dangling_words: frozenset[str] = frozenset()  # a line ending in one of these keywords needs more on it
    dangling_operator: re.Pattern[str] = _C_LIKE_DANGLING  # code ending in a match of this needs more
    structured: bool = True  # False: a row for its comment marker only (context treats it as plain text)


def _c_like(grammar: tuple[str, str] | None, bodies: set[str], quotes: tuple[str, ...], words: str) -> Language:
    return Language(grammar, frozenset(bodies), ("{",), "}", "//", quotes, (), frozenset(words.split()))


_JS_BODIES = {"program", "statement_block", "class_body"}
_JS_QUOTES = ("`", '"', "'")
_C_WORDS = "return if while for switch case sizeof struct enum union typedef static const else do goto"
_JS_WORDS = (
    "await new typeof instanceof in of const let var import export from function class extends case throw delete void"
)

# LSP language id -> language. Add a language by adding a row; its wheel is imported on first use.
LANGUAGES: dict[str, Language] = {
    "python": Language(
        ("tree_sitter_python", "language"),
        frozenset({"module", "block"}),
        (":",),
        None,
        "#",
        ('"""', "'''", '"', "'"),
        ("...", "pass"),
        frozenset(
            {
                "and",
                "or",
                "not",
                "in",
                "is",
                "if",
                "elif",
                "else",
                "for",
                "while",
                "with",
                "as",
                "import",
                "from",
                "lambda",
                "assert",
                "del",
                "await",
                "async",
                "def",
                "class",
                "except",
            }
        ),
        _PYTHON_DANGLING,
    ),
    "javascript": _c_like(("tree_sitter_javascript", "language"), _JS_BODIES, _JS_QUOTES, _JS_WORDS),
    "javascriptreact": _c_like(("tree_sitter_javascript", "language"), _JS_BODIES, _JS_QUOTES, _JS_WORDS),
    "typescript": _c_like(("tree_sitter_typescript", "language_typescript"), _JS_BODIES, _JS_QUOTES, _JS_WORDS),
    "typescriptreact": _c_like(("tree_sitter_typescript", "language_tsx"), _JS_BODIES, _JS_QUOTES, _JS_WORDS),
    "go": _c_like(
        ("tree_sitter_go", "language"),
        {"source_file", "block", "statement_list"},
        ('"', "`", "'"),
        "import package var const type func go defer range case",
    ),
    "rust": _c_like(
        ("tree_sitter_rust", "language"),
        {"source_file", "block", "declaration_list"},
        ('"',),
        "let mut use fn impl struct enum mod trait type as in match if while for pub dyn where move",
    ),
    "c": _c_like(("tree_sitter_c", "language"), {"translation_unit", "compound_statement"}, ('"', "'"), _C_WORDS),
    "cpp": _c_like(
        ("tree_sitter_cpp", "language"),
        {"translation_unit", "compound_statement", "declaration_list", "field_declaration_list"},
        ('"', "'"),
        _C_WORDS + " new delete throw using namespace co_return co_await",
    ),
    "java": _c_like(
        ("tree_sitter_java", "language"),
        {"program", "block", "class_body", "interface_body"},
        ('"""', '"', "'"),
        "return new throw instanceof import package extends implements case assert",
    ),
    "ruby": Language(
        ("tree_sitter_ruby", "language"),
        frozenset({"program", "body_statement", "then", "else", "do"}),
        block_openers=("do", "|"),
        block_closer="end",
        line_comment="#",
        quotes=('"', "'", "`"),
        dangling_words=frozenset(
            "and or not if unless while until return yield def class module when in require".split()
        ),
    ),
    "shellscript": Language(
        ("tree_sitter_bash", "language"),
        frozenset({"program", "compound_statement", "do_group"}),
        block_openers=("then", "do", "{"),
        block_closer=None,
        line_comment="#",
        quotes=('"', "'"),
        dangling_words=frozenset("if then elif else while until do in case export local".split()),
        dangling_operator=re.compile(r"(?:[|=(]|&&|\|\|)$"),
    ),
    "json": _c_like(("tree_sitter_json", "language"), {"document", "object", "array"}, ('"',), ""),
    "lua": Language(
        ("tree_sitter_lua", "language"),
        frozenset({"chunk", "block"}),
        block_openers=("then", "do", ")"),
        block_closer="end",
        line_comment="--",
        quotes=('"', "'"),
        dangling_words=frozenset("and or not if elseif while until for in return local function then do".split()),
    ),
}
# the same languages under the ids other clients use (Neovim's filetypes)
LANGUAGES.update(jsonc=LANGUAGES["json"], sh=LANGUAGES["shellscript"], bash=LANGUAGES["shellscript"])
# languages known only by their line comment (what "Rewrite selection" writes an instruction as)
LANGUAGES.update(
    {
        name: Language(None, frozenset(), (), None, comment, (), structured=False)
        for name, comment in (("yaml", "#"), ("toml", "#"), ("sql", "--"), ("text", "#"))
    }
)

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascriptreact",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "typescriptreact",
    ".go": "go", ".rs": "rust",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".java": "java", ".kt": "kotlin", ".swift": "swift", ".cs": "csharp", ".rb": "ruby", ".php": "php",
    ".lua": "lua", ".sh": "shellscript", ".bash": "shellscript", ".sql": "sql",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".md": "markdown",
    ".html": "html", ".css": "css",
}  # fmt: skip


def language_for_path(path: str) -> str:
    """LSP language id for a file path or URI by its extension (``"x.py"`` -> ``"python"``), else ``"text"``."""
    return _EXTENSIONS.get(PurePosixPath(path).suffix.lower(), "text")


def language_spec(language: str) -> Language | None:
    """The row context works with for a language id; None when dgls knows nothing of its structure."""
    row = LANGUAGES.get(language)
    return row if row is not None and row.structured else None


def line_comment(language: str) -> str:
    """The line-comment marker of an LSP language id (``//`` for the C-like ones and anything unknown)."""
    row = LANGUAGES.get(language)
    return row.line_comment if row is not None else "//"


@functools.cache
def grammar(language: str) -> Any | None:
    """Load the tree-sitter ``Language`` for a language id; None when it has no grammar or no wheel."""
    spec = LANGUAGES.get(language)
    if spec is None or spec.grammar is None:
        return None
    module_name, function = spec.grammar
    try:
        from tree_sitter import Language

        return Language(getattr(importlib.import_module(module_name), function)())
    except (ImportError, AttributeError, ValueError):
        return None


_parse_lock = threading.Lock()
_last_parse: tuple[str, str, Any] | None = None  # (language, text, tree): the last document parsed


def parse(language: str, text: str, data: bytes) -> Any | None:
    """Tree-sitter tree of ``text`` (reused when the last call parsed the same text), or None."""
    global _last_parse
    language_ = grammar(language)
    if language_ is None or len(data) > MAX_PARSE_BYTES:
        return None
    with _parse_lock:
        last = _last_parse
        if last is not None and last[0] == language and last[1] == text:
            return last[2]
        from tree_sitter import Parser

        tree = Parser(language_).parse(data)
        _last_parse = (language, text, tree)
        return tree


# --- syntax errors ------------------------------------------------------------------------------------


def count_syntax_errors(language: str, data: bytes) -> int | None:
    """ERROR and MISSING nodes tree-sitter finds in `data`; None when the language has no grammar."""
    language_ = grammar(language)
    if language_ is None:
        return None
    from tree_sitter import Parser

    return _count_errors(Parser(language_).parse(data).root_node)


def tree_errors(tree: Any | None) -> int | None:
    """ERROR and MISSING nodes of a tree from :func:`parse`; None for no tree (no grammar, too large)."""
    return None if tree is None else _count_errors(tree.root_node)


def errors_after_edit(language: str, text: str, index: Utf8Index, start: int, end: int, new_text: str) -> int | None:
    """Syntax errors of `text` with ``text[start:end]`` replaced by `new_text`; None when it is not parsed.

    Re-parses incrementally from the cached tree of `text` (:func:`parse`, which the request's context built), so
    each candidate costs a re-parse of the region it touches, not of the whole document.
    """
    tree = parse(language, text, index.data)
    if tree is None:
        return None
    return _count_errors(_reparse(language, tree, index, start, end, new_text))


class SpanChecker:
    """Where candidate fillings of one span of a text are inside syntax errors (syntax-guided denoising).

    The text is the whole document (its tree from :func:`parse`'s cache, which the request's context built: no new
    parse) or, when the caller has only the request, its window around the middle (parsed once, into a tree of its
    own); each check is an incremental re-parse of the region the filling touches. Errors the text already had
    before the span was filled (a window cut in the middle of a construct) are not blamed on the filling.
    """

    def __init__(self, language: str, text: str, start: int, end: int, *, document: bool = False) -> None:
        self.language, self.start, self.end = language, start, end
        self.index = Utf8Index(text)
        g = grammar(language)
        self.tree = None
        self.old: set[tuple[int, int]] = set()  # the text's own errors (byte ranges) before the span is filled
        if g is not None and len(self.index.data) <= MAX_PARSE_BYTES:
            from tree_sitter import Parser

            tree = parse(language, text, self.index.data) if document else Parser(g).parse(self.index.data)
            if tree is not None:
                self.tree = tree
                self.old = {(n.start_byte, n.end_byte) for n in _innermost_errors(tree.root_node)}

    def error_spans(self, new_text: str) -> list[tuple[int, int]] | None:
        """Code-point ranges of `new_text` in syntax errors of the filled text; [] when none, None when unparsed.

        The innermost ERROR nodes (only the tokens the parser could not place, where it says which) and the
        MISSING nodes (an empty range where the parser wanted a token). A new error that does not touch the new
        text (``if`` alone on a line: the parser fails on the next line) is blamed on its end: ``(len, len)``.
        """
        if self.tree is None:
            return None
        root = _reparse(self.language, self.tree, self.index, self.start, self.end, new_text)
        lo = self.index.byte_offset(self.start)
        new = new_text.encode("utf-8", "surrogatepass")
        hi = lo + len(new)
        shift = hi - self.index.byte_offset(self.end)  # where the text after the span moved to
        spans = []
        for node in _innermost_errors(root):
            a0, b0 = node.start_byte, node.end_byte
            if (a0 <= lo or a0 >= hi) and (b0 <= lo or b0 >= hi):  # not inside the new text: was it there before?
                unfilled = (a0 if a0 <= lo else a0 - shift, b0 if b0 <= lo else b0 - shift)
                if unfilled in self.old:
                    continue  # the text's own error, the same before the span was filled
            if node.end_byte < lo or node.start_byte > hi:  # caused by the new text, found away from it
                spans.append((len(new_text), len(new_text)))
                continue
            # in an ERROR node, the parser kept the subtrees it could build (named children) and skipped the
            # tokens it could not place: blame those when the new text holds any, else the whole node
            parts = [c for c in node.children if not c.is_named and c.start_byte < hi and c.end_byte > lo]
            for part in parts or [node]:
                a, b = max(part.start_byte, lo), min(part.end_byte, hi)
                if a < b or (a == b and lo <= a <= hi and part.is_missing):
                    spans.append(
                        (len(new[: a - lo].decode("utf-8", "ignore")), len(new[: b - lo].decode("utf-8", "ignore")))
                    )
        return spans


def _reparse(language: str, tree: Any, index: Utf8Index, start: int, end: int, new_text: str) -> Any:
    """The root node of ``index``'s text with ``[start:end]`` replaced, re-parsed incrementally from `tree`."""
    lo, hi = index.byte_offset(start), index.byte_offset(end)
    new = new_text.encode("utf-8", "surrogatepass")
    data = index.data[:lo] + new + index.data[hi:]
    edited = tree.copy()
    edited.edit(
        start_byte=lo,
        old_end_byte=hi,
        new_end_byte=lo + len(new),
        start_point=_point(index.data, lo),
        old_end_point=_point(index.data, hi),
        new_end_point=_point(data, lo + len(new)),
    )
    from tree_sitter import Parser

    return Parser(grammar(language)).parse(data, edited).root_node


def _innermost_errors(root: Any) -> list[Any]:
    """MISSING nodes and the ERROR nodes with no ERROR below them, left to right."""
    out: list[Any] = []

    def walk(node: Any) -> bool:  # whether `node`'s subtree holds an error node
        if not node.has_error and not node.is_missing:
            return False
        below = False
        for child in node.children:
            below |= walk(child)
        if node.is_missing or (node.is_error and not below):
            out.append(node)
        return below or node.is_error or node.is_missing

    walk(root)
    return out


def _point(data: bytes, byte: int) -> tuple[int, int]:
    """Tree-sitter's (row, byte column) of a byte offset (rows split at ``\\n``, as tree-sitter counts them)."""
    row = data.count(b"\n", 0, byte)
    return row, byte - (data.rfind(b"\n", 0, byte) + 1)


def _count_errors(root: Any) -> int:
    """Count ERROR/MISSING nodes with a cursor walk that skips error-free subtrees."""
    if not root.has_error:
        return 0
    count = 0
    cursor = root.walk()
    while True:
        node = cursor.node
        descend = node.has_error
        if node.is_error or node.is_missing:
            count += 1
        if descend and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return count


# --- strings and comments -----------------------------------------------------------------------------


def string_or_comment(
    text: str, lines: LineTable, index: Utf8Index, tree: Any | None, spec: Language | None, offset: int
) -> tuple[bool, bool]:
    """Whether ``offset`` is inside a string literal, inside a comment.

    From the tree when there is one; where the tree has syntax errors and finds neither (an unclosed
    string while typing), or there is no tree, a scan of the line before the cursor decides.
    """
    if spec is None or offset == 0:
        return False, False
    if tree is not None:
        found = _tree_string_or_comment(tree, index.data, index.byte_offset(offset))
        if found != (False, False) or not tree.root_node.has_error:
            return found
    line_start = lines.start(lines.line_of(offset))
    return _scan_line(text[line_start:offset], spec)


def _tree_string_or_comment(tree: Any, data: bytes, byte: int) -> tuple[bool, bool]:
    """String/comment test on the tree: the innermost string, substitution or comment around ``byte``."""
    node = tree.root_node.descendant_for_byte_range(byte - 1, byte)  # the node holding the char before
    while node is not None:
        kind = node.type
        inside = node.start_byte < byte < node.end_byte
        if "comment" in kind:
            closed = data[node.end_byte - 2 : node.end_byte] == b"*/"  # a block comment
            return False, inside or (byte == node.end_byte and not closed)
        if kind in ("interpolation", "template_substitution") and inside:
            return False, False  # code inside f"{...}" or `${...}`
        if "string" in kind and inside and not kind.startswith("concatenated"):  # not between "a" "b"
            return True, False
        node = node.parent
    return False, False


def _scan_line(before: str, spec: Language) -> tuple[bool, bool]:
    """Scan one line's text before the cursor for an open string or a line comment."""
    quote: str | None = None
    i = 0
    while i < len(before):
        if quote is not None:
            if before[i] == "\\":
                i += 2
            elif before.startswith(quote, i):
                i += len(quote)
                quote = None
            else:
                i += 1
            continue
        if before.startswith(spec.line_comment, i):
            return False, True
        quote = next((q for q in spec.quotes if before.startswith(q, i)), None)
        i += len(quote) if quote else 1
    return quote is not None, False
