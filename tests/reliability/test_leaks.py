"""What a long session must not accumulate in the server process (in-process, on pygls' own dispatch)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import types
from collections.abc import Callable

from dgls import server as dgls_server
from dgls.engine import Engine, EngineOptions
from dgls.server import CMD_REWRITE, CMD_SHOW_CONFIG, DglsServer

Handle = Callable[[dict], None]


def _session(work: Callable[[Handle], None], srv: DglsServer | None = None) -> tuple[int, str, list[dict]]:
    """Initialize `srv` (default: a new one, no features) with no model, open file:///a.py, run `work`;
    (futures left, the text, the replies)."""

    async def run() -> tuple[int, str, list[dict]]:
        nonlocal srv
        srv = srv or DglsServer()
        proto = srv.protocol
        replies: list[dict] = []
        proto._send_data = lambda data: replies.append(json.loads(json.dumps(data, default=proto._serialize_message)))

        def handle(message: dict) -> None:
            proto.handle_message(proto.structure_message({"jsonrpc": "2.0", **message}))

        handle(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "processId": None,
                    "capabilities": {},
                    "initializationOptions": {"dgls": {"model": "/nonexistent"}},
                },
            }
        )
        await asyncio.sleep(0.1)
        handle({"method": "initialized", "params": {}})
        handle(
            {
                "method": "textDocument/didOpen",
                "params": {"textDocument": {"uri": "file:///a.py", "languageId": "python", "version": 1, "text": ""}},
            }
        )
        work(handle)
        await asyncio.sleep(0.2)
        if srv.engine is not None:  # the load of /nonexistent fails: let its callback run while the loop is up
            await asyncio.wrap_future(srv.engine.start())
            await asyncio.sleep(0.05)
        text = srv.workspace.get_text_document("file:///a.py").source
        return len(proto._request_futures), text, replies

    return asyncio.run(run())


def test_notifications_leave_no_futures_behind():
    """pygls files a future per generator-handled notification and never removes it: dgls forgets it when done."""

    def type_x(handle: Handle) -> None:
        for v in range(2, 302):
            handle(
                {
                    "method": "textDocument/didChange",
                    "params": {
                        "textDocument": {"uri": "file:///a.py", "version": v},
                        "contentChanges": [
                            {
                                "range": {
                                    "start": {"line": 0, "character": v - 2},
                                    "end": {"line": 0, "character": v - 2},
                                },
                                "text": "x",
                            }
                        ],
                    },
                }
            )

    pending, text, _ = _session(type_x)
    assert text == "x" * 300  # the changes were applied
    assert pending == 0


def test_commands_and_closes_leave_no_futures_behind():
    """The handlers pygls' builtins yield to (a command, didClose) were filed under a uuid for good, each with its
    result, or its error's traceback and frames; dgls forgets them once done."""

    def commands(handle: Handle) -> None:
        for i in range(40):
            handle(
                {
                    "id": f"show-{i}",
                    "method": "workspace/executeCommand",
                    "params": {"command": CMD_SHOW_CONFIG, "arguments": []},
                }
            )
            handle(
                {
                    "id": f"bad-{i}",
                    "method": "workspace/executeCommand",
                    "params": {"command": CMD_REWRITE, "arguments": ["file:///a.py", None, "shout"]},
                }
            )
            handle(
                {
                    "method": "textDocument/didOpen",
                    "params": {
                        "textDocument": {"uri": "file:///b.py", "languageId": "python", "version": 1, "text": "b = 1\n"}
                    },
                }
            )
            handle({"method": "textDocument/didClose", "params": {"textDocument": {"uri": "file:///b.py"}}})

    # dgls' own server: the features and commands are registered on it (this is the one test here to use it)
    pending, text, replies = _session(commands, dgls_server.server)
    by_id = {r["id"]: r for r in replies if "id" in r and "method" not in r}
    assert all("result" in by_id[f"show-{i}"] for i in range(40))
    assert all(by_id[f"bad-{i}"]["error"]["code"] == -32602 for i in range(40))  # the bad arguments, answered
    assert "argument 'range' is invalid" in by_id["bad-0"]["error"]["message"]
    assert text == ""
    assert pending == 0


def test_a_superseded_request_leaves_no_reference_cycle(tiny_checkpoint):
    """An error awaited in the server's `_run` carries its frame, which held the future holding the error: a cycle
    that only a full collection frees, and full collections are rare with a model's million objects resident. In a
    long session each superseded request kept its tensors that way (about 7 MiB per 1,000 changes)."""
    engine = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu", sampler={"max_steps": 8}))
    engine.wait_ready(timeout=120)
    request = engine.build_request("def add(a, b):\n    return \n", 26, language="python")
    srv = DglsServer()

    async def superseded() -> list[object]:
        answers = []
        for _ in range(8):  # whether the cycle forms depends on timing: several requests
            cancel = threading.Event()  # a newer keystroke sets it after the first step
            answers.append(
                await srv.policy.run(
                    engine, request, cancel=cancel, on_step=lambda step, total, cancel=cancel: cancel.set()
                )
            )
        return answers

    gc.collect()
    gc.disable()  # the cycle must still be there to be found: no automatic collection meanwhile
    try:
        assert asyncio.run(superseded()) == [None] * 8  # superseded: empty answers
        assert srv.stats["cancelled"] == 8
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        in_cycles = sorted(
            {
                f"{o.f_code.co_name} ({os.path.basename(o.f_code.co_filename)})"
                for o in gc.garbage
                if isinstance(o, types.FrameType)
            }
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        engine.shutdown()
    assert in_cycles == []
