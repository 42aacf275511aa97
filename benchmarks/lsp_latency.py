"""Time to ghost text in a replayed typing session: a real LSP client drives `dgls --stdio` as an editor does.

The body of one function of a real file is deleted, then typed back one character at a time: a `didChange` per
keystroke, then `textDocument/inlineCompletion` with the Automatic trigger; a request still pending when the
next key is typed is cancelled with `$/cancelRequest` (what VS Code does). At a line end the user waits for the
ghost text, then pauses (``--no-read-ghost``: only the pause).

Ghost text the user sees (an answer with an item that came before the next key) gets one verdict, reported to
the server as VS Code reports it: accepted (the item's own ``dgls.accepted`` command) when taking it gives the
text the next keys would have typed; partially accepted (``dgls.partiallyAccepted`` with the character count)
when only its first whole words do; dismissed (``dgls.dismissed``) otherwise. An accept inserts the text in one
``didChange`` and the user types on after it, so the keys typed can be fewer than the body's characters.

Reported: time to result (request sent -> response) p50/p95 over the requests that were answered, also over
those answered with ghost text; cancellations (client `$/cancelRequest` answered -32800) and requests the server
superseded (a newer keystroke on the same document); the server's model calls, typed-through cache hits and
result-cache hits (from `dgls.showConfig`); and the server's own usage counters (``dgls.stats``): items served,
accepted, partially accepted, dismissed, and the acceptance rate, accepted / items served. `--write` appends the
tables to benchmarks/RESULTS.md. The last line printed is the summary as JSON.

    python benchmarks/lsp_latency.py [--model dgls-tiny] [--steps 8] [--ms-per-key 120] [--max-keys 200] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
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
from dgls.server import CMD_DISMISSED, CMD_PARTIALLY_ACCEPTED, CMD_STATS  # noqa: E402

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


def offset(text: str, pos: types.Position) -> int:
    """Code-point offset of a UTF-16 position (the inverse of :func:`position` on ASCII text)."""
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[: pos.line]) + pos.character


WORDS = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")  # one "accept next word": spaces, then a word or a symbol


def verdict(text: str, cursor: int, to_type: str, start: int, end: int, new_text: str) -> tuple[str, int]:
    """What the simulated user does with ghost text: the item replacing ``text[start:end]`` with `new_text`.

    `to_type` is what the user is about to type at `cursor`. Returns ``("accepted", k)`` when the document after
    the accept is the one the next `k` keys would give; ``("partiallyAccepted", n)`` when only the first `n`
    characters do, cut at a word (what repeated "accept next word" takes); else ``("dismissed", 0)``.
    """
    if not start <= cursor <= end or not new_text.startswith(text[start:cursor]):
        return "dismissed", 0
    shown, replaced = new_text[cursor - start :], text[cursor:end]  # after the cursor; closers it replaces
    k = len(shown) - len(replaced)
    if k >= 1 and shown == to_type[:k] + replaced:
        return "accepted", k
    n = 0
    for word in WORDS.finditer(shown):
        if not to_type.startswith(shown[: word.end()]):
            break
        n = word.end()
    return ("partiallyAccepted", n) if n else ("dismissed", 0)


def send_edit(client: LanguageClient, uri: str, version: int, text: str, start: int, end: int, new_text: str) -> str:
    """Replace ``text[start:end]`` with `new_text` in the server's copy (a didChange to `version`); the new text."""
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=position(text, start), end=position(text, end)), text=new_text
                )
            ],
        )
    )
    return text[:start] + new_text + text[end:]


async def report(client: LanguageClient, item: types.InlineCompletionItem, kind: str, chars: int) -> None:
    """Tell the server what the user did with an item it served, as VS Code does (workspace/executeCommand)."""
    item_id = item.command.arguments[0]
    if kind == "accepted":  # the item's own command, with its arguments
        command, arguments = item.command.command, item.command.arguments
    elif kind == "partiallyAccepted":
        command, arguments = CMD_PARTIALLY_ACCEPTED, [item_id, chars]
    else:
        command, arguments = CMD_DISMISSED, [item_id]
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command=command, arguments=arguments))


