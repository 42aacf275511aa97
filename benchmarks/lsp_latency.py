"""Time to ghost text in a replayed typing session: a real LSP client drives `dgls --stdio` as an editor does.

The body of one function of a real file is deleted, then typed back one character at a time: a `didChange` per
keystroke, then `textDocument/inlineCompletion` with the Automatic trigger; a request still pending when the
next key is typed is cancelled with `$/cancelRequest` (what VS Code does). At a line end the user waits for the
ghost text, then pauses (``--no-read-ghost``: only the pause).

Reported: time to result (request sent -> response) p50/p95 over the requests that were answered, also over
those answered with ghost text; cancellations (client `$/cancelRequest` answered -32800) and requests the server
superseded (a newer keystroke on the same document); the server's model calls, typed-through cache hits and
result-cache hits (from `dgls.showConfig`). `--write` appends the table to benchmarks/RESULTS.md.

    python benchmarks/lsp_latency.py [--model dgls-tiny] [--steps 8] [--ms-per-key 120] [--max-keys 200] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pygls.lsp.client import LanguageClient

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import cpu_name, git_commit, percentile  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "dgls" / "actions.py"
DEFAULT_FUNCTION = "find_holes"


def session_text(path: Path, function: str) -> tuple[str, int, str]:
    """(document without the function body, offset where the body goes, the body to type)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {function}("))
    while not lines[start].rstrip().endswith(":"):  # a signature over several lines
        start += 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    while not lines[end - 1].strip():  # keep the blank lines after the function
        end -= 1
    first = start + 1
    quote = lines[first].lstrip()[:3]
    if quote in ('"""', "'''"):  # keep the docstring: type the code after it
        while lines[first].count(quote) < (2 if first == start + 1 else 1):
            first += 1
        first += 1
    body = "".join(lines[first:end])
    at = sum(len(line) for line in lines[:first])
    return text[:at] + text[at + len(body) :], at, body


def position(text: str, offset: int) -> types.Position:
    """UTF-16 position of a code-point offset (the benchmark files are ASCII)."""
    before = text[:offset]
    line = before.count("\n")
    return types.Position(line=line, character=len(before) - (before.rfind("\n") + 1))


async def run(args) -> dict:
    """Replay the session; return the measurements."""
    path = Path(args.file)
    doc_text, at, body = session_text(path, args.function)
    body = body[: args.max_keys]
    uri = path.resolve().as_uri()
    client = LanguageClient("dgls-lsp-latency", "0")
    statuses: list = []
    client.feature("dgls/status")(lambda params: statuses.append(params))
    await client.start_io(sys.executable, "-m", "dgls.cli", "--stdio")
    options = {
        "dgls": {
            "model": args.model,
            "debounceMs": args.debounce_ms,
            "device": args.device,
            **({"steps": args.steps} if args.steps else {}),
        }
    }
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()
                )
            ),
            initialization_options=options,
        )
    )
    client.initialized(types.InitializedParams())
    t0 = time.monotonic()
    while not any(s.state in ("ready", "error") for s in statuses):
        await asyncio.sleep(0.05)
        if time.monotonic() - t0 > 600:
            raise SystemExit("the model did not load in 10 minutes")
    status = next(s for s in statuses if s.state in ("ready", "error"))
    if status.state == "error":
        raise SystemExit(f"the model failed to load: {status.error}")
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc_text)
        )
    )

    text, version, cursor = doc_text, 1, at
    n_before = len(statuses)
    loop = asyncio.get_running_loop()
    records: list[dict] = []
    pending: tuple[str, asyncio.Future] | None = None
    for i, ch in enumerate(body):
        if pending is not None and not pending[1].done():
            client.cancel_request(types.CancelParams(id=pending[0]))
        text = text[:cursor] + ch + text[cursor:]
        version += 1
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=position(text, cursor), end=position(text, cursor)), text=ch
                    )
                ],
            )
        )
        cursor += 1
        msg_id = f"key-{i}"
        record = {"sent": loop.time(), "done": None, "items": 0, "cancelled": False}
        records.append(record)
        fut = asyncio.wrap_future(
            client.protocol.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION,
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=position(text, cursor),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
                ),
                msg_id=msg_id,
            )
        )
        fut.add_done_callback(lambda f, r=record: _finish(f, r, loop))
        pending = (msg_id, fut)
        if ch == "\n" and args.read_ghost:  # the user stops at the line end and reads the ghost text
            await asyncio.wait([fut], timeout=600)
        await asyncio.sleep((args.pause_ms if ch == "\n" else args.ms_per_key) / 1e3)
    if pending is not None:
        await asyncio.wait([pending[1]], timeout=600)
    config = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    model_ms = [
        s.lastLatencyMs
        for s in statuses[n_before:]
        if getattr(s, "event", None) is None and getattr(s, "lastLatencyMs", None) is not None
    ]
    return {
        "records": records,
        "server": config["status"],
        "model": config["model"],
        "keys": len(body),
        "model_ms": model_ms,
        "file": f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}::{args.function}",
    }


