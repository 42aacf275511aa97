"""The real `dgls --stdio --backend vllm` against the stand-in vLLM server, spoken to over LSP.

The inline completion must be the middle the server computed, cut at the first pinned slot (the server fills
everything from there on with junk) and shaped as locally; faults give an empty answer and one ``dgls/status``
error with the reason; ``$/cancelRequest`` closes the HTTP request within 100 ms; a server that goes away and
comes back is used again.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from e2e_helpers import SERVER, Doc, initialize, inline_params, make_client, wait_for, wait_ready  # noqa: E402
from vllm_stub import StubVllm  # noqa: E402

from dgls.engine import Engine, EngineOptions  # noqa: E402
from dgls.model.remote import RemoteOptions  # noqa: E402
from dgls.postprocess import shape_middle  # noqa: E402

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.filterwarnings("ignore:Unknown progress token")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
URL = f"http://127.0.0.1:{PORT}"
KEY_ENV, KEY = "DGLS_E2E_VLLM_KEY", "sk-e2e-never-logged-4711"
CONFIG = ClientServerConfig(
    server_command=[
        *SERVER,
        "--backend",
        "vllm",
        "--backend-url",
        URL,
        "--backend-model",
        "dgls-tiny",
        "--tokenizer",
        "dgls-tiny",
        "--backend-api-key-env",
        KEY_ENV,
        "--backend-timeout-ms",
        "30000",
    ],
    client_factory=make_client,
    server_env={KEY_ENV: KEY},
)
TEXT = "Things to do today:\n\n\nCall the plumber.\n"


@pytest.fixture(scope="module")
def server(stub_model):
    stub = StubVllm(stub_model, port=PORT, api_key=KEY).start()
    yield stub
    stub.stop()


@pytest_lsp.fixture(config=CONFIG, scope="module")
async def client(lsp_client: LanguageClient, server):
    # no workspace seeds: a seeded request sends a noise canvas beside the seeded one, and these tests script
    # the server's answer to one canvas per request (seeds at the vLLM server: tests/remote/test_backend.py)
    settings = {"debounceMs": 0, "candidates": 1, "languages": {"enable": ["*"]}, "workspaceSeeds": False}
    await initialize(lsp_client, settings)
    assert (await wait_ready(lsp_client)).state == "ready"
    yield
    await lsp_client.shutdown_session()


def pos(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    return types.Position(line=line, character=offset - (text.rfind("\n", 0, offset) + 1))


def cursor(doc: Doc) -> types.Position:
    """On the empty line before the last one (the documents vary at their start)."""
    return pos(doc.text, doc.text.rindex("\n\n") + 1)


async def complete(client: LanguageClient, doc: Doc) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(inline_params(doc, cursor(doc)))
    return list(result.items) if result else []


def expected_edit(text: str, middle: str) -> str | None:
    """What the server's middle becomes locally: the request dgls builds there, shaped by dgls.postprocess."""
    engine = Engine(EngineOptions(remote=RemoteOptions(url=URL, tokenizer="dgls-tiny")))
    engine.wait_ready(60)
    request = engine.build_request(text, text.rindex("\n\n") + 1, language="plaintext")
    engine.shutdown()
    shaped = shape_middle(text, request, middle)
    return shaped[2] if shaped else None


def failures(client: LanguageClient) -> list:
    return [s for s in client.statuses if getattr(s, "event", None) == "infillFailed"]


async def recovered(client: LanguageClient, server: StubVllm, doc: Doc) -> None:
    """Ask until the server answers again (the backoff delay has run out); each ask a new text (no result cache)."""

    async def answered() -> bool:
        n = len(server.answers)
        doc.edit(0, 0, "y")
        await complete(client, doc)
        return len(server.answers) > n

    deadline = time.monotonic() + 30
    while not await answered():
        assert time.monotonic() < deadline, "the backend never recovered"
        await asyncio.sleep(0.2)


async def test_an_inline_completion_is_the_servers_middle_cut_at_the_first_pin(client, server):
    doc = Doc(client, "file:///remote/todo.txt", TEXT, language="plaintext")
    server.faults.append("script:Buy milk.")
    items = await complete(client, doc)
    assert [i.insert_text for i in items] == ["Buy milk."]  # and none of the junk after the first pin
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    for _ in range(5):  # the model's own middles: until one is not empty
        n = len(server.answers)
        doc.edit(0, 0, "x")
        items = await complete(client, doc)
        assert len(server.answers) == n + 1
        answer = server.answers[-1]
        assert answer.first_pin < len(answer.canvas)  # the suffix was pinned: there is a tail to cut
        expected = expected_edit(doc.text, answer.middle)
        assert [i.insert_text for i in items] == ([expected] if expected else [])
        if expected:
            break
    else:
        pytest.fail("the model's middle was empty five times")
    doc.close()