async def run(args) -> dict:
    """Replay the session; return the measurements."""
    path = Path(args.file)
    doc_text, at, body = session_text(path, args.function)
    limit = min(len(body), args.max_keys)  # the session covers this much of the body, typed or accepted
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
            **({"automaticSteps": args.automatic_steps} if args.automatic_steps else {}),
            **({"automaticCanvas": args.automatic_canvas} if args.automatic_canvas else {}),
            **({"threads": args.threads} if args.threads else {}),
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
        await asyncio.sleep(0.01)
        if time.monotonic() - t0 > 600:
            raise SystemExit("the model did not load in 10 minutes")
    ready_s = time.monotonic() - t0  # initialized -> the model is loaded and ready
    status = next(s for s in statuses if s.state in ("ready", "error"))
    if status.state == "error":
        raise SystemExit(f"the model failed to load: {status.error}")
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc_text)
        )
    )

    # the first request after start-up: the user asks (Invoked) at the cursor before typing
    first = await invoke_at(client, uri, doc_text, at)
    text, version, cursor, i = doc_text, 1, at, 0  # i: how much of the body is in the document
    await asyncio.sleep(0.2)  # the first request's status notification
    n_before = len(statuses)
    loop = asyncio.get_running_loop()
    records: list[dict] = []
    user = dict.fromkeys(("shown", "accepted", "partiallyAccepted", "acceptedChars", "dismissed"), 0)

    async def look(record: dict) -> None:
        """The user reads the ghost text of `record`'s answer, if it came, and takes it, a part, or neither."""
        nonlocal text, version, cursor, i
        item = record["item"]
        if item is None:
            return
        start, end = offset(text, item.range.start), offset(text, item.range.end)
        kind, n = verdict(text, cursor, body[i:], start, end, item.insert_text)
        user["shown"] += 1
        user[kind] += 1
        await report(client, item, kind, n)
        if kind == "dismissed":
            return
        version += 1
        if kind == "accepted":
            text = send_edit(client, uri, version, text, start, end, item.insert_text)
        else:
            text = send_edit(client, uri, version, text, cursor, cursor, body[i : i + n])
        cursor, i = cursor + n, i + n
        user["acceptedChars"] += n

    pending: tuple[str, asyncio.Future, dict] | None = None
    while i < limit:
        ch = body[i]
        if pending is not None and not pending[1].done():
            client.cancel_request(types.CancelParams(id=pending[0]))
        version += 1
        text = send_edit(client, uri, version, text, cursor, cursor, ch)
        cursor, i = cursor + 1, i + 1
        msg_id = f"key-{len(records)}"
        record = {"sent": loop.time(), "done": None, "items": 0, "item": None, "cancelled": False}
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
        pending = (msg_id, fut, record)
        if ch == "\n" and args.read_ghost:  # the user stops at the line end and reads the ghost text
            await asyncio.wait([fut], timeout=600)
        await asyncio.sleep((args.pause_ms if ch == "\n" else args.ms_per_key) / 1e3)
        if fut.done():  # the answer came before the next key: its ghost text was on screen
            await look(record)
    if pending is not None and not pending[1].done():
        await asyncio.wait([pending[1]], timeout=600)
        await look(pending[2])
    await asyncio.sleep(0.2)  # the status of the last answer
    n_typed = len(statuses)
    invoked = await invoke_at_line_ends(client, uri, text, at, cursor, args.invoked)
    config = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dgls.showConfig"))
    stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(command=CMD_STATS))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    model_ms = [
        s.lastLatencyMs
        for s in statuses[n_before:n_typed]  # the typing session's (Automatic) calls only
        if getattr(s, "event", None) is None and getattr(s, "lastLatencyMs", None) is not None
    ]
    return {
        "records": records,
        "server": config["status"],
        "stats": stats,
        "user": user,
        "model": config["model"],
        "keys": len(records),
        "covered": limit,
        "model_ms": model_ms,
        "file": f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}::{args.function}",
        "invoked": invoked,
        "ready_s": ready_s,
        "first_ms": first["ms"],
        "candidates": config["settings"].get("candidates"),
    }


async def invoke_at_line_ends(client, uri: str, text: str, start: int, end: int, n: int) -> list[dict]:
    """After the session, the user asks (Invoked trigger) at up to `n` line ends of what was typed, one at a time.

    Returns per request: time to result (ms) and the number of candidates served.
    """
    ends = [k for k in range(start, end) if text[k] == "\n"][:n]
    return [await invoke_at(client, uri, text, k) for k in ends]


async def invoke_at(client, uri: str, text: str, at: int) -> dict:
    """One Invoked inline completion at offset `at`: time to result (ms) and the candidates served."""
    t0 = time.perf_counter()
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, at),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        )
    )
    return {"ms": (time.perf_counter() - t0) * 1e3, "items": len(result.items) if result else 0}


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
        record["item"] = result.items[0] if record["items"] else None  # the ghost text an editor shows


