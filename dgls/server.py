"""The language server: LSP in -> one call -> LSP out.

Each handler looks up the document, converts positions to offsets (:mod:`dgls.documents`, in the negotiated
encoding), makes one call on the completion policy (:mod:`dgls.policy`: newest wins, debounce, ghost text; the
engine call is awaited as an asyncio future so ``$/cancelRequest`` reaches the model worker as a cancel event),
and converts the result back. The model loads once, in the background, after ``initialize``; until it is ready,
requests get empty results and the client a ``dgls/status``. Under it: :mod:`dgls.transport` (stdio and TCP,
bounded reads, LSP's line rules for documents) and :mod:`dgls.protocol` (a reply for every request, the TCP
token; see SECURITY.md); the progress bars are :mod:`dgls.progress`; the code actions and ``dgls.rewrite`` are
:mod:`dgls.code_actions`; the inline completion and completion handlers are :mod:`dgls.completions`.

Features: ``textDocument/inlineCompletion`` (ghost text; debounced and filtered on Automatic triggers, which may
get an empty middle unless the code at the cursor is unfinished; several candidates on Invoked ones; answered
from the last ghost text while the user types it), a
``textDocument/completion`` fallback, code actions "Fill holes" and "Regenerate selection" (the model runs in
``codeAction/resolve``), commands ``dgls.rewrite``, ``dgls.showConfig``, ``dgls.restartModel``, the
acceptance signals ``dgls.accepted`` (each inline item's ``command``), ``dgls.partiallyAccepted``,
``dgls.dismissed`` and their counters ``dgls.stats`` (in memory only: nothing is written or sent anywhere), the
``dgls/status`` notification, and the ``dgls/documentHash`` request (the version and SHA-256 of the text the
server holds, so a client or a test can check that its edits were applied exactly). Every edit is a versioned
``TextDocumentEdit``, so a client rejects a stale one.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import to_fs_path as uris_to_fs_path

from dgls import __version__
from dgls.documents import Documents
from dgls.engine import Engine, EngineOptions
from dgls.memory import release_freed_memory
from dgls.policy import InfillPolicy
from dgls.progress import ProgressBars
from dgls.protocol import command_args
from dgls.settings import Settings, parse_settings
from dgls.transport import HardenedServer, run

log = logging.getLogger("dgls.server")

STATUS = "dgls/status"
CMD_REWRITE = "dgls.rewrite"
CMD_SHOW_CONFIG = "dgls.showConfig"
CMD_RESTART = "dgls.restartModel"
CMD_APPLY_ACTION = "dgls.applyCodeAction"  # the code actions, for clients that cannot resolve them
CMD_ACCEPTED = "dgls.accepted"  # [id]: the editor inserted an inline completion item (its `command`)
CMD_PARTIALLY_ACCEPTED = "dgls.partiallyAccepted"  # [id, chars]: it inserted the first `chars` characters of one
CMD_DISMISSED = "dgls.dismissed"  # [id]: the user dismissed one
CMD_STATS = "dgls.stats"  # the counters since start (dgls.policy.USAGE_COUNTERS), kept in memory only
ACTION_FILL_HOLES = "fillHoles"
ACTION_REGENERATE = "regenerate"
DOCUMENT_HASH = "dgls/documentHash"


class DglsServer(HardenedServer):
    """The server and what dgls keeps between requests: settings, the engine, documents, the policy, progress."""

    def __init__(self) -> None:
        super().__init__("dgls", __version__)
        self.defaults = Settings()  # what the command line set; the client's settings overlay these
        self.settings = self.defaults
        self.engine: Engine | None = None
        self.initialized = False
        self.documents = Documents(lambda: self.open_workspace)
        self.policy = InfillPolicy(self)
        self.progress_bars = ProgressBars(self)
        self.pending_problems: list[str] = []  # settings problems found before the client was initialized
        self.faults_shown: set[str] = set()  # model failures already shown to the user (once each)

    @property
    def stats(self) -> dict[str, Any]:
        """The infill counters ``dgls/status`` reports."""
        return self.policy.stats

    def engine_options(self) -> EngineOptions:
        """Engine options from the settings."""
        return EngineOptions.from_settings(self.settings)

    def start_engine(self) -> None:
        """(Re)create the engine from the settings and load the model in the background."""
        old, self.engine = self.engine, Engine(self.engine_options())
        self.policy.cancel_all()
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
        if engine.state != "loading":
            self.progress_bars.end_load("ready" if engine.state == "ready" else f"failed: {engine.error}")
        self.send_status()
        if engine.state == "error":
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Error, message=f"dgls: the model failed to load: {engine.error}"
                )
            )

    def status(self) -> dict[str, Any]:
        """What ``dgls/status`` reports."""
        e = self.engine
        out: dict[str, Any] = {"state": e.state if e else "idle", "model": self.settings.model}
        if e is not None and e.info:
            out.update(device=e.info.get("device"), dtype=e.info.get("dtype"), loadMs=e.info.get("load_ms"))
        if e is not None and e.error:
            out["error"] = e.error
        backend = e.backend_status() if e is not None else None
        if backend is not None:
            out["backend"] = backend
        out.update(self.stats)
        return out

    def report_fault(self, message: str) -> None:
        """A request failed in the model: log it and tell dgls/status every time, the user once per message."""
        log.warning("%s", message)
        self.send_status(event="infillFailed", detail=message)
        if message not in self.faults_shown and self.initialized and not self.shut_down:
            self.faults_shown.add(message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=f"dgls: {message}"))

    def send_status(self, **event: Any) -> None:
        """Send ``dgls/status`` with optional event fields (between initialization and shutdown only)."""
        if self.initialized and not self.shut_down:
            self.protocol.notify(STATUS, {**self.status(), **event})

    def ready_engine(self) -> Engine | None:
        """The engine when it can serve; else report the state through ``dgls/status`` and return None."""
        if self.engine is not None and self.engine.state == "ready":
            return self.engine
        self.send_status()
        return None

    def current_text(self, uri: str) -> str | None:
        """The text of `uri` as the client last sent it (None when it is not open)."""
        doc = self.documents.get(uri)
        return doc.text if doc is not None else None

    def open_texts(self) -> list[tuple[str, str]]:
        """Every open document as ``(uri, text)``."""
        return self.documents.open_texts()


server = DglsServer()


def show_message(ls: DglsServer, kind: types.MessageType, message: str) -> None:
    """Tell the user (window/showMessage) and the log."""
    log.log(logging.WARNING if kind <= types.MessageType.Warning else logging.INFO, "%s", message)
    ls.window_show_message(types.ShowMessageParams(type=kind, message=message))


# --- lifecycle ----------------------------------------------------------------------------------------


@server.feature(types.INITIALIZE)
def on_initialize(ls: DglsServer, params: types.InitializeParams) -> None:
    """Read initializationOptions and start loading the model in the background."""
    ls.use_lsp_line_rules()  # pygls made the workspace just before; documents come after this
    ls.settings, problems = parse_settings(params.initialization_options, base=ls.defaults)
    ls.pending_problems = problems  # shown once the client is initialized
    ls.start_engine()


@server.feature(types.INITIALIZED)
async def on_initialized(ls: DglsServer, params: types.InitializedParams) -> None:
    """Report settings problems and the loading state; show loading progress."""
    ls.initialized = True
    for problem in ls.pending_problems:
        show_message(ls, types.MessageType.Warning, f"dgls settings: {problem}")
    ls.send_status()
    if ls.settings.workspace_seeds:
        asyncio.get_running_loop().create_task(_index_workspace(ls))
    if ls.engine is not None and ls.engine.state == "loading" and ls.progress_bars.supported():
        if not await ls.progress_bars.begin_load(f"loading {ls.settings.model}"):
            return
    if ls.engine is not None and ls.engine.state != "loading":  # finished while the client set up progress
        ls.on_engine_loaded(ls.engine)


def workspace_folders(ls: DglsServer) -> list[Path]:
    """The client's workspace folders (or its root) that are local directories."""
    ws = ls.open_workspace
    if ws is None:
        return []
    uris = [f.uri for f in ws.folders.values()] or ([ws.root_uri] if ws.root_uri else [])
    paths = [Path(uris_to_fs_path(u) or "") for u in uris if u.startswith("file:")]
    return [p for p in paths if str(p) and p.is_dir()]


