"""The language server: LSP in -> one engine call -> LSP out.

Each handler looks up the document, converts positions through :mod:`dgls.text` in the negotiated encoding,
makes one call on the :class:`~dgls.engine.Engine` (awaited as an asyncio future so ``$/cancelRequest`` reaches
the model worker as a cancel event), and converts the result back. The model loads once, in the background,
after ``initialize``; until it is ready, requests get empty results and the client a ``dgls/status``.

Features: ``textDocument/inlineCompletion`` (ghost text; debounced and filtered on Automatic triggers, which may
get an empty middle unless the code at the cursor is unfinished; several candidates on Invoked ones; answered
from the last ghost text while the user types it), a
``textDocument/completion`` fallback, code actions "Fill holes" and "Regenerate selection" (the model runs in
``codeAction/resolve``), commands ``dgls.rewrite``, ``dgls.showConfig``, ``dgls.restartModel``, and the
``dgls/status`` notification, and the ``dgls/documentHash`` request (the version and SHA-256 of the text the
server holds, so a client or a test can check that its edits were applied exactly). Every edit is a versioned
``TextDocumentEdit``, so a client rejects a stale one.

Transport hardening (see SECURITY.md): TCP serves one client at a time and can require a shared token in the
first message; a message that is not JSON gets a -32700 reply, one that is not a JSON-RPC object -32600; a
``Content-Length`` beyond :data:`MAX_MESSAGE_BYTES` ends the session cleanly instead of exhausting memory.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument, Workspace

from dgls import __version__
from dgls.actions import find_holes, with_instruction
from dgls.context import ContextError, InfillRequest, language_for_path
from dgls.engine import Completion, Engine, EngineOptions, release_freed_memory
from dgls.ghost import Ghost, GhostCache
from dgls.postprocess import Edit, make_edits
from dgls.settings import Settings, parse_settings
from dgls.text import LineTable, PositionEncoding, PositionError

log = logging.getLogger("dgls.server")

STATUS = "dgls/status"
CMD_REWRITE = "dgls.rewrite"
CMD_SHOW_CONFIG = "dgls.showConfig"
CMD_RESTART = "dgls.restartModel"
CMD_APPLY_ACTION = "dgls.applyCodeAction"  # the code actions, for clients that cannot resolve them
ACTION_FILL_HOLES = "fillHoles"
ACTION_REGENERATE = "regenerate"
DOCUMENT_HASH = "dgls/documentHash"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_MESSAGE_BYTES = 256 * 2**20  # one JSON-RPC message; a larger Content-Length is a broken or hostile client
MAX_HEADER_BYTES = 64 * 2**10


class RequestFailed(JsonRpcException):
    """LSP ``RequestFailed``: the request was well formed but cannot be served (model not ready, bad range)."""

    CODE = -32803


# --- protocol: a reply for every request --------------------------------------------------------------


class DglsProtocol(LanguageServerProtocol):
    """pygls' protocol, but every request gets a reply, and a TCP client can be asked for a token.

    pygls never answers a request whose params do not structure (here: -32602), and drops JSON that is not a
    JSON-RPC 2.0 message (here: -32600, with a null id when the id is unusable).
    """

    required_token: str | None = None  # TCP with a token: the first message must be `initialize` carrying it
    authenticated = False
    refused = False  # this connection was refused: drop whatever else it sent

    def structure_message(self, data: dict[str, Any]):
        """Structure one incoming JSON object; answer InvalidParams for a request that does not structure."""
        if "jsonrpc" in data and "method" in data:
            msg_id = data.get("id")
            if isinstance(msg_id, bool) or not isinstance(msg_id, (str, int, float, type(None))):
                self.reply_error(None, -32600, f"Invalid Request: id must be a string or a number, got "
                                               f"{type(msg_id).__name__}")
                return self._ignored()
            if not isinstance(data["method"], str):
                if "id" in data:
                    self.reply_error(msg_id, -32600, f"Invalid Request: method must be a string, got "
                                                     f"{type(data['method']).__name__}")
                return self._ignored()
            if "params" not in data:  # JSON-RPC lets params be left out; pygls' message types require the field
                data = {**data, "params": None}
        try:
            return super().structure_message(data)
        except (JsonRpcInvalidParams, JsonRpcInternalError) as exc:
            cause = exc.__cause__
            detail = _structure_problem(cause) if cause is not None else str(exc)
            method = data.get("method")
            if "id" not in data or "method" not in data:
                log.warning("invalid params in %s: %s (not a request: nothing to answer)",
                            method or "a response", detail)
                raise
            log.warning("invalid params for %s (id %r): %s", method, data.get("id"), detail)
            self._send_response(
                data["id"], None,
                JsonRpcInvalidParams(f"invalid params for {method}: {detail}").to_response_error(),
            )
            return self._ignored()

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None):
        """The handler dispatch of pygls, minus two of its flaws with the handlers it runs on a client's behalf.

        pygls 2.1 files the future of every coroutine, generator or threaded handler under its message id and only
        removes it when it answers a request. A notification (didOpen/didChange/didClose) and the user handler a
        builtin generator yields to (``workspace/executeCommand`` -> a command, didClose, initialize, shutdown ...)
        get a fresh uuid that nothing ever removes: each keystroke kept about 1 KiB (a Future, its Condition and
        lock), and each command its finished task for the life of the server, with the traceback and frames of
        the error it raised. Here those futures are forgotten once done.

        And ``$/cancelRequest`` for a request answered by a generator (``workspace/executeCommand``) cancels the
        generator's future but not the handler it yielded to: a cancelled rewrite ran on and applied its edit.
        Here the yielded handler is cancelled with its request.
        """
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        if isinstance(callback, partial) and callback.func == self._send_handler_result:
            return  # a client's request, under the client's id: pygls pops it when it replies
        future = self._request_futures.get(msg_id)
        if future is None:
            return
        future.add_done_callback(lambda _f: self._request_futures.pop(msg_id, None))  # runs now if done
        outer = callback.keywords.get("result_future") if isinstance(callback, partial) else None
        if outer is not None:  # the handler a generator yielded to: it goes when the generator's request goes
            outer.add_done_callback(lambda f: future.cancel() if f.cancelled() else None)

    def _ignored(self) -> Any:
        """A message already answered here: hand pygls a notification nobody listens to ($/ may be ignored)."""
        return self._converter.structure({"jsonrpc": "2.0", "method": "$/dgls/answered", "params": None},
                                         _ignored_notification_type())

    def reply_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """Send a JSON-RPC error response; a null id is written out (pygls would drop the field)."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def handle_message(self, message: Any) -> None:
        """Dispatch one message; answer -32600 for JSON that is not a JSON-RPC message; check the TCP token."""
        if not hasattr(message, "jsonrpc") or message.jsonrpc != self.VERSION:  # `42`, `[]`, {"id": 1}, ...
            msg_id = message.get("id") if isinstance(message, dict) else getattr(message, "id", None)
            log.warning("not a JSON-RPC 2.0 message: %.200r", message)
            self.reply_error(msg_id if isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool) else None,
                             -32600, 'Invalid Request: expected a JSON-RPC 2.0 object {"jsonrpc": "2.0", '
                                     '"method": ..., "id": ...}')
            return
        if self.required_token is not None and not self.authenticated:
            if self.refused:
                return
            if not _carries_token(message, self.required_token):
                self.refused = True
                log.warning("refused a TCP client: its first message was not an initialize request carrying the "
                            "right token (initializationOptions.token)")
                if getattr(message, "id", None) is not None and getattr(message, "method", None):
                    self._send_response(message.id, None, RequestFailed(
                        "dgls: this server requires a token: send it as initializationOptions.token in "
                        "initialize").to_response_error())
                if self.writer is not None:
                    self.writer.close()  # the read loop sees end of stream and this connection ends
                return
            self.authenticated = True
        super().handle_message(message)