def summarize(res: dict) -> dict:
    """The figures for the table."""
    answered = [r for r in res["records"] if r["done"] is not None and not r["cancelled"]]
    with_items = [r for r in answered if r["items"]]
    ms = [(r["done"] - r["sent"]) * 1e3 for r in answered]
    ms_items = [(r["done"] - r["sent"]) * 1e3 for r in with_items]
    server, stats = res["server"], res["stats"]
    invoked = res.get("invoked", [])
    return {
        "keys": res["keys"],
        "covered": res["covered"],
        "ghost_chars": res["user"]["acceptedChars"],  # characters the user took from ghost text, not typed
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
        # the server's usage counters (dgls.stats), not the client's own tally
        "items_served": stats["itemsServed"],
        "shown": res["user"]["shown"],
        "accepted": stats["accepted"],
        "partially_accepted": stats["partiallyAccepted"],
        "accepted_chars": stats["acceptedChars"],
        "dismissed": stats["dismissed"],
        "acceptance_rate": stats["accepted"] / stats["itemsServed"] if stats["itemsServed"] else None,
        "ready_s": res.get("ready_s"),
        "first_ms": res.get("first_ms"),
        "invoked_n": len(invoked),
        "invoked_items": statistics.fmean(r["items"] for r in invoked) if invoked else None,
        "p50_invoked_ms": percentile([r["ms"] for r in invoked], 50),
        "p95_invoked_ms": percentile([r["ms"] for r in invoked], 95),
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _fmt1(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _rate(v: float | None) -> str:
    return "- (no item served)" if v is None else f"{v:.1%}"


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
        f"Automatic triggers {args.automatic_steps or 'the model default'} steps on a canvas of at most "
        f"{args.automatic_canvas or 'the model default'}, {model.get('threads')} torch thread(s); debounce "
        f"{args.debounce_ms} ms",
        f"- Session: `{res['file']}` body typed back ({s['covered']} characters: {s['keys']} keys typed, "
        f"{s['ghost_chars']} taken from ghost text), {args.ms_per_key} ms a key, "
        f"{args.pause_ms} ms pause at line ends{' after the answer came' if args.read_ghost else ''}, Automatic "
        f"trigger after each key, the pending request cancelled on the next key; ghost text that came before the "
        f"next key is accepted when it is what the user types next, partially accepted when its first words are, "
        f"dismissed otherwise",
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
        "| items served | shown to the user | accepted | partially accepted (characters) | dismissed "
        "| acceptance rate |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {s['items_served']} | {s['shown']} | {s['accepted']} | {s['partially_accepted']} "
        f"({s['accepted_chars']}) | {s['dismissed']} | {_rate(s['acceptance_rate'])} |",
        "",
        f"Invoked trigger after the session, at {s['invoked_n']} line ends of the typed body, one request at a "
        f"time ({res.get('candidates')} candidates asked, {_fmt1(s['invoked_items'])} served on average): time to "
        f"result p50 / p95 {_fmt(s['p50_invoked_ms'])} / {_fmt(s['p95_invoked_ms'])} ms. Start-up: the model was ready "
        f"{_fmt1(s['ready_s'])} s after `initialized` (Python imports and loading); the first request after that "
        f"(Invoked, at the cursor, before typing) was answered in {_fmt(s['first_ms'])} ms. The model call "
        "figures above are the typing session's Automatic calls only.",
        "",
        "Acceptance rate = accepted / items served. Items served, accepted, partially accepted and dismissed are the "
        "server's own counters (`dgls.stats` at the end of the session); items served counts every item the server "
        "answered with, including answers that came after the next key and so were never shown.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=None, help="max denoising steps (default: the checkpoint's)")
    p.add_argument("--automatic-steps", type=int, default=None, help="step cap of Automatic triggers")
    p.add_argument("--automatic-canvas", type=int, default=None, help="largest canvas of Automatic triggers")
    p.add_argument("--threads", type=int, default=None, help="the model's CPU threads (default: the server's)")
    p.add_argument("--debounce-ms", type=int, default=75)
    p.add_argument("--file", default=str(DEFAULT_FILE))
    p.add_argument("--function", default=DEFAULT_FUNCTION)
    p.add_argument("--ms-per-key", type=int, default=120)
    p.add_argument("--pause-ms", type=int, default=600, help="pause after typing a newline")
    p.add_argument("--max-keys", type=int, default=200, help="how much of the body the session covers")
    p.add_argument("--invoked", type=int, default=10, help="Invoked requests at line ends after the session")
    p.add_argument(
        "--no-read-ghost",
        dest="read_ghost",
        action="store_false",
        help="do not wait for the answer at line ends (by default the user waits there, then pauses)",
    )
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    return p.parse_args(argv)


def main() -> None:
    """Run the session and print (and optionally append) the tables; the last line is the summary as JSON."""
    args = parse_args()
    res = asyncio.run(run(args))
    s = summarize(res)
    out = table(s, res, args)
    print(out)
    print(json.dumps({**s, "stats": res["stats"]}))
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
