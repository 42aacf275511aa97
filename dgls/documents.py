"""Open documents, and LSP positions, ranges and edits <-> code-point offsets in the negotiated encoding.

Every position the handlers read and every range or edit they send goes through :class:`Documents`; the line
and code-unit arithmetic under it is :mod:`dgls.text`. Documents are pygls' workspace (kept with LSP's line
rules by :mod:`dgls.transport`); they are never read from disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import Workspace

from dgls.languages import language_for_path
from dgls.postprocess import Edit
from dgls.text import LineTable, PositionEncoding, PositionError, units


@dataclass
class Doc:
    """A snapshot of an open document: its text, version, language and line table."""

    uri: str
    text: str
    version: int | None
    language: str
    lines: LineTable


class Documents:
    """The open documents as :class:`Doc` snapshots, and the conversions between LSP and offsets."""

    def __init__(self, workspace: Callable[[], Workspace | None]) -> None:
        self._workspace = workspace  # None before initialize
        self._tables: dict[str, LineTable] = {}

    @property
    def encoding(self) -> PositionEncoding:
        """The position encoding negotiated with the client."""
        ws = self._workspace()
        enc = ws.position_encoding if ws is not None else None
        return PositionEncoding(str(getattr(enc, "value", enc) or "utf-16"))

    def get(self, uri: str) -> Doc | None:
        """The open document `uri`, or None (never read from disk: unknown and closed URIs are None)."""
        # pygls keys documents by the percent-decoded URI (file:///a%20b.py is stored as file:///a b.py)
        ws = self._workspace()
        if ws is None or unquote(uri) not in ws.text_documents:
            return None
        d = ws.get_text_document(uri)
        text = d.source
        table = self._tables.get(uri)
        if table is None or table.text is not text:
            table = self._tables[uri] = LineTable(text)
        return Doc(uri, text, d.version, d.language_id or language_for_path(uri), table)

    def open_texts(self) -> list[tuple[str, str]]:
        """Every open document as ``(uri, text)``."""
        ws = self._workspace()
        return [] if ws is None else [(uri, d.source) for uri, d in list(ws.text_documents.items())]

    def forget(self, uri: str) -> None:
        """Drop what is kept for `uri` (document closed)."""
        self._tables.pop(uri, None)

    def offset(self, doc: Doc, pos: types.Position) -> int | None:
        """Code-point offset of an LSP position, or None for a line outside the document."""
        if pos.line >= len(doc.lines):
            return None
        try:
            return doc.lines.offset_at(pos.line, pos.character, self.encoding)
        except PositionError:
            return None

    def position(self, doc: Doc, offset: int) -> types.Position:
        """LSP position of a code-point offset."""
        line, character = doc.lines.position_at(offset, self.encoding)
        return types.Position(line=line, character=character)

    def range(self, doc: Doc, start: int, end: int) -> types.Range:
        """LSP range of code-point offsets."""
        return types.Range(start=self.position(doc, start), end=self.position(doc, end))

    def spans(self, text: str, spans: list[tuple[int, int]]) -> list[list[int]]:
        """Code-point ranges of `text` as ``[start, end]`` in the negotiated encoding's units (as LSP characters)."""
        enc = self.encoding
        return [[units(text[:start], enc), units(text[:end], enc)] for start, end in spans]

    def versioned_edit(self, doc: Doc, edits: list[Edit]) -> types.WorkspaceEdit:
        """A WorkspaceEdit that applies only to the version of `doc` the edits were computed on."""
        text_edits = [types.TextEdit(range=self.range(doc, e.start, e.end), new_text=e.new_text) for e in edits]
        return types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
                    edits=text_edits,
                )
            ]
        )
