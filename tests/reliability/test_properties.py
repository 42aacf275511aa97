"""Bad input, property-based: any text, any position, any edit sequence.

Texts mix arbitrary code points with the troublemakers: lone surrogates (a JSON decoder puts them in a str),
combining marks, emoji, NUL, every line terminator LSP knows (CRLF, CR, LF) and characters that Python's
``str.splitlines`` treats as line breaks but LSP does not (form feed, U+2028, NEL, ...).

Properties: only the documented error types escape (:class:`~dgls.text.PositionError`,
:class:`~dgls.context.ContextError`); offsets round-trip through positions and UTF-8 bytes; tree-sitter's byte
offsets land where dgls.text says; the document the server keeps (pygls' workspace, with dgls' LSP line rules)
after any sequence of incremental edits equals a reference model of the text (a str and slicing).
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lsprotocol import types

from dgls.context import ContextBudget, ContextError, build_request
from dgls.text import LineTable, PositionEncoding, PositionError, Utf8Index, offset_at, position_at
from dgls.transport import _LspWorkspace

ODD = [
    "\r\n",
    "\r",
    "\n",
    "\x00",
    "\u0301",
    "e\u0301",
    "😀",
    "👩‍👩‍👧",
    "\ud800",
    "\udfff",
    "é",
    "\t",
    "\x0c",
    "\x0b",
    "\u2028",
    "\u2029",
    "\x85",
    "\x1c",
    "\ufeff",
    "日本",
    "(",
    ")",
    ":",
    '"',
    "#",
    "    ",
    "def f():",
    "...",
    "pass",
]
ENCODINGS = st.sampled_from(list(PositionEncoding))
LANGUAGES = st.sampled_from(["python", "text", "plaintext", "javascript", "rust", "go", "c", "", "no-such-lang"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.lists(st.one_of(st.sampled_from(ODD), st.characters(), st.text(max_size=5)), max_size=40).map("".join)
clean_texts = texts.map(lambda t: t.encode("utf-8", "ignore").decode())  # no lone surrogates
ints = st.one_of(st.integers(-3, 60), st.integers(-(2**63), 2**63))


@FAST
@given(text=texts, line=ints, character=ints, encoding=ENCODINGS)
def test_any_position_gives_a_nameable_offset_or_position_error(text, line, character, encoding):
    try:
        off = offset_at(text, line, character, encoding)
    except PositionError:
        assert line < 0 or character < 0
        return
    assert 0 <= off <= len(text)
    again = offset_at(text, *position_at(text, off, encoding), encoding)
    assert again == off or text[again:off] == "\r"  # the middle of a CRLF is named by the end of its line


@FAST
@given(text=texts, encoding=ENCODINGS, data=st.data())
def test_offsets_round_trip_through_positions_and_bytes(text, encoding, data):
    table, index = LineTable(text), Utf8Index(text)
    off = data.draw(st.integers(0, len(text)))
    assume(text[off - 1 : off + 1] != "\r\n")  # LSP cannot name the middle of a CRLF
    line, character = table.position_at(off, encoding)
    assert table.offset_at(line, character, encoding) == off
    byte = index.byte_offset(off)
    assert byte == len(text[:off].encode("utf-8", "surrogatepass"))
    assert index.offset_from_byte(byte) == off


@FAST
@given(text=texts, byte=st.integers(-5, 400))
def test_any_byte_offset_maps_to_a_code_point_or_position_error(text, byte):
    index = Utf8Index(text)
    try:
        off = index.offset_from_byte(byte)
    except PositionError:
        assert not 0 <= byte <= len(index.data)
        return
    assert 0 <= off <= len(text)
    assert index.byte_offset(off) <= byte  # snapped back to the start of the character


@FAST
@given(text=clean_texts)
def test_tree_sitter_byte_offsets_match(text):
    from tree_sitter import Parser

    from dgls.languages import grammar

    index = Utf8Index(text)
    tree = Parser(grammar("python")).parse(index.data)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        start, end = index.offset_from_byte(node.start_byte), index.offset_from_byte(node.end_byte)
        assert text[start:end].encode() == index.data[node.start_byte : node.end_byte]


@FAST
@given(
    text=texts,
    offset=ints,
    language=LANGUAGES,
    selection=st.none() | st.tuples(ints, ints),
    prefix_tokens=st.integers(1, 64),
    suffix_tokens=st.integers(0, 64),
    max_canvas=st.integers(0, 300),
)
def test_build_request_never_raises_anything_but_context_error(
    text, offset, language, selection, prefix_tokens, suffix_tokens, max_canvas
):
    try:
        r = build_request(
            text,
            offset,
            language=language,
            selection=selection,
            max_canvas=max_canvas,
            budget=ContextBudget(prefix_tokens, suffix_tokens),
        )
    except ContextError:
        return
    assert 0 <= r.prefix_start <= r.start <= r.end <= r.suffix_end <= len(text)
    assert r.prefix == text[r.prefix_start : r.start] and r.suffix == text[r.end : r.suffix_end]
    assert r.canvas_lengths and all(0 < n <= max(max_canvas, 16) for n in r.canvas_lengths)
    if selection is not None and selection[0] < selection[1]:
        assert (r.start, r.end) == selection


# --- the server's documents: pygls' workspace + dgls' line rules vs a str ----------------------------------


@st.composite
def edit_sequences(draw):
    """An initial text and a sequence of (start, end, new_text) code-point edits on the evolving text."""
    text = draw(texts)
    edits, current = [], text
    for _ in range(draw(st.integers(1, 12))):
        a = draw(st.integers(0, len(current)))
        b = draw(st.integers(a, len(current)))
        if current[a - 1 : a + 1] == "\r\n":
            a -= 1
        if current[b - 1 : b + 1] == "\r\n":
            b += 1
        new = draw(texts)
        edits.append((a, b, new))
        current = current[:a] + new + current[b:]
    return text, edits


def lsp_position(text: str, offset: int, encoding: PositionEncoding) -> types.Position:
    line, character = position_at(text, offset, encoding)
    return types.Position(line=line, character=character)


@FAST
@given(case=edit_sequences(), encoding=ENCODINGS)
def test_incremental_edits_match_a_reference_text(case, encoding):
    text, edits = case
    ws = _LspWorkspace(None, position_encoding=encoding.value)
    uri = "file:///prop/doc.txt"
    ws.put_text_document(types.TextDocumentItem(uri=uri, language_id="plaintext", version=0, text=text))
    reference = text
    for version, (a, b, new) in enumerate(edits, 1):
        rng = types.Range(start=lsp_position(reference, a, encoding), end=lsp_position(reference, b, encoding))
        ws.update_text_document(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            types.TextDocumentContentChangePartial(range=rng, text=new),
        )
        reference = reference[:a] + new + reference[b:]
        assert ws.get_text_document(uri).source == reference


@FAST
@given(
    text=texts,
    line=st.integers(0, 50),
    character=st.integers(0, 2**31 - 1),
    encoding=ENCODINGS,
    new=st.text(max_size=4),
)
def test_positions_past_the_end_clamp_as_lsp_says(text, line, character, encoding, new):
    """A character past the line's end means the end of the line; a line past the end, the end of the text."""
    ws = _LspWorkspace(None, position_encoding=encoding.value)
    uri = "file:///prop/clamp.txt"
    ws.put_text_document(types.TextDocumentItem(uri=uri, language_id="plaintext", version=0, text=text))
    pos = types.Position(line=line, character=character)
    ws.update_text_document(
        types.VersionedTextDocumentIdentifier(uri=uri, version=1),
        types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=new),
    )
    at = offset_at(text, line, character, encoding)
    assert ws.get_text_document(uri).source == text[:at] + new + text[at:]