def _carries_token(message: Any, token: str) -> bool:
    """Whether `message` is an initialize request carrying `token` in its initializationOptions.

    The token is looked for at the top level and under "dgls", and compared in constant time.
    """
    if getattr(message, "method", None) != types.INITIALIZE or getattr(message, "id", None) is None:
        return False
    options = getattr(message.params, "initialization_options", None)
    if not isinstance(options, dict):
        return False
    given = options.get("token")
    if given is None and isinstance(options.get("dgls"), dict):
        given = options["dgls"].get("token")
    return isinstance(given, str) and hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                                          token.encode("utf-8", "surrogatepass"))


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
            log.error("a message announced %d bytes (limit %d): ending the session, the stream cannot be "
                      "resynchronised", n, MAX_MESSAGE_BYTES)
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


def _ignored_notification_type():
    from pygls.protocol.json_rpc import JsonRPCNotification

    return JsonRPCNotification


def _structure_problem(exc: BaseException) -> str:
    """One line out of a cattrs structuring error: which field, what was expected."""
    try:
        from cattrs import transform_error

        return "; ".join(transform_error(exc, path="$"))  # type: ignore[arg-type]
    except Exception:  # not a cattrs error: its own message
        return f"{type(exc).__name__}: {exc}"


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

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return _LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                                sync_kind=self._sync_kind, position_codec=self._position_codec)

    def update_text_document(self, text_doc: types.VersionedTextDocumentIdentifier,
                             change: types.TextDocumentContentChangeEvent) -> None:
        if unquote(text_doc.uri) not in self._text_documents:  # a client mistake, not a server error
            log.warning("didChange for %s, which is not open: ignored", text_doc.uri)
            return
        super().update_text_document(text_doc, change)


# --- server state -------------------------------------------------------------------------------------


@dataclass
class _Doc:
    """A snapshot of an open document: its text, version, language and line table."""

    uri: str
    text: str
    version: int | None
    language: str
    lines: LineTable


