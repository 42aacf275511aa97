"""The transport: LSP over stdio or TCP on pygls, with bounded reads and LSP's line rules for documents.

A ``Content-Length`` beyond :data:`MAX_MESSAGE_BYTES` ends the session cleanly instead of exhausting memory, and a
wrong one loses one message, not the session (:class:`_BoundedReader`). TCP serves one client at a time, on
loopback unless told otherwise (see SECURITY.md). Documents apply incremental changes where LSP says
(:class:`_LspWorkspace`). :class:`HardenedServer` is the ``LanguageServer`` the handlers in :mod:`dgls.server` run
on, speaking :class:`~dgls.protocol.DglsProtocol`; :func:`run` serves it. With :mod:`dgls.protocol`, the only
code that reaches into pygls' internals.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument, Workspace

from dgls import __version__
from dgls.protocol import UNPARSABLE, ClientMistakeFilter, DglsProtocol, client_mistake
from dgls.text import LineTable, PositionEncoding

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_MESSAGE_BYTES = 256 * 2**20  # one JSON-RPC message; a larger Content-Length is a broken or hostile client
MAX_HEADER_BYTES = 64 * 2**10


# --- framing: bounded reads, resynchronised headers ------------------------------------------------------


def _resync(line: bytes) -> bytes:
    """A header line, without bytes before a ``Content-Length`` header in it.

    After a wrong ``Content-Length`` (too short, zero, not a number) the rest of that body has no line end of
    its own, so pygls reads it glued to the next message's header line, never matches that header again, and
    every later message is lost the same way. Cutting the leftover off finds the next header: one message is
    lost (it gets a -32700 reply when part of it was read as a body), the session goes on.
    """
    at = line.find(b"Content-Length:")
    if at > 0:
        log.warning("dropped %d bytes before a Content-Length header (a previous message was framed wrong)", at)
        return line[at:]
    return line


class _BoundedReader:
    """A message reader for pygls' read loop that never allocates more than :data:`MAX_MESSAGE_BYTES`.

    Wraps a blocking binary stream (stdin, for pygls' ``StdinAsyncReader``) or an asyncio ``StreamReader``
    (TCP). A header line longer than :data:`MAX_HEADER_BYTES` is cut (it then matches no header); a body
    larger than :data:`MAX_MESSAGE_BYTES` reads as end of stream, which ends the session (LSP framing has no
    way to find the next message after a bogus length).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readline(self, *_: Any) -> Any:
        """One header line, at most MAX_HEADER_BYTES; see :func:`_resync`."""
        if isinstance(self.stream, asyncio.StreamReader):
            return self._areadline()
        return _resync(self.stream.readline(MAX_HEADER_BYTES))

    async def _areadline(self) -> bytes:
        try:
            line = await self.stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
        except asyncio.LimitOverrunError as exc:  # a line over the stream's limit: hand over a cut piece
            line = await self.stream.readexactly(exc.consumed)
        return _resync(line)

    def _too_big(self, n: int) -> bool:
        if n > MAX_MESSAGE_BYTES:
            log.error(
                "a message announced %d bytes (limit %d): ending the session, the stream cannot be resynchronised",
                n,
                MAX_MESSAGE_BYTES,
            )
            return True
        return False

    def read(self, n: int = -1) -> bytes:
        """The body of a stdin message (pygls calls ``read(content_length)``)."""
        return b"" if self._too_big(n) else self.stream.read(n)

    def readexactly(self, n: int) -> Any:
        """The body of a TCP message."""
        if self._too_big(n):
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(b"")
            return fut
        return self._areadexactly(n)

    async def _areadexactly(self, n: int) -> bytes:
        try:
            return await self.stream.readexactly(n)
        except asyncio.IncompleteReadError:
            return b""


# --- documents: pygls' workspace with LSP's line rules -----------------------------------------------------


class _LspTextDocument(TextDocument):
    """pygls' document, but an incremental change lands where LSP says, through :mod:`dgls.text`.

    pygls 2.1.1 splits lines with ``str.splitlines`` (so a form feed, U+2028, NEL ... start a new line, which
    no LSP client counts) and clamps a character past the end of the last line to one before its end; either
    puts the edit somewhere other than where the client made it, and the texts drift apart for good.
    """

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        table = LineTable(self.source)
        codec = self._position_codec.encoding or "utf-16"
        encoding = PositionEncoding(str(getattr(codec, "value", codec)))
        start = table.offset_at(change.range.start.line, change.range.start.character, encoding)
        end = table.offset_at(change.range.end.line, change.range.end.character, encoding)
        if end < start:  # a reversed range: LSP requires start <= end; take it as the span between them
            start, end = end, start
        self._source = self.source[:start] + change.text + self.source[end:]


class _LspWorkspace(Workspace):
    """pygls' workspace whose text documents apply changes the LSP way (:class:`_LspTextDocument`)."""

    def _create_text_document(
        self, doc_uri: str, source: str | None = None, version: int | None = None, language_id: str | None = None
    ) -> TextDocument:
        return _LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self._position_codec,
        )

    def update_text_document(
        self, text_doc: types.VersionedTextDocumentIdentifier, change: types.TextDocumentContentChangeEvent
    ) -> None:
        if unquote(text_doc.uri) not in self._text_documents:  # a client mistake, not a server error
            log.warning("didChange for %s, which is not open: ignored", text_doc.uri)
            return
        super().update_text_document(text_doc, change)


# --- the server: pygls' LanguageServer on this protocol -----------------------------------------------------


