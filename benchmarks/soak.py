"""Soak: long typing sessions against real `dgls` servers; does anything hang, leak, drift or slow down?

Three clients type at once, each into its own server (pygls serves one client per TCP server, so two TCP
clients need two servers; dgls refuses a second connection to one): one over stdio, two over TCP. The session
is tests/reliability/soak_session.py (the CI test runs a short one): incremental didChange at human and burst
speed, an Automatic inline completion after each change, random $/cancelRequest, several open documents,
``dgls/documentHash`` after every change, bad requests and injected faults (document closed under a running
request, model restarted mid-session).

Reported per client: requests served, cancellations, faults injected and survived, bad inputs tried, hangs
(requests without a reply), text mismatches, server RSS and open fds at start (after the model loaded), after
warm-up (first fifth of the changes) and at the end, and inline-completion latency p50/p95 over the first and
the last third of the served requests. ``--write`` appends the table to benchmarks/RESULTS.md.

    python benchmarks/soak.py [--model dgls-tiny] [--changes 2000] [--steps 4] [--tcp-clients 2] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts share provenance.py and soak_session.py
from provenance import cpu_name, git_commit  # noqa: E402
from soak_session import Session, SoakConfig, SoakReport  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_sample(r: SoakReport, changes: int) -> tuple[int, int, int]:
    """The first sample at or after a fifth of the session (the caches and allocator are warm by then)."""
    return next(s for s in r.samples if s[0] >= changes // 5)


def fmt_lat(x: tuple[float, float] | None) -> str:
    return "- / -" if x is None else f"{x[0]:.0f} / {x[1]:.0f}"


def table(reports: list[SoakReport], changes: int) -> str:
    head = (
        "| client | changes | inline requests (answered) | with ghost text | cancels sent / -32800 replies | "
        "faults injected / survived | bad inputs (replied) | hangs | text mismatches (hash checks) | "
        "RSS MiB start / warm / end | fds start / warm / end | latency p50 / p95 ms early | late | exit |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for r in reports:
        s0, sw, s1 = r.samples[0], warm_sample(r, changes), r.samples[-1]
        rows.append(
            f"| {r.label} | {changes} | {r.requests} ({r.answered}) | {r.with_items} | "
            f"{r.cancels_sent} / {r.cancelled_replies} | {r.faults} / {r.faults_survived} | "
            f"{r.bad_inputs} ({r.bad_input_replies}) | {r.hangs} | {len(r.mismatches)} ({r.hash_checks}) | "
            f"{s0[1] / 1024:.0f} / {sw[1] / 1024:.0f} / {s1[1] / 1024:.0f} | {s0[2]} / {sw[2]} / {s1[2]} | "
            f"{fmt_lat(r.latency('early'))} | {fmt_lat(r.latency('late'))} | {r.exit_code} |"
        )
    return head + "\n".join(rows) + "\n"


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--changes", type=int, default=2000, help="didChange notifications per client")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--tcp-clients", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fault-every",
        type=int,
        default=SoakConfig.fault_every,
        help="inject a fault every this many changes; 0: none (no model restarts, to see memory creep)",
    )
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args()

    cfg = SoakConfig(
        model=args.model,
        changes=args.changes,
        seed=args.seed,
        sample_every=max(args.changes // 40, 5),
        fault_every=args.fault_every,
        settings={"steps": args.steps, "debounceMs": 10, "maxCanvas": 16},
    )
    logs = Path(tempfile.mkdtemp(prefix="dgls-soak-"))
    sessions = [Session(cfg, "stdio", log_file=str(logs / "stdio.log"))]
    sessions += [
        Session(cfg, f"tcp{n}", "tcp", free_port(), log_file=str(logs / f"tcp{n}.log")) for n in range(args.tcp_clients)
    ]
    t0 = time.perf_counter()

    async def run_all() -> list[SoakReport]:
        return list(await asyncio.gather(*(s.run() for s in sessions)))

    reports = asyncio.run(run_all())
    wall = time.perf_counter() - t0
    out = table(reports, args.changes)
    print(out)
    print(f"server logs: {logs}")
    for r in reports:
        for problem in r.mismatches[:5] + r.other_errors[:5] + r.errors_shown[:5]:
            print(f"{r.label}: {problem}")
    ok = all(r.hangs == 0 and not r.mismatches and not r.other_errors and r.exit_code == 0 for r in reports)
    if args.write:
        commit = git_commit()
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        faults = (
            f"a fault every {cfg.fault_every} (alternately: document closed and reopened under a running "
            f"request; model restarted mid-session)"
            if cfg.fault_every
            else "no faults (no model restarts)"
        )
        versions = ", ".join(f"{m} {version(m)}" for m in ("torch", "transformers", "pygls", "lsprotocol"))
        text = (
            f"\n\n## Soak: {len(reports)} clients typing at once ({stamp})\n\n"
            f"- Machine: {machine()}; device cpu, float32\n"
            f"- Versions: Python {platform.python_version()}, {versions}\n"
            f"- Commit: {commit}\n"
            f"- Model: {args.model}; steps {args.steps}, debounce 10 ms, max canvas 16\n"
            f"- Session: {args.changes} incremental didChange per client (keystrokes at 5-40 ms, bursts of 5-15 "
            f"with no pause, newlines incl. CRLF, deletions, pastes, replaced ranges, non-ASCII), an Automatic "
            f"inline completion after each, 15% cancelled 0-10 ms later, dgls/documentHash after each change, "
            f"a bad request every {cfg.bad_input_every} changes, {faults}; "
            f"one stdio client and {args.tcp_clients} TCP clients, each with its own server; wall "
            f"{wall:.0f} s\n"
            f"- Command: `python benchmarks/soak.py --model {args.model} --changes {args.changes} "
            f"--steps {args.steps} --tcp-clients {args.tcp_clients} --fault-every {args.fault_every} --write`\n\n" + out
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
