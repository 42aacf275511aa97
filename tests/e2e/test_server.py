"""The real server over stdio with the shipped model (or the tiny stand-in when none ships): bad input too.

One server for the module (loading the model once); each test opens its own documents. What needs a model
that always writes a middle is in test_mechanics.py.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from e2e_helpers import (
    CONFIG,
    Doc,
    apply,
    initialize,
    inline_params,
    position,
    send_raw_request,
    stats,
    wait_for,
    wait_ready,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import LanguageClient

from dgls.languages import count_syntax_errors

pytestmark = pytest.mark.asyncio(loop_scope="module")

# plaintext: the notes documents here are not a language dgls-tiny was trained on (python)
SETTINGS = {
    "dgls": {
        "steps": 4,
        "debounceMs": 20,
        "candidates": 2,
        "maxCanvas": 16,
        "languages": {"enable": ["plaintext"]},
        "contextBudget": {"prefixTokens": 128, "suffixTokens": 32},
    }
}
NOTES = "Shopping list for the week:\n\n\nRemember to pay the rent on Friday.\n"
NOTES_AT = NOTES.index("\n\n") + 1  # the empty line: a LINE span, multi-line middles allowed


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, model_path: str):
    options = {"dgls": {**SETTINGS["dgls"], "model": model_path}}
    lsp_client.init_result = await initialize(lsp_client, options)
    status = await wait_ready(lsp_client)
    assert status.state == "ready", f"model did not load: {status}"
    yield
    await lsp_client.shutdown_session()


async def test_capabilities(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert {"dgls.rewrite", "dgls.showConfig", "dgls.restartModel"} <= set(caps.execute_command_provider.commands)
    assert client.init_result.server_info.name == "dgls"


async def test_show_config_and_status(client: LanguageClient):
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    assert res["settings"]["steps"] == 4 and res["settings"]["contextBudget"]["prefixTokens"] == 128
    assert res["status"]["state"] == "ready" and res["status"]["device"] == "cpu"
    assert any(getattr(s, "device", None) == "cpu" for s in client.statuses)


async def test_python_candidates_parse(client: LanguageClient):
    src = "def area(w, h):\n    \n\n\nprint(area(2, 3))\n"
    doc = Doc(client, "file:///e2e/area.py", src)
    result = await client.text_document_inline_completion_async(inline_params(doc, doc.pos("h):\n    ")))
    for item in result.items:  # whatever the model proposes must keep the file parsing
        after = apply(src, [types.TextEdit(range=item.range, new_text=item.insert_text)])
        assert count_syntax_errors("python", after.encode()) == 0, after
        assert after.endswith("\n\n\nprint(area(2, 3))\n")
    doc.close()


async def test_automatic_trigger_gives_one_candidate(client: LanguageClient):
    doc = Doc(client, "file:///e2e/notes2.txt", NOTES.replace("rent", "bills"), language="plaintext")
    result = await client.text_document_inline_completion_async(
        inline_params(doc, position(doc.text, NOTES_AT), automatic=True)
    )
    assert len(result.items) <= 1
    doc.close()


async def test_automatic_trigger_suppressed_where_it_makes_no_sense(client: LanguageClient):
    src = 'name = "hello wor"\ntotal = counter + 1\n# a comment \n'
    doc = Doc(client, "file:///e2e/suppress.py", src)
    before = (await stats(client))["requests"]
    for marker in ('"hello wor', "total = coun", "# a comment "):  # in a string, inside a word, in a comment
        result = await client.text_document_inline_completion_async(inline_params(doc, doc.pos(marker), automatic=True))
        assert not result.items, marker
    assert (await stats(client))["requests"] == before  # no model call at all
    doc.close()


async def test_rewrite_on_a_changed_document_is_refused(client: LanguageClient):
    text = "a = 1\nb = 2\n"
    doc = Doc(client, "file:///e2e/stale.txt", text, language="plaintext")
    n_applied, n_messages, n_progress = len(client.applied), len(client.messages), len(client.progress_reports)
    task = asyncio.ensure_future(
        client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command="dgls.rewrite",
                arguments=[
                    doc.uri,
                    {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}},
                    "rename",
                ],
            )
        )
    )
    await wait_for(lambda: len(client.progress_reports) > n_progress, what="the rewrite to start")
    doc.edit(len(text), len(text), "c = 3\n")  # the user keeps typing while the model runs
    res = await task
    assert res["applied"] is False and "changed while the edit was computed" in res["reason"]
    assert any("not applied" in m.message for m in client.messages[n_messages:])
    assert len(client.applied) == n_applied  # never sent to the client
    doc.close()


async def usage(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.stats"))


async def test_acceptance_signals_are_counted(client: LanguageClient):
    assert {"dgls.accepted", "dgls.partiallyAccepted", "dgls.dismissed", "dgls.stats"} <= set(
        client.init_result.capabilities.execute_command_provider.commands
    )
    doc = Doc(client, "file:///e2e/signals.txt", NOTES.replace("rent", "gas bill"), language="plaintext")
    before = await usage(client)
    result = await client.text_document_inline_completion_async(inline_params(doc, position(doc.text, NOTES_AT)))
    assert result.items
    served = await usage(client)
    assert served["itemsServed"] == before["itemsServed"] + len(result.items)
    assert served["modelCalls"] == before["modelCalls"] + 1 and served["nfe"] > before["nfe"]
    commands = [item.command for item in result.items]
    assert all(c.command == "dgls.accepted" and isinstance(c.arguments[0], str) for c in commands)
    assert len({c.arguments[0] for c in commands}) == len(commands)  # one id per item
    first = commands[0].arguments[0]
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(  # what VS Code does on accept
            command=commands[0].command, arguments=commands[0].arguments
        )
    )
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="dgls.partiallyAccepted", arguments=[first, 4])
    )
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="dgls.dismissed", arguments=[first])
    )
    again = await client.text_document_inline_completion_async(inline_params(doc, position(doc.text, NOTES_AT)))
    after = await usage(client)
    assert (after["accepted"], after["partiallyAccepted"], after["dismissed"]) == (
        before["accepted"] + 1,
        before["partiallyAccepted"] + 1,
        before["dismissed"] + 1,
    )
    assert after["acceptedChars"] == before["acceptedChars"] + 4
    assert after["cacheHits"] == before["cacheHits"] + 1 and after["modelCalls"] == served["modelCalls"]
    assert after["itemsServed"] == served["itemsServed"] + len(again.items)
    with pytest.raises(JsonRpcInvalidParams, match="dgls.partiallyAccepted"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dgls.partiallyAccepted", arguments=[first])
        )
    doc.close()


async def test_items_carry_their_token_confidence(client: LanguageClient):
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"dgls": {"lowConfidence": 1.0}})
    )  # every token is "unsure"
    doc = Doc(client, "file:///e2e/confidence.txt", NOTES.replace("rent", "phone bill"), language="plaintext")
    result = await client.text_document_inline_completion_async(inline_params(doc, position(doc.text, NOTES_AT)))
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"dgls": {"lowConfidence": 0.5}})
    )
    assert result.items
    for item in result.items:
        info = item.command.arguments[1]
        assert 0.0 <= info["confidence"] <= 1.0
        tokens, width = info["tokens"], len(item.insert_text.encode("utf-16-le")) // 2  # utf-16 units
        assert tokens and all(0 <= a < b <= width and 0.0 <= c <= 1.0 for a, b, c in tokens), tokens
        assert all(tokens[i][1] <= tokens[i + 1][0] for i in range(len(tokens) - 1))
        assert info["unsure"] and info["unsure"][0][0] == tokens[0][0] and info["unsure"][-1][1] == tokens[-1][1]
    doc.close()


async def test_completion_after_a_partial_word_starts_at_the_word(client: LanguageClient):
    # the same line earlier in the file seeds the middle, so the model has a word to finish whatever it samples
    src = "def add(total, b):\n    return total + b\n\n\ndef plus(total, b):\n    return tot\n"
    doc = Doc(client, "file:///e2e/partial.py", src)
    at = src.rindex("return tot")
    cursor = position(src, at + len("return tot"))
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=doc.ident(),
            position=cursor,
            context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked),
        )
    )
    assert result.items
    for item in result.items:  # clients filter by the word before the cursor: "tot"
        assert item.text_edit.range.start == position(src, at + len("return ")) and item.text_edit.range.end == cursor
        assert item.text_edit.new_text.startswith("tot") and item.filter_text.startswith("tot")
        assert apply(src, [item.text_edit]).startswith(src[:at] + "return tot")
    doc.close()


# --- bad input: each gets a defined answer and the server keeps serving --------------------------------


async def test_unknown_uri_closed_document_and_out_of_range(client: LanguageClient):
    ghost = types.TextDocumentIdentifier(uri="file:///nowhere/never-opened.py")
    params = types.InlineCompletionParams(
        text_document=ghost,
        position=types.Position(line=0, character=0),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
    )
    assert not (await client.text_document_inline_completion_async(params)).items
    doc = Doc(client, "file:///e2e/short.py", "x = 1\n")
    far = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=500, character=3)))
    assert not far.items
    doc.close()
    closed = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=0, character=5)))
    assert not closed.items
    assert not await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc.ident(),
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=1)),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )


async def test_binary_and_unknown_language(client: LanguageClient):
    blob = Doc(client, "file:///e2e/blob.bin", "\x00\x01\x02ELF\x00\n\x00", language="binary")
    assert not (
        await client.text_document_inline_completion_async(inline_params(blob, types.Position(line=0, character=3)))
    ).items
    blob.close()
    odd = Doc(client, "file:///e2e/prog.cob", "IDENTIFICATION DIVISION.\n\nPROGRAM-ID. HELLO.\n", language="cobol")
    result = await client.text_document_inline_completion_async(inline_params(odd, types.Position(line=1, character=0)))
    assert isinstance(result, types.InlineCompletionList)
    odd.close()


async def test_huge_document_is_answered(client: LanguageClient):
    line = "value = compute(alpha, beta, gamma)  # padding padding padding\n"
    text = line * (10_000_000 // len(line)) + "result = \n"
    doc = Doc(client, "file:///e2e/huge.py", text)
    cursor = position(text, len(text) - 1)
    result = await asyncio.wait_for(
        client.text_document_inline_completion_async(inline_params(doc, cursor, automatic=True)), timeout=120
    )
    for item in result.items:
        assert item.range.start == cursor
    doc.close()


async def test_malformed_params_get_invalid_params(client: LanguageClient):
    bad = {
        "textDocument": {"uri": "file:///e2e/x.py"},
        "position": {"line": "three", "character": -1},
        "context": {"triggerKind": 1},
    }
    with pytest.raises(JsonRpcInvalidParams, match="textDocument/inlineCompletion"):
        await send_raw_request(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, bad)
    with pytest.raises(JsonRpcInvalidParams, match="dgls.rewrite"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="dgls.rewrite", arguments=["file:///e2e/x.py", {"start": 3}, "x"])
        )
    with pytest.raises(JsonRpcInvalidParams, match="codeAction/resolve"):
        await send_raw_request(client, types.CODE_ACTION_RESOLVE, {"title": "forged", "data": {"uri": 5}})
    with pytest.raises(JsonRpcInvalidParams, match="codeAction/resolve"):
        await send_raw_request(client, types.CODE_ACTION_RESOLVE, {"title": 7})
    assert (await stats(client))["state"] == "ready"  # still serving


async def test_request_storm(client: LanguageClient):
    text = "Notes:\n\n\nEnd.\n"
    doc = Doc(client, "file:///e2e/storm.txt", text, language="plaintext")
    at = position(text, text.index("\n\n") + 1)
    results = await asyncio.wait_for(
        asyncio.gather(
            *[client.text_document_inline_completion_async(inline_params(doc, at, automatic=True)) for _ in range(25)]
        ),
        timeout=120,
    )
    assert all(isinstance(r, types.InlineCompletionList) for r in results)
    assert sum(bool(r.items) for r in results) <= 1  # the newest wins; the others were superseded
    assert (await stats(client))["state"] == "ready"
    doc.close()