async def _index_workspace(ls: DglsServer) -> None:
    """Read the workspace folders into the seed index, off the event loop (read-only, bounded; see dgls.seeds)."""
    folders = workspace_folders(ls)
    if not folders:
        return
    try:
        stats = await asyncio.to_thread(ls.policy.seeds.index_workspace, folders)
    except OSError as exc:  # an unreadable folder: seeds come from open documents only
        log.warning("workspace seeds: could not read the workspace folders: %s", exc)
        return
    log.info("workspace seeds: %d file(s), %d bytes (%d skipped)", stats.files, stats.bytes, stats.skipped)
    ls.policy.stats["workspaceFiles"] = stats.files


@server.feature(types.SHUTDOWN)
def on_shutdown(ls: DglsServer, params: Any) -> None:
    """Cancel everything in flight and stop the model worker."""
    ls.policy.cancel_all()
    if ls.engine is not None:
        ls.engine.shutdown()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def on_configuration(ls: DglsServer, params: types.DidChangeConfigurationParams) -> None:
    """Overlay the new settings; reload the model when a model setting changed."""
    before = ls.settings
    ls.settings, problems = parse_settings(params.settings, base=before)
    for problem in problems:
        show_message(ls, types.MessageType.Warning, f"dgls settings: {problem}")
    if ls.settings.engine_fields() != before.engine_fields():
        ls.start_engine()
        ls.send_status()


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: DglsServer, params: types.DidCloseTextDocumentParams) -> None:
    """Forget the document's caches and cancel its work."""
    ls.documents.forget(params.text_document.uri)
    ls.policy.forget(params.text_document.uri)


