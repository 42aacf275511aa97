"""Security: what SECURITY.md promises, checked against the real server.

* TCP listens on 127.0.0.1 unless told otherwise; a non-loopback --host needs --allow-remote (also in
  tests/e2e/test_tcp.py); one client at a time; with a token (--token-file or $DGLS_TOKEN) the first message
  must be initialize carrying it, else the connection is closed and the server keeps waiting for the real one.
* Model loading: safetensors only, never pickle, never remote code (tests/model/test_loading.py covers the
  loader: pickle-only, truncated and corrupt checkpoints are refused); here: ``trust_remote_code`` is never
  anything but False in the package, and nothing in it unpickles.
* The server never reads a path a client names (only documents the client sent), never writes a file, never
  runs a command: a whole session under an audit hook (``sys.addaudithook``) in a temporary HOME and cwd.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsp_driver import REPO, RawServer, frame, wait_until

PACKAGE_DIRS = [REPO / "dgls", REPO / "model", REPO / "kernels"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- TCP -----------------------------------------------------------------------------------------------------


class TcpServer:
    """`dgls --tcp` on a free port, with its stderr collected."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dgls.cli", "--tcp", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        self.banner = self.proc.stderr.readline().decode()

    def connect(self) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:  # the banner is logged just before the socket is bound
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                return sock
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:  # the server closed with our bytes unread: closed all the same
        return b""


def read_message(sock: socket.socket) -> dict | None:
    """One framed message from a socket; None when the server closed the connection."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(next(h for h in head.split(b"\r\n") if h.startswith(b"Content-Length")).split(b":")[1])
    while len(body) < length:
        chunk = _recv(sock)
        if not chunk:
            return None
        body += chunk
    return json.loads(body[:length])


def reply_to(sock: socket.socket, msg_id) -> dict | None:
    """Read until the reply to `msg_id`; None if the connection closes first."""
    while True:
        msg = read_message(sock)
        if msg is None or (msg.get("id") == msg_id and "method" not in msg):
            return msg


def initialize(token: str | None = None, msg_id: int = 1) -> bytes:
    options = {"dgls": {"model": "/nonexistent/security-test"}}
    if token is not None:
        options["token"] = token
    return frame(
        {
            "jsonrpc": "2.0",
            "id": msg_id,
            "method": "initialize",
            "params": {"processId": None, "capabilities": {}, "initializationOptions": options},
        }
    )


def listening_addresses(port: int) -> list[str]:
    """Local addresses of listening sockets on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.append(addr)
    return found


def test_tcp_listens_on_loopback_only_by_default():
    with TcpServer() as server:
        assert "tcp://127.0.0.1" in server.banner and "loopback only" in server.banner
        server.connect().close()
        assert listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, and nothing else


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_a_non_loopback_host_is_refused_without_allow_remote(host):
    proc = subprocess.run(
        [sys.executable, "-m", "dgls.cli", "--tcp", "--host", host, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and f"refusing to listen on {host}" in proc.stderr


def test_a_second_tcp_client_is_refused_while_the_first_is_served():
    with TcpServer() as server:
        first = server.connect()
        first.sendall(initialize())
        assert "result" in reply_to(first, 1)
        second = server.connect()
        second.sendall(initialize(msg_id=7))
        assert read_message(second) is None  # closed at once: it cannot take over the first client's replies
        first.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "dgls/documentHash", "params": {"uri": "file:///a"}}))
        assert reply_to(first, 2)["result"]["sha256"] is None
        first.sendall(frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
        assert "error" not in reply_to(first, 3)
        first.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
        assert server.proc.wait(60) == 0
        assert b"refused a second TCP connection" in server.proc.stderr.read()


def test_tcp_token_is_required_when_configured(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with TcpServer("--token-file", str(token_file)) as server:
        assert "token required" in server.banner
        for first_message in (
            initialize(),
            initialize("wrong"),
            initialize(""),
            frame({"jsonrpc": "2.0", "id": 1, "method": "dgls/documentHash", "params": {"uri": "file:///a"}}),
            frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}),
        ):
            sock = server.connect()
            sock.sendall(
                first_message
                + frame({"jsonrpc": "2.0", "id": 99, "method": "dgls/documentHash", "params": {"uri": "file:///a"}})
            )
            seen = []
            while (msg := read_message(sock)) is not None:
                seen.append(msg)
            assert all("result" not in m for m in seen), seen  # at most the refusal, then the connection closed
            assert server.proc.poll() is None  # still waiting for the real client
        sock = server.connect()
        sock.sendall(initialize("s3cret-token"))
        assert "result" in reply_to(sock, 1)
        sock.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        assert "error" not in reply_to(sock, 2)
        sock.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
        assert server.proc.wait(60) == 0
        assert b"s3cret-token" not in server.proc.stderr.read()  # never logged