class DglsServer(LanguageServer):
    """pygls server plus what dgls keeps between requests: settings, the engine, in-flight work, caches."""

    def __init__(self) -> None:
        super().__init__("dgls", __version__, protocol_cls=DglsProtocol)
        self.settings = Settings()
        self.engine: Engine | None = None
        self.inflight: dict[str, threading.Event] = {}  # uri -> cancel event of the newest infill
        self.ghosts = GhostCache()
        self.initialized = False
        self.stats: dict[str, Any] = {"requests": 0, "typedThrough": 0, "resultCache": 0, "cancelled": 0,
                                      "lastLatencyMs": None, "lastNfe": None}
        self._tables: dict[str, LineTable] = {}
        self._load_token: str | None = None
        self.pending_problems: list[str] = []  # settings problems found before the client was initialized
        self.faults_shown: set[str] = set()  # model failures already shown to the user (once each)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Log out-of-band errors (no popups for what the user cannot act on); answer a message that is not JSON.

        pygls' read loop calls this when ``json.loads`` fails on a message body (not JSON, not UTF-8, nested too
        deep); JSON-RPC wants a -32700 reply with a null id then, and the loop goes on with the next message.
        """
        if isinstance(error, _UNPARSABLE):
            self.protocol.reply_error(None, -32700, f"Parse error: {type(error).__name__}: {error}")
            log.warning("a message body that is not JSON (answered -32700): %s: %s", type(error).__name__, error)
            return
        level = logging.WARNING if _client_mistake(error) else logging.ERROR  # the client was answered already
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
            self.protocol.set_writer(writer)  # type: ignore[arg-type]
            from pygls.io_ import run_async

            try:
                await run_async(stop_event=stop_event, reader=_BoundedReader(reader), protocol=self.protocol,
                                logger=log, error_handler=self.report_server_error)
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

    # -- documents ---------------------------------------------------------------------------------------
    @property
    def encoding(self) -> PositionEncoding:
        """The position encoding negotiated with the client."""
        enc = self.workspace.position_encoding if self.protocol._workspace is not None else None
        return PositionEncoding(str(getattr(enc, "value", enc) or "utf-16"))

    def doc(self, uri: str) -> _Doc | None:
        """The open document `uri`, or None (never read from disk: unknown and closed URIs are None)."""
        # pygls keys documents by the percent-decoded URI (file:///a%20b.py is stored as file:///a b.py)
        if self.protocol._workspace is None or unquote(uri) not in self.workspace.text_documents:
            return None
        d = self.workspace.get_text_document(uri)
        text = d.source
        table = self._tables.get(uri)
        if table is None or table.text is not text:
            table = self._tables[uri] = LineTable(text)
        return _Doc(uri, text, d.version, d.language_id or language_for_path(uri), table)

    def forget(self, uri: str) -> None:
        """Drop per-document state and cancel its work (document closed)."""
        self._tables.pop(uri, None)
        self.ghosts.forget(uri)
        cancel = self.inflight.pop(uri, None)
        if cancel is not None:
            cancel.set()

    def offset(self, doc: _Doc, pos: types.Position) -> int | None:
        """Code-point offset of an LSP position, or None for a line outside the document."""
        if pos.line >= len(doc.lines):
            return None
        try:
            return doc.lines.offset_at(pos.line, pos.character, self.encoding)
        except PositionError:
            return None

    def position(self, doc: _Doc, offset: int) -> types.Position:
        """LSP position of a code-point offset."""
        line, character = doc.lines.position_at(offset, self.encoding)
        return types.Position(line=line, character=character)

    def range(self, doc: _Doc, start: int, end: int) -> types.Range:
        """LSP range of code-point offsets."""
        return types.Range(start=self.position(doc, start), end=self.position(doc, end))

    def versioned_edit(self, doc: _Doc, edits: list[Edit]) -> types.WorkspaceEdit:
        """A WorkspaceEdit that applies only to the version of `doc` the edits were computed on."""
        text_edits = [types.TextEdit(range=self.range(doc, e.start, e.end), new_text=e.new_text) for e in edits]
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
            edits=text_edits)])

    # -- the model ---------------------------------------------------------------------------------------
    def engine_options(self) -> EngineOptions:
        """Engine options from the settings."""
        from dgls.context import ContextBudget

        s = self.settings
        return EngineOptions(model=s.model, device=s.device, dtype=s.dtype, experts=s.experts,
                             sampler=s.sampler_overrides(),
                             budget=ContextBudget(s.context_budget.prefix_tokens, s.context_budget.suffix_tokens),
                             max_canvas=s.max_canvas)

    def start_engine(self) -> None:
        """(Re)create the engine from the settings and load the model in the background."""
        old, self.engine = self.engine, Engine(self.engine_options())
        for cancel in self.inflight.values():
            cancel.set()
        if old is not None:
            old.shutdown()
        engine = self.engine
        loop = asyncio.get_event_loop()
        log.info("loading model %s", self.settings.model)
        engine.start().add_done_callback(lambda _f: loop.call_soon_threadsafe(self.on_engine_loaded, engine))

    def on_engine_loaded(self, engine: Engine) -> None:
        """On the event loop: the model finished loading (or failed)."""
        # the engine this one replaced is garbage now, but a model sits in reference cycles (modules, hooks,
        # caches) that only the cyclic collector frees, and its next full pass may be far away: collect now,
        # and hand the freed pages back (a restart kept ~30 MiB of RSS per cycle otherwise)
        gc.collect()
        release_freed_memory()
        if engine is not self.engine or not self.initialized:
            return  # replaced meanwhile, or `initialized` will report it
        self.end_load_progress()
        self.send_status()
        if engine.state == "error":
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Error, message=f"dgls: the model failed to load: {engine.error}"))

    def end_load_progress(self) -> None:
        """Close the model-loading progress, if one is open."""
        if self._load_token is not None and self.engine is not None and self.engine.state != "loading":
            message = "ready" if self.engine.state == "ready" else f"failed: {self.engine.error}"
            self.work_done_progress.end(self._load_token, types.WorkDoneProgressEnd(message=message))
            self._load_token = None

    def status(self) -> dict[str, Any]:
        """What ``dgls/status`` reports."""
        e = self.engine
        out: dict[str, Any] = {"state": e.state if e else "idle", "model": self.settings.model}
        if e is not None and e.info:
            out.update(device=e.info.get("device"), dtype=e.info.get("dtype"), loadMs=e.info.get("load_ms"))
        if e is not None and e.error:
            out["error"] = e.error
        out.update(self.stats)
        return out

    def report_fault(self, message: str) -> None:
        """A request failed in the model: log it and tell dgls/status every time, the user once per message."""
        log.warning("%s", message)
        self.send_status(event="infillFailed", detail=message)
        if message not in self.faults_shown and self.initialized and not self.protocol._shutdown:
            self.faults_shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"dgls: {message}"))

    def send_status(self, **event: Any) -> None:
        """Send ``dgls/status`` with optional event fields (between initialization and shutdown only)."""
        if self.initialized and not self.protocol._shutdown:
            self.protocol.notify(STATUS, {**self.status(), **event})

    def ready_engine(self) -> Engine | None:
        """The engine when it can serve; else report the state through ``dgls/status`` and return None."""
        if self.engine is not None and self.engine.state == "ready":
            return self.engine
        self.send_status()
        return None

    def client_supports_progress(self) -> bool:
        """Whether the client accepts server-initiated work-done progress."""
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)


server = DglsServer()


# --- lifecycle ----------------------------------------------------------------------------------------


@server.feature(types.INITIALIZE)
def on_initialize(ls: DglsServer, params: types.InitializeParams) -> None:
    """Read initializationOptions and start loading the model in the background."""
    ls.protocol._workspace.__class__ = _LspWorkspace  # pygls made it just before; documents come after this
    ls.settings, problems = parse_settings(params.initialization_options)
    ls.pending_problems = problems  # shown once the client is initialized
    ls.start_engine()


@server.feature(types.INITIALIZED)
async def on_initialized(ls: DglsServer, params: types.InitializedParams) -> None:
    """Report settings problems and the loading state; show loading progress."""
    ls.initialized = True
    for problem in ls.pending_problems:
        _show(ls, types.MessageType.Warning, f"dgls settings: {problem}")
    ls.send_status()
    if ls.engine is not None and ls.engine.state == "loading" and ls.client_supports_progress():
        token = f"dgls-load-{uuid.uuid4()}"
        try:
            await ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: no progress bar, the status notification still goes
            log.info("no load progress: %s", exc)
            return
        ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title="dgls", message=f"loading {ls.settings.model}", cancellable=False))
        ls._load_token = token
    if ls.engine is not None and ls.engine.state != "loading":  # finished while the client set up progress
        ls.on_engine_loaded(ls.engine)


@server.feature(types.SHUTDOWN)
def on_shutdown(ls: DglsServer, params: Any) -> None:
    """Cancel everything in flight and stop the model worker."""
    for cancel in ls.inflight.values():
        cancel.set()
    if ls.engine is not None:
        ls.engine.shutdown()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def on_configuration(ls: DglsServer, params: types.DidChangeConfigurationParams) -> None:
    """Overlay the new settings; reload the model when a model setting changed."""
    before = ls.settings
    ls.settings, problems = parse_settings(params.settings, base=before)
    for problem in problems:
        _show(ls, types.MessageType.Warning, f"dgls settings: {problem}")
    if ls.settings.engine_fields() != before.engine_fields():
        ls.start_engine()
        ls.send_status()


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: DglsServer, params: types.DidCloseTextDocumentParams) -> None:
    """Forget the document's caches and cancel its work."""
    ls.forget(params.text_document.uri)


