"""`dgls --tcp`: listens on loopback by default, says so, serves LSP (here in UTF-8 positions) and exits cleanly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from e2e_helpers import capabilities, wait_for
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from dgls.text import Edit, PositionEncoding, apply_edits, offset_at

TEXT = "Crème brûlée, très bon 😀 and\n\nFin.\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.asyncio
async def test_tcp_on_loopback_with_utf8_positions(model_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dgls.cli", "--tcp", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    client = LanguageClient("dgls-tcp-test", "0")
    statuses: list = []
    client.feature("dgls/status")(lambda params: statuses.append(params))
    try:
        banner = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), timeout=60)
        assert f"tcp://127.0.0.1:{port}" in banner and "loopback only" in banner
        for _ in range(200):  # the banner comes just before the socket is bound
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        caps = capabilities()
        caps.general = types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf8])
        result = await client.initialize_async(
            types.InitializeParams(
                capabilities=caps,
                initialization_options={
                    "dgls": {"model": model_path, "steps": 2, "candidates": 3, "languages": {"enable": ["plaintext"]}}
                },
            )
        )
        assert result.capabilities.inline_completion_provider is not None
        assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
        client.initialized(types.InitializedParams())
        await wait_for(lambda: any(s.state == "ready" for s in statuses), what="the model")

        uri = "file:///e2e/dessert.txt"
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="plaintext", version=1, text=TEXT)
            )
        )
        line0 = TEXT.split("\n")[0]
        cursor = types.Position(line=0, character=len(line0.encode("utf-8")))  # end of line 0, in bytes
        items = (
            await client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=cursor,
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
                )
            )
        ).items
        assert items
        for item in items:
            assert item.range.start == cursor == item.range.end  # in UTF-8 units, as negotiated
            at = offset_at(TEXT, cursor.line, cursor.character, PositionEncoding.UTF8)
            assert at == len(line0)
            after = apply_edits(TEXT, [Edit(at, at, item.insert_text)])
            assert after == line0 + item.insert_text + TEXT[len(line0) :]

        await client.shutdown_async(None)
        client.exit(None)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout=60) == 0
        rest = proc.stderr.read()
        assert "Traceback" not in rest and "Unhandled exception" not in rest, rest  # `exit` ends it quietly
    finally:
        if proc.poll() is None:
            proc.kill()
        await client.stop()


def test_tcp_refuses_a_remote_host_unless_allowed():
    proc = subprocess.run(
        [sys.executable, "-m", "dgls.cli", "--tcp", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0" in proc.stderr and "--allow-remote" in proc.stderr