def test_tcp_token_from_the_environment():
    with TcpServer(env={"DGLS_TOKEN": "env-token"}) as server:
        sock = server.connect()
        sock.sendall(initialize("nope"))
        refusal = reply_to(sock, 1)
        assert refusal["error"]["code"] == -32803 and "token" in refusal["error"]["message"]
        assert read_message(sock) is None
        sock = server.connect()
        sock.sendall(initialize("env-token"))
        assert "result" in reply_to(sock, 1)


def test_an_empty_token_file_is_a_usage_error(tmp_path):
    (tmp_path / "empty").write_text("\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dgls.cli",
            "--tcp",
            "--port",
            str(free_port()),
            "--token-file",
            str(tmp_path / "empty"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "the file is empty" in proc.stderr


# --- the package --------------------------------------------------------------------------------------------


def package_sources():
    for root in PACKAGE_DIRS:
        yield from sorted(root.rglob("*.py"))


def test_trust_remote_code_is_never_true_in_the_package():
    found = []
    for path in package_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    found.append(f"{path.relative_to(REPO)}:{node.value.lineno}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "trust_remote_code" in node.value:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} (in a string)")
    assert found == []


def _weights_only(call: ast.Call) -> bool:
    """torch.load(..., weights_only=True) restores tensors and plain data only, never code."""
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords
    )


def test_nothing_in_the_package_unpickles_or_runs_commands():
    """No pickle, torch.load (unless weights_only=True), eval/exec, os.system or subprocess in the package."""
    banned_modules = {"pickle", "dill", "cloudpickle", "marshal", "shelve", "subprocess"}
    banned_calls = {"eval", "exec", "load", "system", "popen", "spawnl", "execv", "execvp"}
    found = []
    for path in package_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{path.relative_to(REPO)}: import {n}" for n in names if n.split(".")[0] in banned_modules]
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                builtin = isinstance(f, ast.Name) and name in ("eval", "exec", "compile", "__import__")
                if owner == "torch" and name == "load" and _weights_only(node):
                    continue
                if builtin or (owner in ("torch", "os") and name in banned_calls):
                    found.append(f"{path.relative_to(REPO)}: {owner + '.' if owner else ''}{name}()")
    assert found == []


# --- a whole session under an audit hook ----------------------------------------------------------------------

AUDITED = r"""
import os, sys
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
log = open(sys.argv[1], "w", buffering=1)  # the hook's own log, opened before the hook is installed
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        path = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)
        writes = (mode and any(c in str(mode) for c in "wax+")) or (isinstance(flags, int) and flags & WRITE)
        log.write(f"{'write' if writes else 'read'}\t{path}\n")
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"):
        log.write(f"run\t{event} {args!r:.200}\n")
sys.addaudithook(hook)
from dgls.cli import main
sys.exit(main(["--stdio"]))
"""


def test_a_session_reads_no_client_path_writes_no_file_runs_no_command(tiny_checkpoint, tmp_path):
    home, cwd, secret_dir = tmp_path / "home", tmp_path / "cwd", tmp_path / "secret"
    for d in (home, cwd, secret_dir):
        d.mkdir()
    secret = secret_dir / "passwords.txt"
    secret.write_text("root:SECRET-DO-NOT-READ\n")
    audit_log = tmp_path / "audit.log"
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": str(home / "tmp"),
    }
    with RawServer(command=[sys.executable, "-c", AUDITED, str(audit_log)], cwd=cwd, env=env) as server:
        assert (
            server.initialize({"dgls": {"model": str(tiny_checkpoint), "steps": 2, "maxCanvas": 16}})["state"]
            == "ready"
        )
        for uri in (secret.as_uri(), "file:///etc/passwd", "file:///etc/shadow", "file:///../../etc/passwd"):
            pos = {"line": 0, "character": 3}
            ctx = {"triggerKind": 1}
            assert (
                server.call(
                    "textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": pos, "context": ctx}
                )["result"]["items"]
                == []
            )
            assert (
                server.call("textDocument/completion", {"textDocument": {"uri": uri}, "position": pos})["result"][
                    "items"
                ]
                == []
            )
            assert (
                server.call(
                    "textDocument/codeAction",
                    {"textDocument": {"uri": uri}, "range": {"start": pos, "end": pos}, "context": {"diagnostics": []}},
                )["result"]
                == []
            )
            assert server.call("dgls/documentHash", {"uri": uri})["result"]["sha256"] is None
            rewrite = server.call(
                "workspace/executeCommand",
                {
                    "command": "dgls.rewrite",
                    "arguments": [
                        uri,
                        {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 4}},
                        "show it",
                    ],
                },
            )
            assert rewrite["error"]["code"] == -32803 and "is not open" in rewrite["error"]["message"]
            resolve = server.call(
                "codeAction/resolve",
                {"title": "x", "data": {"uri": uri, "version": 1, "range": [0, 4], "action": "regenerate"}},
            )
            assert "is not open" in resolve["error"]["message"]
        # a real editing session in between: open, type, complete, close
        doc = "file:///session/a.py"
        server.open(doc, "def add(a, b):\n    return \n", "python")
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": doc, "version": 2},
                "contentChanges": [
                    {"range": {"start": {"line": 1, "character": 11}, "end": {"line": 1, "character": 11}}, "text": "a"}
                ],
            },
        )
        answer = server.call(
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": doc}, "position": {"line": 1, "character": 12}, "context": {"triggerKind": 1}},
        )
        # ghost text runs nothing but dgls's own acceptance counter (the editor sends it back when it inserts one)
        commands = [item.get("command", {}).get("command") for item in answer["result"]["items"]]
        assert set(commands) <= {"dgls.accepted"}, commands
        server.notify("textDocument/didClose", {"textDocument": {"uri": doc}})
        assert server.shutdown() == 0
    everything = json.dumps(server.messages)
    assert "SECRET-DO-NOT-READ" not in everything and "root:" not in everything
    assert not [m for m in server.messages if m.get("method") in ("workspace/executeCommand", "workspace/applyEdit")]
    audit = [line.split("\t", 1) for line in audit_log.read_text().splitlines()]
    client_paths = (str(secret_dir), "/etc/passwd", "/etc/shadow")
    reads_of_client_paths = [p for kind, p in audit if kind == "read" and p.startswith(client_paths)]
    assert reads_of_client_paths == []
    writes = [p for kind, p in audit if kind == "write" and not p.startswith(("/dev/", "/proc/"))]
    assert writes == [], writes
    assert [p for kind, p in audit if kind == "run"] == []
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []


def test_a_stale_edit_is_refused(tiny_checkpoint):
    """The document changes while dgls.rewrite runs the model: the edit is not applied, the user is told.

    (tests/e2e/test_mechanics.py checks the same for codeAction/resolve, and that every edit is a versioned
    TextDocumentEdit, which a client refuses for another version.)
    """
    with RawServer() as server:
        # the random-weight model never settles early: it runs all its steps, long after the didChange is read
        server.initialize({"dgls": {"model": str(tiny_checkpoint), "steps": 40, "maxCanvas": 16}})
        uri = "file:///stale/notes.txt"
        server.open(uri, "first line\nsecond line\n")
        msg_id = server.request(
            "workspace/executeCommand",
            {
                "command": "dgls.rewrite",
                "arguments": [uri, {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}}, "shout"],
            },
        )
        server.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": 2},
                "contentChanges": [
                    {
                        "range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}},
                        "text": "new ",
                    }
                ],
            },
        )
        result = server.wait_reply(msg_id, timeout=120)["result"]
        assert result["applied"] is False and "changed while the edit was computed" in result["reason"]
        assert not [m for m in server.messages if m.get("method") == "workspace/applyEdit"]
        wait_until(
            lambda: [p for p in server.notifications("window/showMessage") if "not applied" in p["message"]],
            30,
            "the warning",
        )
        assert server.shutdown() == 0