@server.feature(DOCUMENT_HASH)
def document_hash(ls: DglsServer, params: Any) -> dict[str, Any]:
    """``dgls/documentHash`` ``{uri}`` -> ``{uri, version, sha256, length}`` of the text the server holds.

    ``sha256`` is of the text encoded as UTF-8 (lone surrogates as in Python's ``surrogatepass``), ``length``
    counts code points; both are null, and ``version`` too, for a document that is not open. A client compares
    them with its own buffer to check that every didChange was applied exactly (the reliability tests do).
    """
    uri = getattr(params, "uri", None) if not isinstance(params, dict) else params.get("uri")
    if not isinstance(uri, str):
        raise JsonRpcInvalidParams(f"{DOCUMENT_HASH} expects {{\"uri\": string}}, got {params!r}")
    doc = ls.doc(uri)
    if doc is None:
        return {"uri": uri, "version": None, "sha256": None, "length": None}
    digest = hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"uri": uri, "version": doc.version, "sha256": digest, "length": len(doc.text)}


def _show(ls: DglsServer, kind: types.MessageType, message: str) -> None:
    """Tell the user (window/showMessage) and the log."""
    log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
    ls.window_show_message(types.ShowMessageParams(type=kind, message=message))


# --- infill: one engine call, cancellable --------------------------------------------------------------


