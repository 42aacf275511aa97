"""A model that fails to load, bad settings, requests before the model is ready: the server stays up and says so.

Reloads go to the tiny random checkpoint (it loads in a fraction of a second; the shipped model takes several).
"""

from __future__ import annotations

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, initialize, inline_params, wait_for, wait_ready
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

MISSING = "/nonexistent/dgls-model"


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient):
    await initialize(lsp_client, {"dgls": {"model": MISSING, "steps": 0, "debounceMs": "soon", "whatIsThis": 1}})
    yield
    await lsp_client.shutdown_session()


async def test_settings_problems_are_shown(client: LanguageClient):
    await wait_for(
        lambda: len([m for m in client.messages if "dgls settings" in m.message]) >= 2, what="the settings messages"
    )
    texts = [m.message for m in client.messages if "dgls settings" in m.message]
    assert any(t.startswith("dgls settings: steps: expected an integer >= 1") for t in texts)
    assert any("debounceMs: expected an integer" in t and "keeping 75" in t for t in texts)
    assert not any("whatIsThis" in t for t in texts)  # unknown keys are ignored quietly
    assert all(m.type == types.MessageType.Warning for m in client.messages if "dgls settings" in m.message)


async def test_failed_load_is_reported_and_the_server_keeps_serving(client: LanguageClient):
    status = await wait_ready(client)
    assert status.state == "error" and MISSING in status.error
    await wait_for(lambda: [m for m in client.messages if m.type == types.MessageType.Error], what="showMessage")
    error = next(m for m in client.messages if m.type == types.MessageType.Error)
    assert "failed to load" in error.message and MISSING in error.message
    doc = Doc(client, "file:///e2e/f.py", "def f():\n    ...\n")
    result = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=1, character=4)))
    assert not result.items
    with pytest.raises(JsonRpcException, match="the model is error") as err:
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="dgls.rewrite",
                arguments=[doc.uri, {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 7}}, "x"],
            )
        )
    assert err.value.code == -32803  # RequestFailed
    config = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    assert config["status"]["state"] == "error"
    doc.close()


async def test_configuration_change_fixes_the_model(client: LanguageClient, tiny_checkpoint):
    n = len(client.statuses)
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"dgls": {"model": str(tiny_checkpoint), "candidates": "many"}})
    )
    await wait_for(lambda: any("candidates" in m.message for m in client.messages), what="the candidates message")
    status = await wait_for(
        lambda: next((s for s in client.statuses[n:] if s.state in ("ready", "error")), None), what="the reload"
    )
    assert status.state == "ready"
    config = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    assert config["settings"]["model"] == str(tiny_checkpoint) and config["settings"]["candidates"] == 3
    restarted = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.restartModel"))
    assert restarted["state"] == "loading"
    assert (await wait_for(lambda: client.statuses[-1].state != "loading" and client.statuses[-1])).state == "ready"


async def test_request_before_ready_gets_an_empty_answer_and_a_status(client: LanguageClient):
    n = len(client.statuses)
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.restartModel"))
    doc = Doc(client, "file:///e2e/early.txt", "Early:\n\n\nLate.\n", language="plaintext")
    result = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=1, character=0)))
    loading = [s for s in client.statuses[n:] if s.state == "loading"]
    if not any(s.state == "ready" for s in client.statuses[n:]):  # still loading when the request came
        assert not result.items and len(loading) >= 2  # the restart's status and the request's
    await wait_ready(client)
    doc.close()
