"""Mechanics that need a model which writes something: ranges, suffix, candidates, caches, edits.

The server loads the embedded dgls-tiny (the random-weight tiny checkpoint only where the package ships no
model). Explicit requests ask for a non-empty middle, so every path from middle to edit runs; the young model's
text is not code yet, so the documents are plain text and the Python parse check does not drop it.
"""

from __future__ import annotations

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, apply, initialize, inline_params, offset, position, stats, wait_ready
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

NOTES = "Shopping list for the week:\n\n\nRemember to pay the rent on Friday.\n"
NOTES_AT = NOTES.index("\n\n") + 1  # the empty line: a LINE span, multi-line middles allowed


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, model_path):
    await initialize(
        lsp_client,
        {
            "dgls": {
                "model": model_path,
                "steps": 4,
                # Automatic triggers on the Invoked budget: their calls differ from Invoked ones only where the
                # policy says so (test_automatic_request_needs_a_middle_only_where_the_code_is_incomplete)
                "automaticSteps": 4,
                "automaticCanvas": 32,
                "automaticSuffix": 1024,
                "debounceMs": 20,
                "candidates": 3,
                "maxCanvas": 32,
                "languages": {"enable": ["plaintext"]},
            }
        },
    )  # not dgls-tiny's python
    status = await wait_ready(lsp_client)
    assert status.state == "ready", f"model did not load: {status}"
    yield
    await lsp_client.shutdown_session()


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
        assert after[start + len(item.insert_text) :] == NOTES[end:]  # suffix preserved
        assert item.insert_text.strip()
    doc.close()


async def test_completion_fallback(client: LanguageClient):
    doc = Doc(client, "file:///e2e/notes3.txt", NOTES, language="plaintext")
    cursor = position(NOTES, NOTES_AT)
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=doc.ident(),
            position=cursor,
            context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked),
        )
    )
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


TOTAL = "def total(items):\n    result = \n    for item in items:\n        result += item\n    return result\n"


@pytest.mark.parametrize(("after", "incomplete"), [("result = ", True), ("return result", False)])
async def test_automatic_request_needs_a_middle_only_where_the_code_is_incomplete(
    client: LanguageClient, after: str, incomplete: bool
):
    """Automatic requests may end the middle at once, except where the code is incomplete as it stands.

    After ``result = `` the line needs an operand, so the server asks the model for a non-empty middle even on an
    Automatic trigger: the same model call as an Invoked request there, which the result cache shows. At the end
    of ``return result`` an empty middle may be the answer, and the Automatic call differs from the Invoked one.
    (Where each case counts as incomplete: tests/dgls/test_context.py.)
    """
    at = TOTAL.index(after) + len(after)

    async def complete(uri: str, kind: types.CompletionTriggerKind) -> None:
        doc = Doc(client, uri, TOTAL)  # a document of its own: no ghost text of the other request to type through
        await client.text_document_completion_async(
            types.CompletionParams(
                text_document=doc.ident(),
                position=position(TOTAL, at),
                context=types.CompletionContext(trigger_kind=kind, trigger_character=" "),
            )
        )
        doc.close()

    await complete(f"file:///e2e/invoked{at}.py", types.CompletionTriggerKind.Invoked)  # one candidate, non-empty
    before = await stats(client)
    await complete(f"file:///e2e/automatic{at}.py", types.CompletionTriggerKind.TriggerCharacter)
    status = await stats(client)
    assert status["requests"] == before["requests"] + 1
    assert status["resultCache"] - before["resultCache"] == (1 if incomplete else 0)


def _action(actions, title_part: str) -> types.CodeAction:
    found = [a for a in actions if title_part in a.title]
    assert len(found) == 1, [a.title for a in actions]
    return found[0]


async def test_fill_holes_through_resolve(client: LanguageClient):
    text = "Recipe:\n...\nBake for 20 minutes.\n"
    doc = Doc(client, "file:///e2e/recipe.txt", text, language="plaintext")
    here = position(text, 0)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc.ident(),
            range=types.Range(start=here, end=here),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
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
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(text_document=doc.ident(), range=sel, context=types.CodeActionContext(diagnostics=[]))
    )
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
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc.ident(),
            range=types.Range(start=here, end=here),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    doc.edit(0, 0, "My ")
    with pytest.raises(JsonRpcException, match="changed since the action was offered"):
        await client.code_action_resolve_async(actions[0])
    doc.close()


async def test_rewrite_command_applies_a_versioned_edit(client: LanguageClient):
    text = "x = 1\ny = 2\nz = x + y\n"
    doc = Doc(client, "file:///e2e/rewrite.txt", text, language="plaintext")
    rng = types.Range(start=position(text, 6), end=position(text, 11))
    n = len(client.applied)
    res = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="dgls.rewrite",
            arguments=[
                doc.uri,
                {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 5}},
                "use a bigger number",
            ],
        )
    )
    assert res == {"applied": True, "reason": None}
    (params,) = client.applied[n:]
    (change,) = params.edit.document_changes
    assert change.text_document.version == doc.version
    assert change.edits[0].range == rng
    doc.close()


async def test_code_action_as_a_command(client: LanguageClient):
    """For clients that cannot resolve: the same action through dgls.applyCodeAction and workspace/applyEdit."""
    text = "Recipe:\n...\nServe warm.\n"
    doc = Doc(client, "file:///e2e/recipe3.txt", text, language="plaintext")
    here = position(text, 0)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc.ident(),
            range=types.Range(start=here, end=here),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    action = _action(actions, "Fill 1 hole")
    assert action.command is None  # this client resolves, so no command is attached
    n = len(client.applied)
    res = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="dgls.applyCodeAction", arguments=[{**action.data, "title": action.title}])
    )
    assert res == {"applied": True, "reason": None}
    (params,) = client.applied[n:]
    (change,) = params.edit.document_changes
    assert change.text_document.version == doc.version
    hole = text.index("...")
    assert [(offset(text, e.range.start), offset(text, e.range.end)) for e in change.edits] == [(hole, hole + 3)]
    doc.close()