async def _run(ls: DglsServer, engine: Engine, request: InfillRequest, *, cancel: threading.Event,
               n_candidates: int = 1, explicit: bool = True,
               on_step: Callable[[int, int], None] | None = None) -> Completion | None:
    """Submit one request and await it; None when it was superseded or failed (logged).

    An `explicit` request (the user asked: Invoked trigger, code action, command) may not get an empty middle,
    nor may an automatic one where the code at the cursor is unfinished as it stands (``request.incomplete``:
    ``x = |``, an empty block body), since there an empty middle is not what the user is after.

    On ``$/cancelRequest`` (asyncio cancellation of this task) the cancel event stops the worker at its next
    step; the worker is awaited so the next request finds it free, and the cancellation is re-raised so pygls
    answers -32800.
    """
    ls.stats["requests"] += 1
    t0 = time.perf_counter()
    fut = engine.submit(request, n_candidates=n_candidates, seed=0, cancel=cancel, on_step=on_step,
                        min_tokens=1 if explicit or request.incomplete else 0)
    try:
        done = await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        cancelling = getattr(asyncio.current_task(), "cancelling", lambda: 1)  # Python 3.10: take it as the client's
        if fut.cancelled() and not cancelling():  # the engine dropped it (model restarted), nobody cancelled us:
            ls.stats["cancelled"] += 1  # an empty answer, as for a superseded request, not -32800
            return None
        cancel.set()
        steps = await _stopped(fut)
        ls.stats["cancelled"] += 1
        ls.send_status(event="cancelled", steps=steps)
        raise
    except Exception as exc:
        if cancel.is_set():  # superseded by a newer request, closed document, restart
            ls.stats["cancelled"] += 1
            log.debug("infill superseded after %s step(s)", getattr(exc, "steps", "?"))
        else:
            ls.report_fault(f"the model failed on a request: {exc}")
        return None
    finally:
        # an error raised through `await` carries this frame in its traceback, and the frame holds the future that
        # holds the error: a cycle only the full (rare) collection frees; break it here
        del fut
    ms = (time.perf_counter() - t0) * 1e3
    ls.stats.update(lastLatencyMs=round(ms, 1), lastNfe=done.nfe)
    ls.stats["resultCache"] += done.cached
    log.info("infill %s: %d candidate(s), nfe %d, %.0f ms (model %.0f ms), prefix cache %s%s", request.span.value,
             len(done.suggestions), done.nfe, ms, done.ms, done.prefix_cache, ", result cache" if done.cached else "")
    return done


async def _stopped(fut) -> int | None:
    """Wait for a cancelled worker future to stop; the number of steps it ran (None if it finished)."""
    try:
        await asyncio.shield(asyncio.wrap_future(fut))
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        return getattr(exc, "steps", None)
    finally:
        del fut  # as in _run: no frame -> future -> error -> traceback -> frame cycle
    return None


def _claim(ls: DglsServer, uri: str) -> threading.Event:
    """A cancel event for a new request on `uri`; the one in flight for it is cancelled (newest wins)."""
    previous = ls.inflight.get(uri)
    if previous is not None:
        previous.set()
    cancel = ls.inflight[uri] = threading.Event()
    return cancel


def _release(ls: DglsServer, uri: str, cancel: threading.Event) -> None:
    if ls.inflight.get(uri) is cancel:
        del ls.inflight[uri]


@dataclass
class _Infill:
    doc: _Doc
    request: InfillRequest | None
    edits: list[Edit]


async def _infill_at(ls: DglsServer, uri: str, pos: types.Position, *, automatic: bool, n_candidates: int,
                     token: types.ProgressToken | None = None) -> _Infill | None:
    """The edits for an inline completion at `pos`; None for no answer (see the checks below)."""
    doc = ls.doc(uri)
    if doc is None:
        log.info("no completion: %s is not open", uri)
        return None
    if not ls.settings.languages.enabled(doc.language) or "\x00" in doc.text:
        return None
    offset = ls.offset(doc, pos)
    if offset is None:
        log.info("no completion: line %d is outside %s (%d lines)", pos.line, uri, len(doc.lines))
        return None
    ghost = ls.ghosts.lookup(uri, doc.text, offset) if automatic else None  # Invoked: the user wants fresh ones
    if ghost is not None:
        ls.stats["typedThrough"] += 1
        return _Infill(doc, None, [Edit(ghost.start, ghost.end, ghost.new_text, 0.0, 1.0, None)])
    engine = ls.ready_engine()
    if engine is None:
        return None
    cancel = _claim(ls, uri)
    try:
        if automatic and ls.settings.debounce_ms:
            await asyncio.sleep(ls.settings.debounce_ms / 1e3)
            if cancel.is_set():
                return None  # a newer keystroke superseded this one
            current = ls.doc(uri)
            if current is None or current.text is not doc.text:
                return None
        try:
            request = engine.build_request(doc.text, offset, language=doc.language)
        except ContextError as exc:
            log.info("no completion: %s", exc)
            return None
        if automatic and (request.inside_word or ((request.in_string or request.in_comment)
                                                  and not ls.settings.completion_in_strings)):
            return None
        progress = await _begin_progress(ls, "dgls: infill", cancel, token) if token is not None else None
        try:
            done = await _run(ls, engine, request, cancel=cancel, n_candidates=n_candidates, explicit=not automatic,
                              on_step=_step_reporter(ls, progress, 0, 1))
        finally:
            _end_progress(ls, progress, "cancelled" if cancel.is_set() else "done")
    finally:
        _release(ls, uri, cancel)
    if done is None:
        return None
    edits = make_edits(doc.text, request, done.suggestions)
    if edits:
        best = edits[0]
        ls.ghosts.remember(uri, Ghost(doc.text, best.start, best.end, best.new_text))
    ls.send_status()
    return _Infill(doc, request, edits)


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DglsServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    """Ghost text at the cursor: one candidate on Automatic triggers, several on Invoked ones."""
    automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
    n = 1 if automatic else ls.settings.candidates
    found = await _infill_at(ls, params.text_document.uri, params.position, automatic=automatic, n_candidates=n,
                             token=params.work_done_token)
    if found is None or not found.edits:
        return types.InlineCompletionList(items=[])
    doc = found.doc
    return types.InlineCompletionList(items=[
        types.InlineCompletionItem(insert_text=e.new_text, range=ls.range(doc, e.start, e.end))
        for e in found.edits])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
