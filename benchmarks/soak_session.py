"""A long typing session against a real `dgls` (pygls LanguageClient, server as a subprocess, stdio or TCP).

Each client keeps several documents open and types into them: single keystrokes at a human pace, bursts with
no pause, newlines, deletions, pastes, replaced selections and non-ASCII text. Every change is a didChange
with an incremental range, followed by an Automatic inline completion at the cursor; some of those are
cancelled ($/cancelRequest) a moment later. After every change the client asks ``dgls/documentHash`` and
compares it with its own buffer. Now and then it sends a bad request (the reply must still come) or injects
a fault (a document closed and reopened under a running request, the model restarted mid-session).

The CI test (tests/reliability/test_soak.py) runs a short session; benchmarks/soak.py a long one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pygls.lsp.client import LanguageClient

from dgls.text import PositionEncoding, position_at

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import ROOT as REPO  # noqa: E402
from provenance import open_fds, rss_kb  # noqa: E402

CODE = '''def mean(values):
    """Arithmetic mean; é and 😀 are fine in docstrings."""
    total = 0
    for v in values:
        total += v
    return total / len(values)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)  # grows
'''
NOTES = "Shopping list:\r\n- bread\r\n- crème fraîche\r\n\r\nCall Zoë at 5.\r\n"
PASTES = [
    "    if not values:\n        return 0.0\n",
    "x = [i * i for i in range(10)]\n",
    "# 日本語のコメント\n",
    "\tindented\twith tabs\n",
    "emoji: 🎉🎉 end",
    "line one\r\nline two\r\n",
    "# page\x0cbreak and\u2028separator: not line ends in LSP\n",
]


@dataclass
class SoakConfig:
    """How long and how hard one client types."""

    model: str
    changes: int = 300  # didChange notifications per client
    documents: int = 3
    pause_s: tuple[float, float] = (0.005, 0.04)  # between keystrokes at human pace
    burst_every: int = 25  # about every this many changes, a burst of 5..15 keystrokes with no pause
    cancel_rate: float = 0.15
    bad_input_every: int = 30
    fault_every: int = 120  # 0: no faults
    sample_every: int = 20
    reply_timeout: float = 90.0
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=lambda: {"steps": 4, "debounceMs": 10, "maxCanvas": 16})


@dataclass
class SoakReport:
    """What one client saw."""

    label: str
    requests: int = 0  # inline completions sent
    answered: int = 0  # ... that got a reply of any kind
    with_items: int = 0
    empty: int = 0
    cancels_sent: int = 0
    cancelled_replies: int = 0  # -32800
    other_errors: list[str] = field(default_factory=list)
    hangs: int = 0  # requests of any kind without a reply within the timeout
    hash_checks: int = 0
    mismatches: list[str] = field(default_factory=list)
    bad_inputs: int = 0
    bad_input_replies: int = 0
    faults: int = 0
    faults_survived: int = 0
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (change index, rss KiB, fds)
    latencies: list[tuple[int, float]] = field(default_factory=list)  # (change index, ms) of served requests
    errors_shown: list[str] = field(default_factory=list)  # window/showMessage of type Error
    exit_code: int | None = None
    seconds: float = 0.0

    def latency(self, part: str) -> tuple[float, float] | None:
        """(p50, p95) in ms of the first ('early') or last ('late') third of the served requests."""
        ms = [m for _, m in self.latencies]
        if len(ms) < 6:
            return None
        third = len(ms) // 3
        chunk = ms[:third] if part == "early" else ms[-third:]
        q = statistics.quantiles(chunk, n=20, method="inclusive")
        return round(statistics.median(chunk), 1), round(q[18], 1)


class _Doc:
    def __init__(self, uri: str, text: str, language: str):
        self.uri, self.text, self.language, self.version = uri, text, language, 1
        self.cursor = len(text)

    def sha(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _pos(text: str, offset: int) -> types.Position:
    line, character = position_at(text, offset, PositionEncoding.UTF16)
    return types.Position(line=line, character=character)


def _bad_inputs(doc: _Doc) -> list[tuple[str, Any]]:
    """Requests a buggy or hostile client might send: each must still get a reply."""
    here = {"line": 0, "character": 0}
    ctx = {"triggerKind": 2}
    return [
        (
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": doc.uri}, "position": {"line": -1, "character": 0}, "context": ctx},
        ),
        (
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": doc.uri}, "position": {"line": 0, "character": 2**40}, "context": ctx},
        ),
        (
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": doc.uri}, "position": {"line": 10**6, "character": 3}, "context": ctx},
        ),
        (
            "textDocument/inlineCompletion",
            {"textDocument": {"uri": "file:///etc/passwd"}, "position": here, "context": ctx},
        ),
        ("textDocument/inlineCompletion", {"textDocument": {"uri": doc.uri}, "context": ctx}),
        ("textDocument/completion", {"textDocument": None, "position": here}),
        ("dgls/documentHash", {"uri": 42}),
        ("dgls/noSuchMethod", {"x": 1}),
        (
            "textDocument/codeAction",
            {
                "textDocument": {"uri": doc.uri},
                "range": {"start": here, "end": {"line": 0, "character": "three"}},
                "context": {"diagnostics": []},
            },
        ),
        ("workspace/executeCommand", {"command": "dgls.rewrite", "arguments": [doc.uri, None, 7]}),
    ]


class Session:
    """One client typing into one server."""

    def __init__(
        self,
        config: SoakConfig,
        label: str,
        transport: str = "stdio",
        port: int | None = None,
        log_file: str = os.devnull,
    ):
        self.cfg, self.label, self.transport, self.port, self.log_file = config, label, transport, port, log_file
        self.rng = random.Random(f"{config.seed}-{label}")
        self.report = SoakReport(label)
        self.client = LanguageClient("dgls-soak", "0")
        self.statuses: list[Any] = []
        self.pending: dict[str, tuple[asyncio.Future, float, int, bool]] = {}  # id -> (reply, t0, change, cancelled)
        self.latency_ms: dict[str, float] = {}
        self.proc: subprocess.Popen | None = None
        self.docs: list[_Doc] = []

        @self.client.feature("dgls/status")
        def on_status(params: Any) -> None:
            self.statuses.append(params)

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            if params.type == types.MessageType.Error:
                self.report.errors_shown.append(params.message)

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def on_log(params: Any) -> None:
            pass

    # -- process ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid if self.proc is not None else self.client._server.pid

    async def start(self) -> None:
        """Start the server, initialize, wait for the model, open the documents."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if self.transport == "stdio":
            # pygls pipes the server's stderr and never reads it: log to a file so a chatty server cannot block
            await self.client.start_io(
                sys.executable, "-m", "dgls.cli", "--stdio", "--log-file", self.log_file, env=env
            )
        else:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dgls.cli", "--tcp", "--port", str(self.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            banner = await asyncio.wait_for(asyncio.to_thread(self.proc.stderr.readline), 60)
            assert b"serving LSP on tcp://127.0.0.1" in banner, banner
            # drain stderr into the log: a full stderr pipe would block the server's event loop (and did)
            threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
            # the banner is logged just before the socket is bound: retry the connection briefly
            deadline = time.monotonic() + 30
            while True:
                try:
                    await self.client.start_tcp("127.0.0.1", self.port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        await asyncio.wait_for(
            self.client.initialize_async(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(
                        text_document=types.TextDocumentClientCapabilities(
                            inline_completion=types.InlineCompletionClientCapabilities()
                        )
                    ),
                    initialization_options={"dgls": {"model": self.cfg.model, **self.cfg.settings}},
                )
            ),
            60,
        )
        self.client.initialized(types.InitializedParams())
        await self.wait_model()
        kinds = [("python", "py", CODE), ("plaintext", "txt", NOTES), ("python", "py", "")]
        for i in range(self.cfg.documents):
            language, ext, text = kinds[i % len(kinds)]
            doc = _Doc(f"file:///soak/{self.label}/doc{i}.{ext}", text, language)
            self.client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    text_document=types.TextDocumentItem(
                        uri=doc.uri, language_id=language, version=doc.version, text=doc.text
                    )
                )
            )
            self.docs.append(doc)

    def _drain(self, stream: Any) -> None:
        with open(self.log_file, "ab") as log:
            for line in iter(stream.readline, b""):
                log.write(line)

    async def wait_model(self, after: int = 0) -> Any:
        """Wait for a dgls/status (after the first `after`) saying ready or error."""
        deadline = time.monotonic() + 120
        while True:
            found = next((s for s in self.statuses[after:] if _get(s, "state") in ("ready", "error")), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label}: the model did not load")
            await asyncio.sleep(0.02)

    def sample(self, i: int) -> None:
        """Record RSS and open fds of the server now."""
        self.report.samples.append((i, rss_kb(self.pid), open_fds(self.pid)))

    # -- editing ---------------------------------------------------------------------------------------------
    def change(self, doc: _Doc, start: int, end: int, new_text: str) -> None:
        """Edit the client's buffer and send an incremental didChange computed on the text before the edit."""
        rng = types.Range(start=_pos(doc.text, start), end=_pos(doc.text, end))
        doc.text = doc.text[:start] + new_text + doc.text[end:]
        doc.version += 1
        doc.cursor = start + len(new_text)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text=new_text)],
            )
        )

    def random_edit(self, doc: _Doc) -> None:
        """One user action: mostly a keystroke at the cursor."""
        r, text, at = self.rng.random(), doc.text, min(doc.cursor, len(doc.text))
        if r < 0.55:
            self.change(doc, at, at, self.rng.choice("abcdefxyz_ =(),.:0123456789éü😀"))
        elif r < 0.65:
            self.change(doc, at, at, self.rng.choice(["\n", "\n    ", "\r\n"]))
        elif r < 0.78:
            # backspace: one code point (a CRLF as a whole, as editors do)
            back = 2 if text[max(at - 2, 0) : at] == "\r\n" else 1
            self.change(doc, max(at - back, 0), at, "")
        elif r < 0.85:
            self.change(doc, at, at, self.rng.choice(PASTES))
        elif r < 0.93 and text:
            a = self.rng.randrange(len(text) + 1)
            b = min(len(text), a + self.rng.randrange(12))
            if text[a - 1 : a + 1] == "\r\n":  # never split a CRLF: LSP positions cannot name its middle
                a -= 1
            if text[b - 1 : b + 1] == "\r\n":
                b += 1
            self.change(doc, a, b, self.rng.choice(["", "y", "replaced", "ß"]))
        else:
            a = self.rng.randrange(len(text) + 1)
            doc.cursor = a - 1 if text[a - 1 : a + 1] == "\r\n" else a  # the cursor moves, nothing is sent

    # -- requests --------------------------------------------------------------------------------------------
    def complete(self, doc: _Doc, i: int) -> str:
        """Send an Automatic inline completion at the cursor; returns its id."""
        msg_id = f"{self.label}-{i}-{uuid.uuid4().hex[:6]}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri),
            position=_pos(doc.text, doc.cursor),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        fut = asyncio.wrap_future(
            self.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        )
        t0 = time.perf_counter()
        self.pending[msg_id] = (fut, t0, i, False)
        fut.add_done_callback(lambda _f: self.latency_ms.__setitem__(msg_id, (time.perf_counter() - t0) * 1e3))
        self.report.requests += 1
        return msg_id

    def cancel(self, msg_id: str) -> None:
        """$/cancelRequest for `msg_id` (if it is still pending)."""
        fut, t0, i, _ = self.pending[msg_id]
        if not fut.done():
            self.pending[msg_id] = (fut, t0, i, True)
            self.report.cancels_sent += 1
            self.client.cancel_request(types.CancelParams(id=msg_id))

    def settle(self) -> None:
        """Account for the inline completions that have replied."""
        for msg_id, (fut, _t0, i, cancelled) in list(self.pending.items()):
            if not fut.done() or msg_id not in self.latency_ms:  # the done-callback runs after done() turns true
                continue
            del self.pending[msg_id]
            ms = self.latency_ms.pop(msg_id)
            self.report.answered += 1
            if fut.cancelled():
                self.report.other_errors.append(f"{msg_id}: the client future was cancelled")
                continue
            exc = fut.exception()
            if isinstance(exc, JsonRpcRequestCancelled):
                self.report.cancelled_replies += 1
            elif exc is not None:
                self.report.other_errors.append(f"{msg_id}: {type(exc).__name__}: {exc}")
            else:
                result = fut.result()
                items = _get(result, "items") or []
                self.report.with_items += bool(items)
                self.report.empty += not items
                if not cancelled:
                    self.report.latencies.append((i, round(ms, 2)))

    async def check_hash(self, doc: _Doc) -> None:
        """Compare the server's text with the client's (version and SHA-256)."""
        got = await asyncio.wait_for(
            self.client.protocol.send_request_async("dgls/documentHash", {"uri": doc.uri}), self.cfg.reply_timeout
        )
        self.report.hash_checks += 1
        if _get(got, "sha256") != doc.sha() or _get(got, "version") != doc.version:
            self.report.mismatches.append(
                f"{doc.uri} v{doc.version}: server has v{_get(got, 'version')} "
                f"length {_get(got, 'length')}, client length {len(doc.text)}"
            )
            # resynchronise so one mismatch is not counted again at every later change
            self.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version + 1),
                    content_changes=[types.TextDocumentContentChangeWholeDocument(text=doc.text)],
                )
            )
            doc.version += 1

    async def bad_input(self, doc: _Doc, n: int) -> None:
        """Send one malformed or hostile request as raw JSON; the reply must come."""
        cases = _bad_inputs(doc)
        method, params = cases[n % len(cases)]
        msg_id = f"bad-{self.label}-{n}"
        fut: Future = Future()
        self.client.protocol._request_futures[msg_id] = fut
        self.client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        self.report.bad_inputs += 1
        try:
            await asyncio.wait_for(asyncio.wrap_future(fut), self.cfg.reply_timeout)
        except asyncio.TimeoutError:
            self.report.hangs += 1
            return
        except Exception:  # an error reply is a reply
            pass
        self.report.bad_input_replies += 1

    async def fault(self, doc: _Doc, n: int, i: int) -> None:
        """Inject a fault, then check the session still works: text in step, a request answered."""
        self.report.faults += 1
        if n % 2 == 0:  # close and reopen a document while its request runs
            self.complete(doc, i)
            self.client.text_document_did_close(
                types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=doc.uri))
            )
            doc.version += 1
            self.client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    text_document=types.TextDocumentItem(
                        uri=doc.uri, language_id=doc.language, version=doc.version, text=doc.text
                    )
                )
            )
        else:  # restart the model mid-session; typing goes on while it loads
            n_status = len(self.statuses)
            await asyncio.wait_for(
                self.client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.restartModel")),
                self.cfg.reply_timeout,
            )
            self.random_edit(doc)
            self.complete(doc, i)
            if _get(await self.wait_model(n_status), "state") != "ready":
                return
        await self.check_hash(doc)
        probe = self.complete(doc, i)
        fut = self.pending[probe][0]
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.cfg.reply_timeout)
        except asyncio.TimeoutError:
            return
        except Exception:
            pass
        self.report.faults_survived += 1

    # -- the session -----------------------------------------------------------------------------------------
    async def run(self) -> SoakReport:
        """Type `changes` edits, then shut the server down; the report. The server never outlives a failure."""
        try:
            return await self._run()
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            elif self.client._server is not None and self.client._server.returncode is None:
                self.client._server.kill()
            raise

    async def _run(self) -> SoakReport:
        t_start = time.perf_counter()
        cfg, rng = self.cfg, self.rng
        await self.start()
        self.sample(0)
        loop = asyncio.get_running_loop()
        doc, burst, n_bad, n_fault = self.docs[0], 0, 0, 0
        for i in range(1, cfg.changes + 1):
            if rng.random() < 0.05:
                doc = rng.choice(self.docs)
            self.random_edit(doc)
            await self.check_hash(doc)
            msg_id = self.complete(doc, i)
            if rng.random() < cfg.cancel_rate:
                loop.call_later(rng.uniform(0, 0.01), self.cancel, msg_id)  # within the 10 ms debounce, mostly
            if i % cfg.bad_input_every == 0:
                await self.bad_input(doc, n_bad)
                n_bad += 1
            if cfg.fault_every and i % cfg.fault_every == 0:
                await self.fault(doc, n_fault, i)
                n_fault += 1
            if i % cfg.sample_every == 0:
                self.settle()
                self.sample(i)
            if burst:
                burst -= 1
                await asyncio.sleep(0)
            else:
                if rng.randrange(cfg.burst_every) == 0:
                    burst = rng.randint(5, 15)
                await asyncio.sleep(rng.uniform(*cfg.pause_s))
        deadline = time.monotonic() + cfg.reply_timeout
        while any(not f.done() for f, *_ in self.pending.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.report.hangs += sum(not f.done() for f, *_ in self.pending.values())
        self.settle()
        for d in self.docs:
            await self.check_hash(d)
        self.sample(cfg.changes)
        await self.stop()
        self.report.seconds = round(time.perf_counter() - t_start, 1)
        return self.report

    async def stop(self) -> None:
        """shutdown + exit; record the exit code."""
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), self.cfg.reply_timeout)
            self.client.exit(None)
            if self.proc is not None:
                self.report.exit_code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 60)
            else:
                self.report.exit_code = await asyncio.wait_for(self.client._server.wait(), 60)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
            await asyncio.wait_for(self.client.stop(), 60)


async def run_sessions(config: SoakConfig, tcp_ports: tuple[int, ...] = ()) -> list[SoakReport]:
    """One stdio client plus one TCP client per port (each its own server), all typing at once."""
    sessions = [Session(config, "stdio")]
    sessions += [Session(config, f"tcp{n}", "tcp", port) for n, port in enumerate(tcp_ports)]
    return list(await asyncio.gather(*(s.run() for s in sessions)))
