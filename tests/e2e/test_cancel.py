"""Cancellation: $/cancelRequest answers -32800 and stops the model worker; a newer request supersedes.

These use the random-weight tiny checkpoint on purpose, whatever model ships: it never becomes confident,
so a request runs every one of its many steps unless it is cancelled, and the test cannot race the model.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, initialize, inline_params, position, wait_for, wait_ready
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # pytest-lsp only knows tokens from window/workDoneProgress/create; these are the client's own
    # workDoneToken from the request params, which LSP allows too
    pytest.mark.filterwarnings("ignore:Unknown progress token"),
]

STEPS = 400
TEXT = "Things to do today:\n\n\nCall the plumber.\n"
AT = TEXT.index("\n\n") + 1


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, tiny_checkpoint):
    await initialize(
        lsp_client, {"model": str(tiny_checkpoint), "steps": STEPS, "debounceMs": 0, "maxCanvas": 16, "candidates": 1}
    )
    assert (await wait_ready(lsp_client)).state == "ready"
    yield
    await lsp_client.shutdown_session()


def step_reports(client: LanguageClient, token: str) -> list:
    return [r for r in client.progress_reports.get(token, []) if r.kind == "report"]


async def start(client: LanguageClient, doc: Doc, token: str, automatic: bool = False):
    """Send an inline completion with a progress token; return its future once the model ran a step."""
    fut = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        inline_params(doc, position(doc.text, AT), automatic=automatic, token=token),
        msg_id=token,
    )
    await wait_for(lambda: step_reports(client, token), timeout=60, what=f"a denoising step of {token}")
    return asyncio.wrap_future(fut)


async def test_cancel_request_stops_the_worker(client: LanguageClient):
    doc = Doc(client, "file:///e2e/todo.txt", TEXT, language="plaintext")
    running = await start(client, doc, "slow-1")
    client.cancel_request(types.CancelParams(id="slow-1"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(running, timeout=60)
    note = await wait_for(
        lambda: next((s for s in client.statuses if getattr(s, "event", None) == "cancelled"), None),
        timeout=60,
        what="the cancelled status",
    )
    assert note.steps is not None and note.steps < STEPS  # the worker stopped between steps
    assert client.progress_reports["slow-1"][-1].kind == "end"
    # the worker is free: a follow-up request gets the model (its first step is reported), then cancel it too
    follow = await start(client, doc, "slow-2")
    client.cancel_request(types.CancelParams(id="slow-2"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(follow, timeout=60)
    doc.close()


async def test_newer_request_for_the_same_document_supersedes(client: LanguageClient):
    doc = Doc(client, "file:///e2e/todo2.txt", TEXT, language="plaintext")
    first = await start(client, doc, "old-1")
    newer = await start(client, doc, "new-1", automatic=True)  # the worker moved on to the newer request
    assert not (await asyncio.wait_for(first, timeout=60)).items  # superseded: an empty answer, not an error
    client.cancel_request(types.CancelParams(id="new-1"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(newer, timeout=60)
    doc.close()


async def test_closing_the_document_cancels_its_work(client: LanguageClient):
    doc = Doc(client, "file:///e2e/todo3.txt", TEXT, language="plaintext")
    running = await start(client, doc, "closing-1")
    doc.close()
    assert not (await asyncio.wait_for(running, timeout=60)).items


async def test_work_done_progress_cancel_stops_a_rewrite(client: LanguageClient):
    text = "first line\nsecond line\n"
    doc = Doc(client, "file:///e2e/todo4.txt", text, language="plaintext")
    before = set(client.progress_reports)
    task = asyncio.ensure_future(
        client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="dgls.rewrite",
                arguments=[
                    doc.uri,
                    {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 10}},
                    "shout",
                ],
            )
        )
    )
    token = await wait_for(
        lambda: next(
            (
                t
                for t in client.progress_reports
                if t not in before and any(r.kind == "report" for r in client.progress_reports[t])
            ),
            None,
        ),
        timeout=60,
        what="the rewrite's progress",
    )
    begin = client.progress_reports[token][0]
    assert begin.kind == "begin" and begin.cancellable is True
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    with pytest.raises(JsonRpcException, match="cancelled") as err:
        await asyncio.wait_for(task, timeout=60)
    assert err.value.code == -32803
    assert client.progress_reports[token][-1].kind == "end"
    assert not client.applied  # nothing was edited
    doc.close()


async def test_cancel_request_stops_a_rewrite_command(client: LanguageClient):
    """$/cancelRequest for workspace/executeCommand reaches the command pygls yielded to: the worker stops and
    nothing is edited (the command used to run on, and apply its edit, after the client's -32800)."""
    text = "first line\nsecond line\n"
    doc = Doc(client, "file:///e2e/todo5.txt", text, language="plaintext")
    before, seen = set(client.progress_reports), len(client.statuses)
    running = asyncio.wrap_future(
        client.protocol.send_request(
            types.WORKSPACE_EXECUTE_COMMAND,
            types.ExecuteCommandParams(
                command="dgls.rewrite",
                arguments=[
                    doc.uri,
                    {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 10}},
                    "shout",
                ],
            ),
            msg_id="rewrite-1",
        )
    )
    token = await wait_for(
        lambda: next(
            (
                t
                for t in client.progress_reports
                if t not in before and any(r.kind == "report" for r in client.progress_reports[t])
            ),
            None,
        ),
        timeout=60,
        what="the rewrite's progress",
    )
    client.cancel_request(types.CancelParams(id="rewrite-1"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(running, timeout=60)
    note = await wait_for(
        lambda: next((s for s in client.statuses[seen:] if getattr(s, "event", None) == "cancelled"), None),
        timeout=60,
        what="the rewrite's worker stopping",
    )
    assert note.steps is not None and note.steps < STEPS
    assert client.progress_reports[token][-1].kind == "end"
    await asyncio.sleep(0.5)
    assert not client.applied  # nothing was edited, then or later
    doc.close()