async def completion(ls: DglsServer, params: types.CompletionParams) -> types.CompletionList:
    """Fallback for clients without inline completion: the middle as a completion item with a textEdit."""
    kind = params.context.trigger_kind if params.context else types.CompletionTriggerKind.Invoked
    automatic = kind != types.CompletionTriggerKind.Invoked
    found = await _infill_at(ls, params.text_document.uri, params.position, automatic=automatic, n_candidates=1)
    items = []
    if found is not None:
        for rank, e in enumerate(found.edits):
            label = e.new_text.strip().splitlines()[0]
            items.append(types.CompletionItem(
                label=label if len(label) <= 60 else label[:57] + "...", kind=types.CompletionItemKind.Snippet,
                detail="dgls", sort_text=f"{rank:04d}", filter_text=e.new_text, documentation=e.new_text,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=ls.range(found.doc, e.start, e.end), new_text=e.new_text)))
    return types.CompletionList(is_incomplete=True, items=items)


# --- code actions -------------------------------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[types.CodeActionKind.RefactorRewrite], resolve_provider=True))
def code_actions(ls: DglsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """Cheap: which actions apply here. The model runs only when one is resolved."""
    doc = ls.doc(params.text_document.uri)
    if doc is None or "\x00" in doc.text:
        return []
    start, end = ls.offset(doc, params.range.start), ls.offset(doc, params.range.end)
    if start is None or end is None or start > end:
        return []
    data = {"uri": doc.uri, "version": doc.version, "range": [start, end]}
    actions = []
    selected = start < end
    holes = find_holes(doc.text, ls.settings.hole_markers, *((start, end) if selected else (0, len(doc.text))))
    if holes:
        where = "selection" if selected else "file"
        actions.append(types.CodeAction(title=f"dgls: Fill {len(holes)} hole(s) in the {where}",
                                        kind=types.CodeActionKind.RefactorRewrite,
                                        data={**data, "action": ACTION_FILL_HOLES}))
    if selected:
        actions.append(types.CodeAction(title="dgls: Regenerate selection", kind=types.CodeActionKind.RefactorRewrite,
                                        data={**data, "action": ACTION_REGENERATE}))
    if not _client_resolves_edits(ls):  # the client would never ask for the edit: run it as a command instead
        for action in actions:
            action.command = types.Command(title=action.title, command=CMD_APPLY_ACTION,
                                           arguments=[{**action.data, "title": action.title}])
    return actions


def _client_resolves_edits(ls: DglsServer) -> bool:
    """Whether the client resolves a code action's ``edit`` lazily (codeAction/resolve)."""
    cap = ls.client_capabilities.text_document
    support = cap.code_action.resolve_support if cap and cap.code_action else None
    return bool(support and "edit" in support.properties)


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: DglsServer, action: types.CodeAction) -> types.CodeAction:
    """Run the model for a code action and attach its versioned edit."""
    doc, edits = await _action_edits(ls, types.CODE_ACTION_RESOLVE, action.data, action.title)
    action.edit = ls.versioned_edit(doc, edits)
    return action


@server.command(CMD_APPLY_ACTION)
async def apply_code_action(ls: DglsServer, *args: Any) -> dict[str, Any]:
    """A code action run as a command: compute its edit, then workspace/applyEdit if the document is unchanged."""
    (data,) = _command_args(ls, CMD_APPLY_ACTION, args, [("action", dict)])
    doc, edits = await _action_edits(ls, CMD_APPLY_ACTION, data, str(data.get("title") or "dgls"))
    return await _apply_if_current(ls, doc, edits, str(data.get("title") or "dgls"))


async def _action_edits(ls: DglsServer, method: str, data: Any, title: str) -> tuple[_Doc, list[Edit]]:
    """The document and the edits of the code action described by `data` (what textDocument/codeAction gave)."""
    data = data if isinstance(data, dict) else {}
    uri, rng, kind = data.get("uri"), data.get("range"), data.get("action")
    if not isinstance(uri, str) or kind not in (ACTION_FILL_HOLES, ACTION_REGENERATE) or not _is_range(rng):
        raise JsonRpcInvalidParams(f"{method}: data must be what textDocument/codeAction gave "
                                   f"(uri, range, action), got {data!r}")
    doc = ls.doc(uri)
    if doc is None:
        raise RequestFailed(f"{uri} is not open")
    if doc.version != data.get("version"):
        raise RequestFailed(f"{uri} changed since the action was offered (version {data.get('version')} -> "
                            f"{doc.version}); ask for code actions again")
    engine = ls.ready_engine()
    if engine is None:
        raise RequestFailed(f"the model is {ls.engine.state if ls.engine else 'not started'}; try again when ready")
    start, end = rng
    if kind == ACTION_FILL_HOLES:
        spans = find_holes(doc.text, ls.settings.hole_markers, *((start, end) if start < end else (0, len(doc.text))))
    else:
        spans = [(start, end)]
    edits = await _edit_spans(ls, engine, doc, spans, title=title)
    if not edits:
        _show(ls, types.MessageType.Info, f"{title}: the model proposed nothing usable; nothing changed")
    return doc, edits


