"""The real server over stdio with the model loaded: completions, code actions, commands, caches, bad input.

One server for the module (loading the model once); each test opens its own documents.
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
    offset,
    position,
    send_raw_request,
    wait_for,
    wait_ready,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pytest_lsp import LanguageClient

from dgls.postprocess import count_syntax_errors

pytestmark = pytest.mark.asyncio(loop_scope="module")

SETTINGS = {"dgls": {"steps": 4, "debounceMs": 20, "candidates": 3, "maxCanvas": 32,
                     "contextBudget": {"prefixTokens": 256, "suffixTokens": 64}}}
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


async def stats(client: LanguageClient) -> dict:
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    return res["status"]


async def test_capabilities(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert {"dgls.rewrite", "dgls.showConfig", "dgls.restartModel"} <= set(caps.execute_command_provider.commands)
    assert client.init_result.server_info.name == "dgls"


async def test_show_config_and_status(client: LanguageClient):
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    assert res["settings"]["steps"] == 4 and res["settings"]["contextBudget"]["prefixTokens"] == 256
    assert res["status"]["state"] == "ready" and res["status"]["device"] == "cpu"
    assert any(getattr(s, "device", None) == "cpu" for s in client.statuses)


async def test_inline_completion_keeps_the_suffix(client: LanguageClient):
    doc = Doc(client, "file:///e2e/notes.txt", NOTES, language="plaintext")
    cursor = position(NOTES, NOTES_AT)
    result = await client.text_document_inline_completion_async(inline_params(doc, cursor))
    assert result.items, "expected at least one candidate on an Invoked trigger"
    assert len(result.items) <= 3
    assert len({item.insert_text for item in result.items}) == len(result.items)  # distinct
    for item in result.items:
        start, end = offset(NOTES, item.range.start), offset(NOTES, item.range.end)
        assert start == NOTES_AT
        after = apply(NOTES, [types.TextEdit(range=item.range, new_text=item.insert_text)])
        assert after[:start] == NOTES[:start]
        assert after[start + len(item.insert_text):] == NOTES[end:]  # suffix preserved
        assert item.insert_text.strip()
    doc.close()


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
        inline_params(doc, position(doc.text, NOTES_AT), automatic=True))
    assert len(result.items) <= 1
    doc.close()


async def test_automatic_trigger_suppressed_where_it_makes_no_sense(client: LanguageClient):
    src = 'name = "hello wor"\ntotal = counter + 1\n# a comment \n'
    doc = Doc(client, "file:///e2e/suppress.py", src)
    before = (await stats(client))["requests"]
    for marker in ('"hello wor', "total = coun", "# a comment "):  # in a string, inside a word, in a comment
        result = await client.text_document_inline_completion_async(inline_params(doc, doc.pos(marker),
                                                                                  automatic=True))
        assert not result.items, marker
    assert (await stats(client))["requests"] == before  # no model call at all
    doc.close()


async def test_completion_fallback(client: LanguageClient):
    doc = Doc(client, "file:///e2e/notes3.txt", NOTES, language="plaintext")
    cursor = position(NOTES, NOTES_AT)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=doc.ident(), position=cursor,
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert result.is_incomplete is True
    assert result.items
    for item in result.items:
        assert item.text_edit.range.start == cursor
        after = apply(NOTES, [item.text_edit])
        assert after.endswith(NOTES[NOTES_AT:])
    doc.close()


async def test_typed_through_cache(client: LanguageClient):
    text = "Things to pack for the trip:\n\n\nDo not forget the tickets.\n"
    at = text.index("\n\n") + 1
    doc = Doc(client, "file:///e2e/trip.txt", text, language="plaintext")
    first = await client.text_document_inline_completion_async(inline_params(doc, position(text, at)))
    ghost = first.items[0].insert_text
    assert len(ghost) >= 2, f"need a ghost text of 2+ characters to type through, got {ghost!r}"
    requests = (await stats(client))["requests"]
    doc.edit(at, at, ghost[0])  # the user types the first character of the ghost text
    cursor = position(doc.text, at + 1)
    again = await client.text_document_inline_completion_async(inline_params(doc, cursor, automatic=True))
    assert [i.insert_text for i in again.items] == [ghost[1:]]
    assert again.items[0].range.start == cursor
    status = await stats(client)
    assert status["requests"] == requests and status["typedThrough"] >= 1  # answered without the model
    doc.close()


def _action(actions, title_part: str) -> types.CodeAction:
    found = [a for a in actions if title_part in a.title]
    assert len(found) == 1, [a.title for a in actions]
    return found[0]


async def test_fill_holes_through_resolve(client: LanguageClient):
    text = "Recipe:\n...\nBake for 20 minutes.\n"
    doc = Doc(client, "file:///e2e/recipe.txt", text, language="plaintext")
    here = position(text, 0)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc.ident(), range=types.Range(start=here, end=here),
        context=types.CodeActionContext(diagnostics=[])))
    action = _action(actions, "Fill 1 hole")
    assert action.edit is None  # the model runs only on resolve
    resolved = await client.code_action_resolve_async(action)
    (change,) = resolved.edit.document_changes
    assert change.text_document.uri == doc.uri and change.text_document.version == doc.version
    assert len(change.edits) == 1
    hole = text.index("...")
    assert (offset(text, change.edits[0].range.start), offset(text, change.edits[0].range.end)) == (hole, hole + 3)
    after = apply(text, change.edits)
    assert after.startswith("Recipe:\n") and after.endswith("\nBake for 20 minutes.\n")
    assert client.progress_reports, "resolve should report work-done progress"
    doc.close()


async def test_regenerate_selection_through_resolve(client: LanguageClient):
    text = "Dear Sam,\nthanks for the lovely dinner last night.\nBest, Kim\n"
    doc = Doc(client, "file:///e2e/letter.txt", text, language="plaintext")
    start, end = text.index("thanks"), text.index(" last night")
    sel = types.Range(start=position(text, start), end=position(text, end))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc.ident(), range=sel, context=types.CodeActionContext(diagnostics=[])))
    resolved = await client.code_action_resolve_async(_action(actions, "Regenerate selection"))
    (change,) = resolved.edit.document_changes
    assert change.text_document.version == doc.version
    for e in change.edits:
        assert e.range.start == sel.start
        assert apply(text, [e]).endswith(text[end:])
    doc.close()


async def test_resolve_after_the_document_changed_is_refused(client: LanguageClient):
    text = "Recipe:\n...\n"
    doc = Doc(client, "file:///e2e/recipe2.txt", text, language="plaintext")
    here = position(text, 0)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc.ident(), range=types.Range(start=here, end=here),
        context=types.CodeActionContext(diagnostics=[])))
    doc.edit(0, 0, "My ")
    with pytest.raises(JsonRpcException, match="changed since the action was offered"):
        await client.code_action_resolve_async(actions[0])
    doc.close()


async def test_rewrite_command_applies_a_versioned_edit(client: LanguageClient):
    text = "x = 1\ny = 2\nz = x + y\n"
    doc = Doc(client, "file:///e2e/rewrite.txt", text, language="plaintext")
    rng = types.Range(start=position(text, 6), end=position(text, 11))
    n = len(client.applied)
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dgls.rewrite", arguments=[doc.uri, {"start": {"line": 1, "character": 0},
                                                     "end": {"line": 1, "character": 5}}, "use a bigger number"]))
    assert rng.start.line == 1
    if res["applied"]:
        (params,) = client.applied[n:]
        (change,) = params.edit.document_changes
        assert change.text_document.version == doc.version
        assert change.edits[0].range == rng
    else:  # the model proposed nothing usable: nothing may have been sent
        assert res["reason"] == "no rewrite" and len(client.applied) == n
    doc.close()


async def test_rewrite_on_a_changed_document_is_refused(client: LanguageClient):
    text = "a = 1\nb = 2\n"
    doc = Doc(client, "file:///e2e/stale.txt", text, language="plaintext")
    n_applied, n_messages, n_progress = len(client.applied), len(client.messages), len(client.progress_reports)
    task = asyncio.ensure_future(client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dgls.rewrite", arguments=[doc.uri, {"start": {"line": 0, "character": 0},
                                                     "end": {"line": 0, "character": 5}}, "rename"])))
    await wait_for(lambda: len(client.progress_reports) > n_progress, what="the rewrite to start")
    doc.edit(len(text), len(text), "c = 3\n")  # the user keeps typing while the model runs
    res = await task
    if res["reason"] != "no rewrite":
        assert res["applied"] is False and "changed while the rewrite ran" in res["reason"]
        assert any("not applied" in m.message for m in client.messages[n_messages:])
    assert len(client.applied) == n_applied  # never sent to the client
    doc.close()


# --- bad input: each gets a defined answer and the server keeps serving --------------------------------


async def test_unknown_uri_closed_document_and_out_of_range(client: LanguageClient):
    ghost = types.TextDocumentIdentifier(uri="file:///nowhere/never-opened.py")
    params = types.InlineCompletionParams(text_document=ghost, position=types.Position(line=0, character=0),
                                          context=types.InlineCompletionContext(
                                              trigger_kind=types.InlineCompletionTriggerKind.Invoked))
    assert not (await client.text_document_inline_completion_async(params)).items
    doc = Doc(client, "file:///e2e/short.py", "x = 1\n")
    far = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=500, character=3)))
    assert not far.items
    doc.close()
    closed = await client.text_document_inline_completion_async(inline_params(doc, types.Position(line=0, character=5)))
    assert not closed.items
    assert not await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc.ident(), range=types.Range(start=types.Position(line=0, character=0),
                                                     end=types.Position(line=0, character=1)),
        context=types.CodeActionContext(diagnostics=[])))


async def test_binary_and_unknown_language(client: LanguageClient):
    blob = Doc(client, "file:///e2e/blob.bin", "\x00\x01\x02ELF\x00\n\x00", language="binary")
    assert not (await client.text_document_inline_completion_async(
        inline_params(blob, types.Position(line=0, character=3)))).items
    blob.close()
    odd = Doc(client, "file:///e2e/prog.cob", "IDENTIFICATION DIVISION.\n\nPROGRAM-ID. HELLO.\n", language="cobol")
    result = await client.text_document_inline_completion_async(inline_params(odd, types.Position(line=1,
                                                                                                    character=0)))
    assert isinstance(result, types.InlineCompletionList)
    odd.close()


async def test_huge_document_is_answered(client: LanguageClient):
    line = "value = compute(alpha, beta, gamma)  # padding padding padding\n"
    text = line * (10_000_000 // len(line)) + "result = \n"
    doc = Doc(client, "file:///e2e/huge.py", text)
    cursor = position(text, len(text) - 1)
    result = await asyncio.wait_for(client.text_document_inline_completion_async(
        inline_params(doc, cursor, automatic=True)), timeout=120)
    for item in result.items:
        assert item.range.start == cursor
    doc.close()


async def test_malformed_params_get_invalid_params(client: LanguageClient):
    bad = {"textDocument": {"uri": "file:///e2e/x.py"}, "position": {"line": "three", "character": -1},
           "context": {"triggerKind": 1}}
    with pytest.raises(JsonRpcInvalidParams, match="textDocument/inlineCompletion"):
        await send_raw_request(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, bad)
    with pytest.raises(JsonRpcInvalidParams, match="dgls.rewrite"):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dgls.rewrite", arguments=["file:///e2e/x.py", {"start": 3}, "x"]))
    with pytest.raises(JsonRpcInvalidParams, match="codeAction/resolve"):
        await send_raw_request(client, types.CODE_ACTION_RESOLVE, {"title": "forged", "data": {"uri": 5}})
    with pytest.raises(JsonRpcInvalidParams, match="codeAction/resolve"):
        await send_raw_request(client, types.CODE_ACTION_RESOLVE, {"title": 7})
    assert (await stats(client))["state"] == "ready"  # still serving


async def test_request_storm(client: LanguageClient):
    text = "Notes:\n\n\nEnd.\n"
    doc = Doc(client, "file:///e2e/storm.txt", text, language="plaintext")
    at = position(text, text.index("\n\n") + 1)
    results = await asyncio.wait_for(asyncio.gather(*[
        client.text_document_inline_completion_async(inline_params(doc, at, automatic=True)) for _ in range(25)]),
        timeout=120)
    assert all(isinstance(r, types.InlineCompletionList) for r in results)
    assert sum(bool(r.items) for r in results) <= 1  # the newest wins; the others were superseded
    assert (await stats(client))["state"] == "ready"
    doc.close()