class HardenedServer(LanguageServer):
    """pygls' ``LanguageServer`` on :class:`DglsProtocol`, with one TCP client at a time and LSP's line rules.

    What else the handlers need of pygls' state is here too: the workspace once there is one, whether the
    client said ``shutdown``.
    """

    protocol: DglsProtocol  # what protocol_cls makes

    def __init__(self, name: str, version: str) -> None:
        super().__init__(name, version, protocol_cls=DglsProtocol)

    @property
    def open_workspace(self) -> Workspace | None:
        """The workspace, or None before ``initialize`` (pygls' ``workspace`` raises then)."""
        return self.protocol._workspace

    @property
    def shut_down(self) -> bool:
        """Whether the client sent ``shutdown`` (nothing may be sent to it after that but replies)."""
        return bool(self.protocol._shutdown)

    def use_lsp_line_rules(self) -> None:
        """Make the workspace pygls just made an :class:`_LspWorkspace` (in ``initialize``, before any document)."""
        self.protocol._workspace.__class__ = _LspWorkspace

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log out-of-band errors (no popups for what the user cannot act on); answer a message that is not JSON.

        pygls' read loop calls this when ``json.loads`` fails on a message body (not JSON, not UTF-8, nested too
        deep); JSON-RPC wants a -32700 reply with a null id then, and the loop goes on with the next message.
        """
        if isinstance(error, UNPARSABLE):
            self.protocol.reply_error(None, -32700, f"Parse error: {type(error).__name__}: {error}")
            log.warning("a message body that is not JSON (answered -32700): %s: %s", type(error).__name__, error)
            return
        level = logging.WARNING if client_mistake(error) else logging.ERROR  # the client was answered already
        log.log(level, "%s: %s", getattr(source, "__name__", source), error)

    def start_tcp(self, host: str, port: int) -> None:
        """Serve LSP on TCP, one client at a time, checking the token on the first message when one is required.

        pygls' own ``start_tcp`` accepts any number of connections on one protocol, so a second connection
        takes over the replies meant for the first. Here a second connection is closed at once. The first
        initialized session that ends ends the server, as with pygls; a refused client or a port probe that
        never initialized does not.
        """
        self._stop_event = stop_event = threading.Event()
        busy = False
        exit_request: list[SystemExit] = []  # raised out of a connection callback, asyncio logs a traceback

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal busy
            peer = writer.get_extra_info("peername")
            if busy:
                log.warning("refused a second TCP connection from %s: dgls serves one client at a time", peer)
                writer.close()
                return
            busy = True
            log.info("TCP client connected from %s", peer)
            self.protocol.authenticated, self.protocol.refused = False, False
            self.protocol.set_writer(writer)
            from pygls.io_ import run_async

            try:
                await run_async(
                    stop_event=stop_event,
                    reader=_BoundedReader(reader),
                    protocol=self.protocol,
                    logger=log,
                    error_handler=self.report_server_error,
                )
            except SystemExit as exc:  # pygls ends on `exit` with sys.exit: re-raised once the loop is down
                exit_request.append(exc)
            finally:
                busy = False
                if not writer.is_closing():
                    writer.close()
            refused = self.protocol.required_token is not None and not self.protocol.authenticated
            if refused or self.protocol._workspace is None:
                return  # refused, or gone before initialize (a port probe): keep listening for the real client
            self.shutdown()

        async def listen() -> None:
            self._server = await asyncio.start_server(connection, host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(listen())
        except asyncio.CancelledError:
            log.debug("TCP server stopped")
        if exit_request:
            raise exit_request[0]


# --- entry point --------------------------------------------------------------------------------------------


def run(
    server: HardenedServer,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 2087,
    allow_remote: bool = False,
    token: str | None = None,
) -> int:
    """Serve `server` until the client says exit; returns the process exit code (see :func:`dgls.server.serve`)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # pygls logs every message body at INFO
        logging.getLogger("pygls").setLevel(logging.WARNING)
    for name in ("pygls.protocol.json_rpc", "pygls.protocol.language_server", "pygls.server", "pygls.io_"):
        pygls_log = logging.getLogger(name)
        if not any(isinstance(f, ClientMistakeFilter) for f in pygls_log.filters):
            pygls_log.addFilter(ClientMistakeFilter())
    try:
        if transport == "tcp":
            if host not in LOOPBACK and not allow_remote:
                log.error(
                    "dgls: refusing to listen on %s: not a loopback address (expected one of %s); pass "
                    "--allow-remote to serve other machines",
                    host,
                    ", ".join(LOOPBACK),
                )
                return 2
            scope = "loopback only" if host in LOOPBACK else "REACHABLE FROM OTHER MACHINES"
            auth = "token required" if token else "no token"
            log.warning("dgls %s: serving LSP on tcp://%s:%d (%s, %s)", __version__, host, port, scope, auth)
            server.protocol.required_token = token or None
            server.start_tcp(host, port)
        elif transport == "stdio":
            log.info("dgls %s: serving LSP on stdio", __version__)
            channel = sys.stdout.buffer
            sys.stdout = sys.stderr  # a stray print (a library's progress bar) must not corrupt the LSP stream
            server.start_io(_BoundedReader(sys.stdin.buffer), channel)  # type: ignore[arg-type]
        else:
            raise ValueError(f"transport must be 'stdio' or 'tcp', got {transport!r}")
    except SystemExit as exc:  # pygls ends the process on `exit` this way
        return exc.code if isinstance(exc.code, int) else 0
    return 0 if server.shut_down else 1
