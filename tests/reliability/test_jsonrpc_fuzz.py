"""JSON-RPC fuzzing over raw stdio bytes: malformed JSON, wrong types, huge numbers, missing fields, unknown
methods, bad framing. Where JSON-RPC says a reply is due the server sends an error; after every case a valid
request still works.

One server serves the table of cases (the model is not needed: it is configured missing, which loads in no
time); hypothesis then throws random bytes and random JSON at a second one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsp_driver import RawServer, frame

PROBE_URI = "file:///fuzz/probe.txt"
INLINE = "textDocument/inlineCompletion"


def req(msg_id, method, params=None, **extra):
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, **({} if params is None else {"params": params}), **extra}


def inline_params(line=0, character=0, uri=PROBE_URI):
    return {
        "textDocument": {"uri": uri},
        "position": {"line": line, "character": character},
        "context": {"triggerKind": 1},
    }


# (name, bytes to send, expected reply: (id, error code) | None for "no reply is due")
CASES = [
    ("not JSON", frame(b"{not json"), (None, -32700)),
    ("not UTF-8", frame(b"\xff\xfe{}"), (None, -32700)),
    ("truncated JSON", frame(b'{"jsonrpc": "2.0", "id": 1, "meth'), (None, -32700)),
    ("nested 100k deep", frame(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), (None, -32700)),
    ("a number", frame(b"42"), (None, -32600)),
    ("a string", frame(b'"initialize"'), (None, -32600)),
    ("null", frame(b"null"), (None, -32600)),
    ("an empty batch", frame(b"[]"), (None, -32600)),
    ("a batch", frame([req(2, "dgls/documentHash", {"uri": PROBE_URI})]), (None, -32600)),
    ("no jsonrpc field", frame({"id": 3, "method": "dgls/documentHash", "params": {"uri": PROBE_URI}}), (3, -32600)),
    ("jsonrpc 1.0", frame({"jsonrpc": "1.0", "id": 4, "method": "x", "params": {}}), (4, -32600)),
    ("id is an object", frame(req({"a": 1}, "dgls/documentHash", {"uri": PROBE_URI})), (None, -32600)),
    ("id is a bool", frame(req(True, "dgls/documentHash", {"uri": PROBE_URI})), (None, -32600)),
    ("method is a number", frame(req(5, 12345)), (5, -32600)),
    ("unknown method", frame(req(6, "dgls/noSuchThing", {"a": 1})), (6, -32601)),
    ("unknown method, no params", frame(req(7, "foo/bar")), (7, -32601)),
    ("params missing", frame(req(8, INLINE)), (8, -32602)),
    ("params a string", frame(req(9, INLINE, "nope")), (9, -32602)),
    ("params a list", frame(req(10, INLINE, [1, 2])), (10, -32602)),
    ("negative line", frame(req(11, INLINE, inline_params(line=-1))), (11, -32602)),
    ("line 10**30", frame(req(12, INLINE, inline_params(line=10**30))), (12, -32602)),
    (
        "line 1e400 (infinity)",
        frame(
            b'{"jsonrpc":"2.0","id":13,"method":"textDocument/inlineCompletion","params":'
            b'{"textDocument":{"uri":"file:///x"},"position":{"line":1e400,"character":0},'
            b'"context":{"triggerKind":1}}}'
        ),
        (13, -32602),
    ),
    ("character a word", frame(req(14, INLINE, inline_params(character="five"))), (14, -32602)),
    ("trigger kind 99", frame(req(15, INLINE, {**inline_params(), "context": {"triggerKind": 99}})), (15, -32602)),
    ("uri a number", frame(req(16, "dgls/documentHash", {"uri": 7})), (16, -32602)),
    (
        "command args wrong",
        frame(req(17, "workspace/executeCommand", {"command": "dgls.rewrite", "arguments": [1]})),
        (17, -32602),
    ),
    ("resolve without data", frame(req(18, "codeAction/resolve", {"title": "x"})), (18, -32602)),
    ("unknown notification", frame({"jsonrpc": "2.0", "method": "foo/bar"}), None),
    (
        "notification with bad params",
        frame({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": 3}}),
        None,
    ),
    (
        "didChange for a never-opened document",
        frame(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": "file:///fuzz/never.txt", "version": 2},
                    "contentChanges": [{"text": "x"}],
                },
            }
        ),
        None,
    ),
    ("response to nothing", frame({"jsonrpc": "2.0", "id": "zzz", "result": 1}), None),
    ("cancel of nothing", frame({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "nope"}}), None),
    ("JSON without a header", b'{"jsonrpc":"2.0","id":19,"method":"x"}\r\n', None),
    ("Content-Length zero", b"Content-Length: 0\r\n\r\n" + json.dumps(req(20, "x")).encode(), None),
    ("Content-Length not a number", b"Content-Length: abc\r\n\r\n" + json.dumps(req(21, "x")).encode(), None),
    ("Content-Length negative", b"Content-Length: -5\r\n\r\n" + json.dumps(req(22, "x")).encode(), None),
    ("Content-Length too short", b"Content-Length: 5\r\n\r\n" + json.dumps(req(23, "x")).encode(), (None, -32700)),
    ("unknown header only", b"X-Foo: bar\r\n\r\n", None),
]


@contextlib.contextmanager
def probe_server() -> Iterator[RawServer]:
    """A server with no model (configured missing: loads in no time) and the probe document open."""
    with RawServer() as s:
        s.initialize({"dgls": {"model": "/nonexistent/for-fuzzing"}})
        s.open(PROBE_URI, "hello\n")
        yield s


@pytest.fixture(scope="module")
def server():
    with probe_server() as s:
        yield s
        assert s.shutdown() == 0


def alive(server: RawServer) -> None:
    """A valid request right after: answered, and the document is still what was opened."""
    reply = server.call("dgls/documentHash", {"uri": PROBE_URI}, timeout=30)
    assert reply["result"]["length"] == len("hello\n"), reply


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_message(server: RawServer, name, data, expected):
    before = len(server.messages)
    server.send_bytes(data)
    alive(server)
    replies = [m for m in server.messages[before:] if "method" not in m and m.get("id") is not None or "error" in m]
    errors = [(m.get("id"), m["error"]["code"]) for m in replies if "error" in m]
    if expected is None:
        assert errors == [], errors
    else:
        assert errors == [expected], f"{name}: {errors}"
        assert all("id" in m for m in replies)  # a null id is written out, as JSON-RPC requires


def test_wrong_content_length_loses_one_message_not_the_session(server: RawServer):
    """Too long by a few bytes: the body swallows the start of the next message, which is lost; the one after
    that is answered (the reader finds the next header again)."""
    server.send_bytes(b"Content-Length: 50\r\n\r\n" + json.dumps(req(30, "x")).encode())
    lost = server.request("dgls/documentHash", {"uri": PROBE_URI})
    alive(server)
    assert server.reply(lost) is None


def test_huge_content_length_ends_the_session_cleanly():
    with RawServer() as s:
        s.initialize({"dgls": {"model": "/nonexistent/for-fuzzing"}})
        s.send_bytes(b"Content-Length: 1000000000000\r\n\r\n{}")
        assert s.wait_exit(60) == 1  # not a MemoryError traceback: a logged refusal and the usual no-shutdown exit
        assert b"MemoryError" not in s.stderr and b"limit" in s.stderr


def test_bad_params_are_logged_in_one_line_without_traceback(server: RawServer):
    """After the whole table above: stderr says what was malformed, once per message, and holds no traceback."""
    before = len(server.stderr)
    server.send_bytes(frame(req(40, INLINE, inline_params(character="seven"))))
    alive(server)
    new = bytes(server.stderr[before:]).decode(errors="replace")
    assert new.count("invalid params for textDocument/inlineCompletion (id 40)") == 1, new
    everything = server.stderr.decode(errors="replace")
    for noise in ("Traceback", "Unable to deserialize", "$/dgls/answered", "Cancel notification for unknown"):
        assert noise not in everything, everything[-3000:]
    assert "invalid params in textDocument/didOpen" in everything  # the bad notification of the table


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
methods = st.sampled_from(
    [
        INLINE,
        "textDocument/completion",
        "textDocument/codeAction",
        "codeAction/resolve",
        "workspace/executeCommand",
        "dgls/documentHash",
        "textDocument/didOpen",
        "textDocument/didChange",
        "textDocument/didClose",
        "$/cancelRequest",
        "initialize",
        "x/unknown",
    ]
)


@pytest.fixture(scope="module")
def fuzz_server():
    with probe_server() as s:
        yield s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, params=json_values, as_request=st.booleans(), noise=st.binary(max_size=40))
def test_random_messages_keep_the_server_serving(fuzz_server: RawServer, method, params, as_request, noise):
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if as_request:
        message["id"] = f"fuzz-{len(fuzz_server.messages)}-{method}"
    fuzz_server.send(message)
    fuzz_server.send(noise)  # random bytes framed as one message: parse error or an invalid request
    if as_request:
        fuzz_server.wait_reply(message["id"], timeout=30)
    reply = fuzz_server.call("dgls/documentHash", {"uri": PROBE_URI}, timeout=30)
    assert "result" in reply


def test_documents_under_percent_encoded_uris_are_found(server: RawServer):
    """VS Code percent-encodes paths (spaces, non-ASCII, the colon of a Windows drive); pygls stores the document
    under the decoded URI, and the server must still find it by the URI the client uses."""
    text = "é 😀\n"
    for uri in ("file:///my%20project/caf%C3%A9.py", "file:///c%3A/Users/x/a.py"):
        server.open(uri, text)
        got = server.call("dgls/documentHash", {"uri": uri})["result"]
        assert got["length"] == len(text) and got["version"] == 1, (uri, got)
