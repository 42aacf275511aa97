"""End-to-end helpers: the real `dgls` as a subprocess, a pytest-lsp client that records what the server sends."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import make_test_lsp_client

from dgls.text import Edit, PositionEncoding, apply_edits, offset_at

SERVER = [sys.executable, "-m", "dgls.cli", "--stdio", "-v"]
STATUS = "dgls/status"


def make_client() -> LanguageClient:
    """A pytest-lsp client that also records dgls/status and accepts workspace/applyEdit."""
    client = make_test_lsp_client()
    client.statuses = []
    client.applied = []
    client.apply_result = True

    @client.feature(STATUS)
    def on_status(ls: LanguageClient, params: Any) -> None:
        ls.statuses.append(params)

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply(ls: LanguageClient, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        ls.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=ls.apply_result)

    return client


CONFIG = ClientServerConfig(server_command=SERVER, client_factory=make_client)


def capabilities() -> types.ClientCapabilities:
    """What an editor with inline completion, code-action resolve, progress and applyEdit declares."""
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True, workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)
        ),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            code_action=types.CodeActionClientCapabilities(
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]), data_support=True
            ),
        ),
    )


async def initialize(
    client: LanguageClient, options: dict[str, Any], folders: list[str] | None = None
) -> types.InitializeResult:
    """Initialize with `options` as initializationOptions (and `folders`, file URIs, as the workspace folders)."""
    workspace = [types.WorkspaceFolder(uri=u, name=u.rsplit("/", 1)[-1]) for u in folders or []]
    return await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities(),
            initialization_options=options,
            process_id=None,
            workspace_folders=workspace or None,
        )
    )


async def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll `predicate` on the event loop until it is truthy (the client handles messages meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_ready(client: LanguageClient) -> dict:
    """Wait for a dgls/status saying the model is ready (or failed)."""
    status = await wait_for(
        lambda: next((s for s in reversed(client.statuses) if s.state in ("ready", "error")), None),
        what="the model to load",
    )
    return status


class Doc:
    """A document the test client owns: its text and version, kept in step with the server."""

    def __init__(self, client: LanguageClient, uri: str, text: str, language: str = "python"):
        self.client, self.uri, self.text, self.version = client, uri, text, 1
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
            )
        )

    def pos(self, marker: str, after: bool = True) -> types.Position:
        """LSP position (utf-16) just after (or at) the first occurrence of `marker`."""
        off = self.text.index(marker) + (len(marker) if after else 0)
        return position(self.text, off)

    def edit(self, start: int, end: int, new_text: str) -> None:
        """Change the document (client side) and send didChange."""
        rng = types.Range(start=position(self.text, start), end=position(self.text, end))
        self.text = self.text[:start] + new_text + self.text[end:]
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text=new_text)],
            )
        )

    def close(self) -> None:
        """Send didClose."""
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=self.uri))
        )

    def ident(self) -> types.TextDocumentIdentifier:
        """The identifier for requests."""
        return types.TextDocumentIdentifier(uri=self.uri)


def position(text: str, offset: int) -> types.Position:
    """LSP position (utf-16, what this client negotiates) of a code-point offset."""
    from dgls.text import position_at

    line, character = position_at(text, offset, PositionEncoding.UTF16)
    return types.Position(line=line, character=character)


def offset(text: str, pos: types.Position) -> int:
    """Code-point offset of an LSP position (utf-16)."""
    return offset_at(text, pos.line, pos.character, PositionEncoding.UTF16)


def apply(text: str, edits: list[types.TextEdit]) -> str:
    """Apply LSP text edits to `text` as a client does."""
    return apply_edits(text, [Edit(offset(text, e.range.start), offset(text, e.range.end), e.new_text) for e in edits])


def inline_params(
    doc: Doc, pos: types.Position, automatic: bool = False, token: str | None = None
) -> types.InlineCompletionParams:
    """Params of textDocument/inlineCompletion."""
    kind = types.InlineCompletionTriggerKind.Automatic if automatic else types.InlineCompletionTriggerKind.Invoked
    return types.InlineCompletionParams(
        text_document=doc.ident(),
        position=pos,
        context=types.InlineCompletionContext(trigger_kind=kind),
        work_done_token=token,
    )


def send_raw_request(client: LanguageClient, method: str, params: Any) -> asyncio.Future:
    """Send a request with params exactly as given (no client-side typing), for malformed-input tests.

    pygls' client would structure known methods' params with lsprotocol types first and refuse bad ones, so
    this writes the JSON object itself and registers the response future the way ``send_request`` does.
    """
    import uuid
    from concurrent.futures import Future

    msg_id = f"raw-{uuid.uuid4()}"
    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return asyncio.wrap_future(future)


async def stats(client) -> dict:
    """The server's counters (requests, typed-through and result-cache hits, cancels) from dgls.showConfig."""
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    return res["status"]
