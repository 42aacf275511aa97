"""Languages the model was not trained on: no completions there, and the user is told once how to turn them on.

The shipped dgls-tiny declares ``"languages": ["python"]`` in its dgls.json; the random stand-in declares none
(then every language is served), so these tests need the shipped model.
"""

from __future__ import annotations

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, initialize, inline_params, wait_ready
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

GO = "package main\n\nfunc add(a int, b int) int {\n\treturn \n}\n"
PY = "def add(a, b):\n    return \n"


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, model_path: str):
    if model_path != "dgls-tiny":
        pytest.skip("needs the shipped dgls-tiny, which declares its languages")
    await initialize(lsp_client, {"dgls": {"model": model_path, "steps": 4, "debounceMs": 0, "maxCanvas": 16}})
    status = await wait_ready(lsp_client)
    assert status.state == "ready", f"model did not load: {status}"
    yield
    await lsp_client.shutdown_session()


async def model_calls(client: LanguageClient) -> int:
    stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.stats"))
    return stats["modelCalls"]


async def test_go_gets_nothing_and_one_message_python_still_gets_items(client: LanguageClient):
    n_messages, n_statuses = len(client.messages), len(client.statuses)
    calls = await model_calls(client)
    go = Doc(client, "file:///e2e/add.go", GO, language="go")
    for automatic in (False, True, False):
        result = await client.text_document_inline_completion_async(
            inline_params(go, go.pos("return "), automatic=automatic)
        )
        assert not result.items
    fallback = await client.text_document_completion_async(
        types.CompletionParams(text_document=go.ident(), position=go.pos("return "))
    )
    assert not fallback.items
    other = Doc(client, "file:///e2e/other.go", GO, language="go")  # another Go file: still told only once
    assert not (await client.text_document_inline_completion_async(inline_params(other, other.pos("return ")))).items
    told = client.messages[n_messages:]
    assert len(told) == 1, [m.message for m in told]
    assert told[0].type == types.MessageType.Info
    assert "not trained on go" in told[0].message and "languages.enable" in told[0].message
    events = [s for s in client.statuses[n_statuses:] if getattr(s, "event", None) == "languageNotTrained"]
    assert len(events) == 1 and events[0].language == "go"
    assert await model_calls(client) == calls  # Go never reached the model

    # Python does reach it (whether the young model's middle survives the parse check is the model's business:
    # the counter, not the items, says the request was served)
    py = Doc(client, "file:///e2e/add.py", PY)
    await client.text_document_inline_completion_async(inline_params(py, py.pos("return ")))
    assert await model_calls(client) == calls + 1
    assert len(client.messages) == n_messages + 1
    for doc in (go, other, py):
        doc.close()


async def test_enabling_the_language_turns_it_on(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"dgls": {"languages": {"enable": ["go"]}}})
    )  # handled before the request that follows it
    go = Doc(client, "file:///e2e/enabled.go", GO, language="go")
    calls = await model_calls(client)
    await client.text_document_inline_completion_async(inline_params(go, go.pos("return ")))
    assert await model_calls(client) == calls + 1  # now Go reaches the model
    go.close()