def _finish(fut: asyncio.Future, record: dict, loop) -> None:
    record["done"] = loop.time()
    if fut.cancelled():
        record["cancelled"] = True
        return
    exc = fut.exception()
    if isinstance(exc, JsonRpcRequestCancelled):
        record["cancelled"] = True
    elif exc is None:
        result = fut.result()
        record["items"] = len(result.items) if result is not None else 0


def summarize(res: dict) -> dict:
    """The figures for the table."""
    answered = [r for r in res["records"] if r["done"] is not None and not r["cancelled"]]
    with_items = [r for r in answered if r["items"]]
    ms = [(r["done"] - r["sent"]) * 1e3 for r in answered]
    ms_items = [(r["done"] - r["sent"]) * 1e3 for r in with_items]
    server = res["server"]
    return {
        "keys": res["keys"],
        "answered": len(answered),
        "with_ghost": len(with_items),
        "client_cancelled": sum(r["cancelled"] for r in res["records"]),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p50_ghost_ms": percentile(ms_items, 50),
        "p95_ghost_ms": percentile(ms_items, 95),
        "model_calls": server["requests"],
        "typed_through": server["typedThrough"],
        "result_cache": server["resultCache"],
        "server_cancelled": server["cancelled"],
        "cache_hit_rate": (server["typedThrough"] + server["resultCache"]) / max(1, len(answered)),
        "model_done": len(res["model_ms"]),
        "p50_model_ms": percentile(res["model_ms"], 50),
        "p95_model_ms": percentile(res["model_ms"], 95),
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(s: dict, res: dict, args) -> str:
    """A RESULTS.md section: machine, versions, commit, date, settings, the figures."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model = res["model"]
    lines = [
        f"## LSP latency: typing session ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} CPU cores, load average {load:.1f} at the end "
        f"(shared machine); device {model.get('device')}, {model.get('dtype')}",
        f"- Versions: Python {platform.python_version()}, torch {version('torch')}, transformers "
        f"{version('transformers')}, pygls {version('pygls')}, lsprotocol {version('lsprotocol')}",
        f"- Commit: {git_commit()}",
        f"- Model: {args.model} ({model.get('params')} parameters); steps {args.steps or 'checkpoint default'}, "
        f"debounce {args.debounce_ms} ms",
        f"- Session: `{res['file']}` body typed back, {s['keys']} keys at {args.ms_per_key} ms a key, "
        f"{args.pause_ms} ms pause at line ends{' after the answer came' if args.read_ghost else ''}, Automatic "
        f"trigger after each key, the pending request cancelled on the next key",
        "- Command: `python benchmarks/lsp_latency.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| keys | answered | with ghost text | time to result p50 / p95 (ms) | with ghost text p50 / p95 (ms) "
        "| model calls (completed) | model call p50 / p95 (ms) | client cancels (-32800) | superseded on the server "
        "| typed-through hits | result-cache hits | cache hit rate |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['keys']} | {s['answered']} | {s['with_ghost']} | {_fmt(s['p50_ms'])} / {_fmt(s['p95_ms'])} "
        f"| {_fmt(s['p50_ghost_ms'])} / {_fmt(s['p95_ghost_ms'])} | {s['model_calls']} ({s['model_done']}) "
        f"| {_fmt(s['p50_model_ms'])} / {_fmt(s['p95_model_ms'])} | {s['client_cancelled']} "
        f"| {max(0, s['server_cancelled'] - s['client_cancelled'])} | {s['typed_through']} | {s['result_cache']} "
        f"| {s['cache_hit_rate']:.0%} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the session and print (and optionally append) the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=None, help="max denoising steps (default: the checkpoint's)")
    p.add_argument("--debounce-ms", type=int, default=75)
    p.add_argument("--file", default=str(DEFAULT_FILE))
    p.add_argument("--function", default=DEFAULT_FUNCTION)
    p.add_argument("--ms-per-key", type=int, default=120)
    p.add_argument("--pause-ms", type=int, default=600, help="pause after typing a newline")
    p.add_argument("--max-keys", type=int, default=200)
    p.add_argument(
        "--no-read-ghost",
        dest="read_ghost",
        action="store_false",
        help="do not wait for the answer at line ends (by default the user waits there, then pauses)",
    )
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args()
    res = asyncio.run(run(args))
    s = summarize(res)
    out = table(s, res, args)
    print(out)
    if args.write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        if not results.exists():
            results.write_text(
                "# Benchmark results\n\nEach section is appended by the script that produced it; "
                "see the script's docstring for what it measures.\n\n"
            )
        with results.open("a") as f:
            f.write("\n" + out)


if __name__ == "__main__":
    main()