@pytest.mark.parametrize(
    "fault, reason",
    [
        (
            "status:400:diffusion_seed_canvas must hold exactly 80 ids, got 79.",
            "HTTP 400): diffusion_seed_canvas must hold exactly 80 ids, got 79.",
        ),
        ("garbage", "not JSON"),
        ("status:502", "HTTP 502"),
        ("truncated", "broke before the answer was complete"),
        ("disconnect", "broke before the answer was complete"),
    ],
)
async def test_a_fault_gives_an_empty_answer_and_one_status_error(client, server, fault, reason):
    doc = Doc(client, f"file:///remote/fault-{fault[:10]}.txt", f"{fault}\n{TEXT}", language="plaintext")
    before = len(failures(client))
    server.faults.append(fault)
    assert await complete(client, doc) == []
    await wait_for(lambda: len(failures(client)) > before, timeout=10, what="the infillFailed status")
    new = failures(client)[before:]
    assert len(new) == 1 and reason in new[0].detail, new
    assert KEY not in new[0].detail
    await recovered(client, server, doc)
    doc.close()


async def test_cancel_request_closes_the_http_request_within_100_ms(client, server):
    doc = Doc(client, "file:///remote/cancel.txt", f"cancel\n{TEXT}", language="plaintext")
    server.faults.append("slow:20")
    n = len(server.requests)
    fut = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(doc, cursor(doc)), msg_id="remote-slow-1"
    )
    await wait_for(lambda: len(server.requests) > n, timeout=30, what="the request at the vLLM server")
    t0 = time.monotonic()
    client.cancel_request(types.CancelParams(id="remote-slow-1"))
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(asyncio.wrap_future(fut), timeout=10)
    replied = time.monotonic() - t0
    await wait_for(lambda: server.disconnects, timeout=5, what="the server to see the disconnect")
    assert replied < 0.1, f"-32800 after {replied * 1e3:.0f} ms"
    assert server.disconnects[-1] - t0 < 0.1, f"disconnect after {(server.disconnects[-1] - t0) * 1e3:.0f} ms"
    doc.close()


async def test_a_server_that_goes_away_and_comes_back(client, server):
    doc = Doc(client, "file:///remote/away.txt", f"away\n{TEXT}", language="plaintext")
    await complete(client, doc)
    server.go_away()
    try:
        before = len(failures(client))
        doc.edit(0, 0, "z")  # a new text each time: the result cache does not answer
        assert await complete(client, doc) == []
        await wait_for(lambda: len(failures(client)) > before, timeout=10, what="the infillFailed status")
        assert "connection refused" in failures(client)[-1].detail
        assert failures(client)[-1].backend.connection == "down"
        doc.edit(0, 0, "z")
        assert await complete(client, doc) == []  # still down (or in its backoff): no hang, an empty answer
    finally:
        server.come_back()
    await recovered(client, server, doc)
    status = await wait_for(
        lambda: next(
            (s for s in reversed(client.statuses) if getattr(s, "backend", None) and s.backend.connection == "ok"), None
        ),
        timeout=10,
        what="a status with the connection back",
    )
    assert status.backend.url == URL and status.backend.unencrypted is False
    doc.close()


async def test_a_newer_keystroke_supersedes_the_request_in_flight(client, server):
    doc = Doc(client, "file:///remote/supersede.txt", f"supersede\n{TEXT}", language="plaintext")
    server.faults += ["slow:20", "script:Water the plants."]
    n, gone = len(server.requests), len(server.disconnects)
    older = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(doc, cursor(doc)), msg_id="remote-old-1"
    )
    await wait_for(lambda: len(server.requests) > n, timeout=30, what="the first request at the vLLM server")
    doc.edit(0, 0, "s")  # the user typed on
    newer = await complete(client, doc)
    old_items = (await asyncio.wait_for(asyncio.wrap_future(older), timeout=10)).items
    assert list(old_items) == []  # superseded: an empty answer, not an error
    assert len(server.disconnects) > gone  # and its HTTP request was closed, so vLLM stops working on it
    assert [i.insert_text for i in newer] == ["Water the plants."]
    doc.close()
