"""Seeds from the workspace folders: a file that is not open, read (read-only, bounded) after initialized."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from e2e_helpers import CONFIG, Doc, initialize, inline_params, position, wait_ready
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALLS = "\n".join(
    f"def f{i}(user_id):\n    return client.fetch_user(user_id, timeout=30, strict=False)\n" for i in range(3)
)


async def status(client: LanguageClient) -> dict:
    res = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    return res["status"]


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("workspace")
    (folder / "users.py").write_text(CALLS)
    (folder / "notes.bin").write_bytes(b"\x00\x01binary")
    await initialize(
        lsp_client,
        {"dgls": {"model": model_path, "steps": 4, "languages": {"enable": ["plaintext"]}}},
        folders=[folder.as_uri()],
    )
    assert (await wait_ready(lsp_client)).state == "ready"
    for _ in range(600):  # the folders are read off the event loop after initialized
        if (await status(lsp_client))["workspaceFiles"]:
            break
        await asyncio.sleep(0.05)
    lsp_client.folder = folder
    yield
    await lsp_client.shutdown_session()


async def test_a_call_in_a_workspace_file_seeds_the_ghost_text(client: LanguageClient):
    assert (await status(client))["workspaceFiles"] == 1  # users.py; the binary file is skipped
    text = "def purge(user_id):\n    return client.fetch_user(\n"
    doc = Doc(client, (client.folder / "purge.txt").as_uri(), text, language="plaintext")
    at = text.index("fetch_user(") + len("fetch_user(")
    # ghost text while typing runs the seed alone: the model kept it (a noise row would not write this call)
    typed = await client.text_document_inline_completion_async(inline_params(doc, position(text, at), automatic=True))
    result = await client.text_document_inline_completion_async(inline_params(doc, position(text, at)))
    assert typed.items and typed.items[0].insert_text.startswith("user_id, timeout=30, strict=False)")
    # an explicit request runs a noise row beside the seeded one: the seeded middle is one of its candidates
    assert any(i.insert_text.startswith("user_id, timeout=30, strict=False)") for i in result.items)
    assert (await status(client))["seeded"] >= 2
    doc.close()