def _is_range(rng: Any) -> bool:
    return isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng) and 0 <= rng[0] <= rng[1]


async def _edit_spans(ls: DglsServer, engine: Engine, doc: _Doc, spans: list[tuple[int, int]], *, title: str,
                      instruction: str | None = None, token: types.ProgressToken | None = None) -> list[Edit]:
    """Regenerate each span of `doc` (a hole or a selection), one model call each, with cancellable progress."""
    cancel = threading.Event()
    progress = await _begin_progress(ls, title, cancel, token)
    edits: list[Edit] = []
    try:
        for i, (start, end) in enumerate(spans):
            if cancel.is_set():
                break
            request = _span_request(engine, doc, start, end)
            if instruction:
                request = with_instruction(request, doc.text, instruction)
            done = await _run(ls, engine, request, cancel=cancel, on_step=_step_reporter(ls, progress, i, len(spans)))
            if done is not None:
                found = make_edits(doc.text, request, done.suggestions)
                if found:
                    edits.append(found[0])
    finally:
        _end_progress(ls, progress, "cancelled" if cancel.is_set() else f"{len(edits)} edit(s)")
    if cancel.is_set():
        raise RequestFailed(f"{title}: cancelled")
    ls.send_status()
    return edits


def _span_request(engine: Engine, doc: _Doc, start: int, end: int) -> InfillRequest:
    """The request for a hole (as context sees a cursor on it, when it takes the whole hole) or a selection."""
    try:
        request = engine.build_request(doc.text, start, language=doc.language)
        if (request.start, request.end) == (start, end):
            return request
        return engine.build_request(doc.text, start, language=doc.language, selection=(start, end))
    except ContextError as exc:
        raise RequestFailed(str(exc)) from None


async def _begin_progress(ls: DglsServer, title: str, cancel: threading.Event,
                          token: types.ProgressToken | None) -> types.ProgressToken | None:
    """Start cancellable work-done progress (the client's token, or one we create); cancelling sets `cancel`."""
    if token is None:
        if not ls.client_supports_progress():
            return None
        token = f"dgls-{uuid.uuid4()}"
        try:
            await ls.work_done_progress.create_async(token)
        except Exception as exc:
            log.info("no progress for %s: %s", title, exc)
            return None
    ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0))
    ls.work_done_progress.tokens[token].add_done_callback(lambda f: cancel.set() if f.cancelled() else None)
    return token


def _step_reporter(ls: DglsServer, token: types.ProgressToken | None, part: int,
                   parts: int) -> Callable[[int, int], None] | None:
    """An on_step callback for the model worker that reports progress on the event loop (None: no progress)."""
    if token is None:
        return None
    loop = asyncio.get_running_loop()

    def on_step(step: int, total: int) -> None:
        pct = min(99, int(100 * (part + step / max(total, 1)) / parts))
        report = types.WorkDoneProgressReport(message=f"{part + 1}/{parts}: step {step}/{total}", percentage=pct)
        loop.call_soon_threadsafe(_report_if_open, ls, token, report)

    return on_step


def _report_if_open(ls: DglsServer, token: types.ProgressToken, report: types.WorkDoneProgressReport) -> None:
    if token in ls.work_done_progress.tokens and not ls.protocol._shutdown:  # a step after the end is dropped
        ls.work_done_progress.report(token, report)


def _end_progress(ls: DglsServer, token: types.ProgressToken | None, message: str) -> None:
    if token is not None and not ls.protocol._shutdown:
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        ls.work_done_progress.tokens.pop(token, None)


# --- commands -----------------------------------------------------------------------------------------


def _command_args(ls: DglsServer, command: str, args: tuple, spec: list[tuple[str, type]]) -> list[Any]:
    """Structure a command's JSON arguments by `spec` ((name, type) pairs); InvalidParams saying what is wrong."""
    names = ", ".join(name for name, _ in spec)
    if len(args) != len(spec):
        raise JsonRpcInvalidParams(f"{command} expects arguments [{names}], got {len(args)} argument(s)")
    out = []
    for (name, kind), value in zip(spec, args, strict=True):
        try:
            if kind in (str, dict) and not isinstance(value, kind):
                raise TypeError(f"expected {'a string' if kind is str else 'an object'}, got {type(value).__name__}")
            out.append(value if kind in (str, dict) else ls.protocol._converter.structure(value, kind))
        except Exception as exc:
            detail = _structure_problem(exc)
            raise JsonRpcInvalidParams(f"{command}: argument {name!r} is invalid: {detail}") from None
    return out


