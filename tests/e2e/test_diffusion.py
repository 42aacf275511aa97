"""What only a bidirectional canvas does, through the real server: several holes filled in one model call, a
selection regenerated in place.

The young embedded model's code does not parse yet, so the documents are sent as plain text (no parse check drops
a middle): these tests check that the mechanism runs end to end (one call, one edit per hole, each at its hole,
the code between the holes untouched), not the quality of what the model writes.
"""

from __future__ import annotations

import difflib

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, apply, initialize, inline_params, offset, position, wait_ready
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLASS = """class Account:
    def __init__(self, owner, balance):
        ...

    def deposit(self, amount):
        ...

    def report(self):
        ...
"""


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, model_path):
    await initialize(
        lsp_client,
        {"dgls": {"model": model_path, "steps": 4, "regenerateShare": 0.25, "languages": {"enable": ["plaintext"]}}},
    )
    status = await wait_ready(lsp_client)
    assert status.state == "ready", f"model did not load: {status}"
    yield
    await lsp_client.shutdown_session()


async def usage(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.stats"))


async def test_three_holes_filled_in_one_model_call(client: LanguageClient):
    doc = Doc(client, "file:///e2e/account.py.txt", CLASS, language="plaintext")
    here = position(CLASS, 0)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=doc.ident(),
            range=types.Range(start=here, end=here),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    (action,) = [a for a in actions if "Fill 3 hole" in a.title]
    before = await usage(client)
    resolved = await client.code_action_resolve_async(action)
    after = await usage(client)
    assert after["modelCalls"] - before["modelCalls"] == 1  # the three holes share one canvas
    (change,) = resolved.edit.document_changes
    holes = [i for i in range(len(CLASS)) if CLASS.startswith("...", i)]
    got = sorted((offset(CLASS, e.range.start), offset(CLASS, e.range.end)) for e in change.edits)
    assert got == [(h, h + 3) for h in holes]  # one edit per hole, each replacing its marker
    assert all(e.new_text.strip() for e in change.edits)
    filled = apply(CLASS, change.edits)
    for line in ("class Account:", "    def deposit(self, amount):", "    def report(self):"):
        assert line in filled  # the pinned code between the holes is kept
    doc.close()


async def test_regenerate_selection_in_place_keeps_most_of_it(client: LanguageClient):
    """regenerateShare 0.25: a quarter of the selection's tokens are renoised, the rest kept as they were, so
    most of the old text survives, in order (the old behaviour, all noise, kept next to nothing)."""
    text = (
        "totals = {}\nfor row in rows:\n    totals[row.key] = totals.get(row.key, 0) + row.amount * row.rate\n"
        "print(totals)\n"
    )
    doc = Doc(client, "file:///e2e/totals.txt", text, language="plaintext")
    start, end = text.index("    totals[row.key]"), text.index("print(")
    sel = types.Range(start=position(text, start), end=position(text, end))
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(text_document=doc.ident(), range=sel, context=types.CodeActionContext(diagnostics=[]))
    )
    (action,) = [a for a in actions if "Regenerate selection" in a.title]
    resolved = await client.code_action_resolve_async(action)
    (change,) = resolved.edit.document_changes
    (edit,) = change.edits
    assert (offset(text, edit.range.start), offset(text, edit.range.end)) == (start, end)
    old, new = text[start:end], edit.new_text
    assert new != old
    kept = sum(b.size for b in difflib.SequenceMatcher(None, old, new, autojunk=False).get_matching_blocks())
    assert kept >= 0.6 * len(old), (old, new)
    doc.close()


HELPERS = """import client

def load(user_id):
    return client.fetch_user(user_id, timeout=30, strict=False)

def refresh(user_id):
    return client.fetch_user(user_id, timeout=30, strict=False)

def audit(user_id):
    return client.fetch_user(user_id, timeout=30, strict=False)
"""


async def test_ghost_text_seeded_from_another_open_document(client: LanguageClient):
    """Another open document calls client.fetch_user(...) the same way three times: typing the start of the call
    here starts the canvas from the rest of it, and the model keeps it as the ghost text (the young model writes
    nothing like it from noise; it keeps a seed token where its own argmax agrees, which it does for this call's
    words: for `retries` it does not, and would replace that token)."""
    other = Doc(client, "file:///e2e/helpers.txt", HELPERS, language="plaintext")
    text = "def purge(user_id):\n    return client.fetch_user(\n"
    doc = Doc(client, "file:///e2e/purge.txt", text, language="plaintext")
    at = text.index("fetch_user(") + len("fetch_user(")
    before = (await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig")))[
        "status"
    ]
    # ghost text while typing runs the seeded row alone: its middle is the ghost text
    typed = await client.text_document_inline_completion_async(inline_params(doc, position(text, at), automatic=True))
    assert typed.items, "no ghost text"
    assert typed.items[0].insert_text.startswith("user_id, timeout=30, strict=False)"), typed.items[0].insert_text
    # an explicit request runs a noise row beside it, and the seeded middle is one of the candidates
    result = await client.text_document_inline_completion_async(inline_params(doc, position(text, at)))
    assert any(i.insert_text.startswith("user_id, timeout=30, strict=False)") for i in result.items), [
        i.insert_text for i in result.items
    ]
    status = (await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig")))[
        "status"
    ]
    assert status["seeded"] == before["seeded"] + 2
    doc.close()
    other.close()