@server.feature(DOCUMENT_HASH)
def document_hash(ls: DglsServer, params: Any) -> dict[str, Any]:
    """``dgls/documentHash`` ``{uri}`` -> ``{uri, version, sha256, length}`` of the text the server holds.

    ``sha256`` is of the text encoded as UTF-8 (lone surrogates as in Python's ``surrogatepass``), ``length``
    counts code points; both are null, and ``version`` too, for a document that is not open. A client compares
    them with its own buffer to check that every didChange was applied exactly (the reliability tests do).
    """
    uri = getattr(params, "uri", None) if not isinstance(params, dict) else params.get("uri")
    if not isinstance(uri, str):
        raise JsonRpcInvalidParams(f'{DOCUMENT_HASH} expects {{"uri": string}}, got {params!r}')
    doc = ls.documents.get(uri)
    if doc is None:
        return {"uri": uri, "version": None, "sha256": None, "length": None}
    digest = hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"uri": uri, "version": doc.version, "sha256": digest, "length": len(doc.text)}


# --- commands -----------------------------------------------------------------------------------------


@server.command(CMD_SHOW_CONFIG)
def show_config(ls: DglsServer) -> dict[str, Any]:
    """The settings in effect and the model status."""
    return {
        "settings": ls.settings.to_json(),
        "status": ls.status(),
        "model": dict(ls.engine.info) if ls.engine else {},
    }


@server.command(CMD_RESTART)
def restart_model(ls: DglsServer) -> dict[str, Any]:
    """Reload the model (after a checkpoint changed, or a failed load)."""
    ls.start_engine()
    ls.send_status()
    return ls.status()


@server.command(CMD_ACCEPTED)
def accepted(ls: DglsServer, *args: Any) -> None:
    """The editor inserted an inline completion item (VS Code runs the item's command on accept)."""
    command_args(ls, CMD_ACCEPTED, args[:1], [("id", str)])  # the second argument is the item's confidence
    ls.policy.feedback("accepted")


@server.command(CMD_PARTIALLY_ACCEPTED)
def partially_accepted(ls: DglsServer, *args: Any) -> None:
    """The editor inserted a part of an item (accept word, accept line): ``[id, accepted character count]``."""
    _, chars = command_args(ls, CMD_PARTIALLY_ACCEPTED, args, [("id", str), ("chars", int)])
    ls.policy.feedback("partiallyAccepted", chars)


@server.command(CMD_DISMISSED)
def dismissed(ls: DglsServer, *args: Any) -> None:
    """The user dismissed an item's ghost text."""
    command_args(ls, CMD_DISMISSED, args, [("id", str)])
    ls.policy.feedback("dismissed")


@server.command(CMD_STATS)
def usage_stats(ls: DglsServer) -> dict[str, int]:
    """Counts since the server started: model calls, NFE, items served, accepted, partially accepted, dismissed."""
    return dict(ls.policy.usage)


# --- entry point --------------------------------------------------------------------------------------


def serve(
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 2087,
    allow_remote: bool = False,
    token: str | None = None,
    defaults: Settings | None = None,
) -> int:
    """Run the server until the client says exit; returns the process exit code.

    TCP listens on loopback; another `host` needs `allow_remote` (anyone who reaches the port can read the
    documents sent to it and ask for edits). With a `token`, a TCP client's first message must be
    ``initialize`` carrying it as ``initializationOptions.token``, else its connection is closed. `defaults`
    are the settings the client's overlay (the command line's backend).
    """
    if defaults is not None:
        server.defaults = server.settings = defaults
    code = run(server, transport, host=host, port=port, allow_remote=allow_remote, token=token)
    server.policy.cancel_all()  # the client is gone: stop the worker at its next step
    if server.engine is not None:
        server.engine.shutdown()
    return code


from dgls import code_actions, completions  # noqa: E402, F401  (register their handlers on `server`)

if __name__ == "__main__":
    sys.exit(serve())
