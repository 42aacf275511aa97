"""Latency of the vllm backend against the in-process model: same model, same requests, same machine.

No GPU and no vLLM here: the remote path runs against tests/remote/vllm_stub.py, which answers
``/v1/completions`` as vLLM does by running the same model (dgls-tiny) through dgls's own sampler, in this
process on a thread, over loopback HTTP. Each request (prefix/suffix windows cut from dgls's sources, a new
prefix each time, so neither path reuses an encoder cache) goes once through an in-process Engine and once
through an Engine on the vllm backend, alternating which goes first. Reported per path: end-to-end
``Engine.complete`` time p50/p95 and the steps run; for the remote path also the server's own model time and
the overhead = remote total - server model time (HTTP, JSON, the client's thread hop, tokenizing on both sides;
the server re-encodes the prefix itself, as vLLM does without a prefix-cache hit). The stub renoises over the
whole vocabulary as vLLM does, so its step counts may differ from the in-process sampler's: compare the overhead,
not the totals, for the cost of going remote.

    OMP_NUM_THREADS=1 python benchmarks/remote_latency.py [--requests 30] [--canvas 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "remote"))
from infill_latency import make_requests  # noqa: E402
from provenance import cpu_name, git_commit, percentile  # noqa: E402
from vllm_stub import StubVllm, load_stub_model  # noqa: E402

from dgls.engine import Engine, EngineOptions  # noqa: E402
from dgls.model.remote import RemoteOptions  # noqa: E402


def timed(engine: Engine, text: str, offset: int, canvas: int, seed: int) -> tuple[float, int]:
    """End-to-end ms of one request through `engine`, and its NFE."""
    request = engine.build_request(text, offset, language="python")
    t0 = time.perf_counter()
    done = engine.complete(request, lengths=(canvas,), seed=seed)
    return (time.perf_counter() - t0) * 1e3, done.nfe


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {percentile(values, 50):.1f} | {percentile(values, 95):.1f} | {statistics.mean(values):.1f} |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--canvas", type=int, default=16, help="free slots per canvas")
    args = p.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)

    local = Engine(EngineOptions())
    local.wait_ready()
    stub = StubVllm(load_stub_model()).start()
    remote = Engine(EngineOptions(remote=RemoteOptions(url=stub.url, tokenizer="dgls-tiny", timeout_s=120)))
    remote.wait_ready()
    requests = make_requests(args.requests + 2)
    for warm in requests[:2]:  # first calls pay one-time costs (allocator, thread start, connection)
        text = warm["prefix"] + warm["suffix"]
        timed(local, text, len(warm["prefix"]), args.canvas, 0)
        timed(remote, text, len(warm["prefix"]), args.canvas, 0)

    local_ms, remote_ms, server_ms, overhead_ms, local_nfe, server_steps = [], [], [], [], [], []
    for i, r in enumerate(requests[2:]):
        text, offset = r["prefix"] + r["suffix"], len(r["prefix"])
        order = (local, remote) if i % 2 == 0 else (remote, local)
        for engine in order:
            n = len(stub.answers)
            ms, nfe = timed(engine, text, offset, args.canvas, i)
            if engine is local:
                local_ms.append(ms)
                local_nfe.append(nfe)
            else:
                (answer,) = stub.answers[n:]
                remote_ms.append(ms)
                server_ms.append(answer.ms)
                server_steps.append(answer.steps)
                overhead_ms.append(ms - answer.ms)
    local.shutdown()
    remote.shutdown()
    stub.stop()

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"remote_latency: {args.requests} requests, canvas {args.canvas} free slots, dgls-tiny, {when}, "
        f"commit {git_commit()}, {cpu_name()}, {threads} thread(s), Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    print("| path | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    print(row("in-process (Engine.complete)", local_ms))
    print(row("vllm backend -> stub server (Engine.complete)", remote_ms))
    print(row("  of which the server's model time", server_ms))
    print(row("  remote overhead (total - server model time)", overhead_ms))
    print(
        f"steps: in-process mean {statistics.mean(local_nfe):.1f}, stub server mean {statistics.mean(server_steps):.1f}"
    )
    summary = {
        "requests": args.requests,
        "canvas": args.canvas,
        "threads": threads,
        "commit": git_commit(),
        "local_p50": percentile(local_ms, 50),
        "local_p95": percentile(local_ms, 95),
        "remote_p50": percentile(remote_ms, 50),
        "remote_p95": percentile(remote_ms, 95),
        "overhead_p50": percentile(overhead_ms, 50),
        "overhead_p95": percentile(overhead_ms, 95),
        "ratio_p50": percentile(remote_ms, 50) / percentile(local_ms, 50),
        "local_nfe_mean": statistics.mean(local_nfe),
        "server_steps_mean": statistics.mean(server_steps),
    }
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