@server.command(CMD_REWRITE)
async def rewrite(ls: DglsServer, *args: Any) -> dict[str, Any]:
    """Rewrite a range following an instruction: arguments ``[uri, range, instruction]``.

    The edit goes out through workspace/applyEdit, versioned, and only if the document did not change while the
    model ran; otherwise the user is told and nothing is applied.
    """
    uri, range, instruction = _command_args(ls, CMD_REWRITE, args,
                                            [("uri", str), ("range", types.Range), ("instruction", str)])
    doc = ls.doc(uri)
    if doc is None:
        raise RequestFailed(f"{CMD_REWRITE}: {uri} is not open")
    start, end = ls.offset(doc, range.start), ls.offset(doc, range.end)
    if start is None or end is None or start >= end:
        raise RequestFailed(f"{CMD_REWRITE}: expected a non-empty range inside the document, got "
                            f"{range.start.line}:{range.start.character}-{range.end.line}:{range.end.character}")
    engine = ls.ready_engine()
    if engine is None:
        raise RequestFailed(f"{CMD_REWRITE}: the model is {ls.engine.state if ls.engine else 'not started'}")
    edits = await _edit_spans(ls, engine, doc, [(start, end)], title="dgls: Rewrite", instruction=instruction)
    if not edits:
        _show(ls, types.MessageType.Info, "dgls: the model produced no rewrite for the selection")
    return await _apply_if_current(ls, doc, edits, "dgls: Rewrite")


async def _apply_if_current(ls: DglsServer, doc: _Doc, edits: list[Edit], label: str) -> dict[str, Any]:
    """workspace/applyEdit the edits computed on `doc`, unless the document changed meanwhile (then say so)."""
    now = ls.doc(doc.uri)
    if now is None or now.version != doc.version:
        reason = (f"{doc.uri} changed while the edit was computed (version {doc.version} -> "
                  f"{now.version if now else 'closed'}); {label} not applied")
        _show(ls, types.MessageType.Warning, f"dgls: {reason}")
        return {"applied": False, "reason": reason}
    if not edits:
        return {"applied": False, "reason": "no edit"}
    result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
        edit=ls.versioned_edit(doc, edits), label=label))
    return {"applied": result.applied, "reason": result.failure_reason}


@server.command(CMD_SHOW_CONFIG)
def show_config(ls: DglsServer) -> dict[str, Any]:
    """The settings in effect and the model status."""
    return {"settings": ls.settings.to_json(), "status": ls.status(), "model": dict(ls.engine.info) if ls.engine
            else {}}


@server.command(CMD_RESTART)
def restart_model(ls: DglsServer) -> dict[str, Any]:
    """Reload the model (after a checkpoint changed, or a failed load)."""
    ls.start_engine()
    ls.send_status()
    return ls.status()


_UNPARSABLE = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)


def _client_mistake(error: BaseException | None) -> bool:
    """A message the client got wrong (answered with an error where one is due), not a fault of the server."""
    return isinstance(error, _UNPARSABLE) or (
        isinstance(error, JsonRpcException) and not isinstance(error, JsonRpcInternalError))


class _ClientMistakeFilter(logging.Filter):
    """Client mistakes in one line, not in a 60-line traceback; server faults keep theirs.

    dgls logs every malformed message once, in one line (``structure_message`` and ``report_server_error``),
    and answers it where a reply is due. pygls logs the same events again with a traceback (a cattrs exception
    group for bad params, a JSON decoder stack for a bad body, a handler stack for an InvalidParams a handler
    raised), and warns about the ``$/dgls/answered`` placeholder it is handed: those records are dropped. A
    cancel for a request that has just been answered is routine: debug.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Unable to deserialize message") or "$/dgls/answered" in record.getMessage():
            return False
        if record.exc_info and _client_mistake(record.exc_info[1]):
            return False
        if msg.startswith("Cancel notification for unknown message id"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


# --- entry point --------------------------------------------------------------------------------------


def serve(transport: str = "stdio", host: str = "127.0.0.1", port: int = 2087, allow_remote: bool = False,
          token: str | None = None) -> int:
    """Run the server until the client says exit; returns the process exit code.

    TCP listens on loopback; another `host` needs `allow_remote` (anyone who reaches the port can read the
    documents sent to it and ask for edits). With a `token`, a TCP client's first message must be
    ``initialize`` carrying it as ``initializationOptions.token``, else its connection is closed.
    """
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # pygls logs every message body at INFO
        logging.getLogger("pygls").setLevel(logging.WARNING)
    for name in ("pygls.protocol.json_rpc", "pygls.protocol.language_server", "pygls.server", "pygls.io_"):
        pygls_log = logging.getLogger(name)
        if not any(isinstance(f, _ClientMistakeFilter) for f in pygls_log.filters):
            pygls_log.addFilter(_ClientMistakeFilter())
    try:
        if transport == "tcp":
            if host not in LOOPBACK and not allow_remote:
                log.error("dgls: refusing to listen on %s: not a loopback address (expected one of %s); pass "
                          "--allow-remote to serve other machines", host, ", ".join(LOOPBACK))
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
        code = exc.code if isinstance(exc.code, int) else 0
    else:
        code = 0 if server.protocol._shutdown else 1
    for cancel in server.inflight.values():  # the client is gone: stop the worker at its next step
        cancel.set()
    if server.engine is not None:
        server.engine.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(serve())
