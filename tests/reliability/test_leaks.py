"""What a long session must not accumulate in the server process (in-process, on pygls' own dispatch)."""

from __future__ import annotations

import asyncio

from dgls.server import DglsServer


def _session(changes: int) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        srv = DglsServer()
        proto = srv.protocol
        proto._send_data = lambda data: None  # no transport: replies are dropped

        def handle(message: dict) -> None:
            proto.handle_message(proto.structure_message({"jsonrpc": "2.0", **message}))

        handle({"id": 1, "method": "initialize", "params": {
            "processId": None, "capabilities": {}, "initializationOptions": {"dgls": {"model": "/nonexistent"}}}})
        await asyncio.sleep(0.1)
        handle({"method": "initialized", "params": {}})
        handle({"method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///a.py", "languageId": "python", "version": 1, "text": ""}}})
        for v in range(2, changes + 2):
            handle({"method": "textDocument/didChange", "params": {
                "textDocument": {"uri": "file:///a.py", "version": v},
                "contentChanges": [{"range": {"start": {"line": 0, "character": v - 2},
                                              "end": {"line": 0, "character": v - 2}}, "text": "x"}]}})
        await asyncio.sleep(0.1)
        text = srv.workspace.get_text_document("file:///a.py").source
        return len(proto._request_futures), text

    return asyncio.run(run())


def test_notifications_leave_no_futures_behind():
    """pygls files a future per generator-handled notification and never removes it: dgls forgets it when done."""
    pending, text = _session(300)
    assert text == "x" * 300  # the changes were applied
    assert pending == 0
