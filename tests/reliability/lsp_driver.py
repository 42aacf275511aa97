"""Drive a real `dgls` process: raw JSON-RPC bytes over its pipes, and /proc readings of its memory and files.

The raw client is for what a well-behaved LSP client library cannot send (malformed JSON, bad framing, wrong
types) and for faults (closing stdin, not reading stdout). Every wait has a timeout; nothing here sleeps a
fixed time to wait for state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVER = [sys.executable, "-m", "dgls.cli", "--stdio"]
REPO = Path(__file__).resolve().parents[2]


def frame(body: bytes | dict | list | str) -> bytes:
    """One LSP message: a Content-Length header and the body (objects are JSON-encoded)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` (cheap, thread-safe) until truthy; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


class RawServer:
    """`dgls --stdio` as a subprocess, spoken to in bytes; a reader thread collects every framed message."""

    def __init__(
        self,
        args: list[str] | None = None,
        *,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ):
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen(
            [*(command or SERVER), *(args or [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
        )
        self.messages: list[dict] = []
        self.garbage: list[bytes] = []  # bytes on stdout that were not a framed JSON message
        self.stderr = bytearray()
        self._lock = threading.Lock()
        self._ids = 0
        self.reading = threading.Event()  # clear it to play a client that stops reading stdout
        self.reading.set()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def _drain_stderr(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            self.reading.wait()
            header = out.readline()
            if not header:
                return
            if not header.startswith(b"Content-Length:"):
                self.garbage.append(header)
                continue
            length = int(header.split(b":")[1])
            while out.readline() not in (b"\r\n", b""):
                pass
            body = out.read(length)
            try:
                msg = json.loads(body)
            except ValueError:
                self.garbage.append(body)
                continue
            with self._lock:
                self.messages.append(msg)

    # -- sending --------------------------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes to the server's stdin."""
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict | list | bytes | str) -> None:
        """Write one framed message."""
        self.send_bytes(frame(message))

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification."""
        self.send({"jsonrpc": "2.0", "method": method, **({} if params is None else {"params": params})})

    def request(self, method: str, params: Any = None, msg_id: int | str | None = None) -> int | str:
        """Send a request; returns its id."""
        if msg_id is None:
            self._ids += 1
            msg_id = self._ids
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, **({} if params is None else {"params": params})})
        return msg_id

    # -- receiving ------------------------------------------------------------------------------------------
    def reply(self, msg_id: Any) -> dict | None:
        """The reply to `msg_id` if it came."""
        with self._lock:
            return next((m for m in self.messages if m.get("id") == msg_id and "method" not in m), None)

    def wait_reply(self, msg_id: Any, timeout: float = 60) -> dict:
        """Wait for the reply to `msg_id`."""
        return wait_until(lambda: self.reply(msg_id), timeout, f"the reply to request {msg_id!r}")

    def call(self, method: str, params: Any = None, timeout: float = 60) -> dict:
        """Request and wait for the reply."""
        return self.wait_reply(self.request(method, params), timeout)

    def notifications(self, method: str) -> list[dict]:
        """Params of every notification `method` received so far."""
        with self._lock:
            return [m.get("params") for m in self.messages if m.get("method") == method and "id" not in m]

    def initialize(self, options: dict, timeout: float = 120) -> dict:
        """initialize + initialized, then wait for the model to be ready (or failed); the last status."""
        reply = self.call(
            "initialize", {"processId": None, "capabilities": {}, "initializationOptions": options}, timeout
        )
        assert "result" in reply, reply
        self.notify("initialized", {})
        return wait_until(
            lambda: next(
                (s for s in reversed(self.notifications("dgls/status")) if s.get("state") in ("ready", "error")), None
            ),
            timeout,
            "the model",
        )

    def open(self, uri: str, text: str, language: str = "plaintext", version: int = 1) -> None:
        """didOpen."""
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": language, "version": version, "text": text}},
        )

    def document_hash(self, uri: str, timeout: float = 60) -> dict:
        """The server's ``dgls/documentHash`` for `uri`."""
        reply = self.call("dgls/documentHash", {"uri": uri}, timeout)
        assert "result" in reply, reply
        return reply["result"]

    def shutdown(self, timeout: float = 60) -> int:
        """shutdown + exit; the exit code."""
        reply = self.call("shutdown", None, timeout)
        assert "error" not in reply, reply
        self.notify("exit")
        return self.wait_exit(timeout)

    def close_stdin(self) -> None:
        """Close the server's stdin (the client is gone)."""
        self.proc.stdin.close()

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end; its exit code."""
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
