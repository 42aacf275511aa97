"""CPU latency of `dgls infill --jsonl` per request, against autoregressive decoding on the same weights.

For canvases of 16, 32 and 64 free slots, the same requests (prefix/suffix windows cut from source files at
fixed offsets) go through the real command line (`dgls infill --jsonl`, model loaded once) and report the
model time per request (p50/p95) and the NFE. The autoregressive baseline runs the same model in the same
run, decoding the same number of tokens one at a time left to right: the causal encoder (the same weights as
the denoiser) with its KV cache and the tied lm_head, greedy. The ratio is diffusion ms / AR ms per request.

    python benchmarks/infill_latency.py [--model dgls-tiny] [--requests 20] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import cpu_name, git_commit, percentile  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Files the requests are cut from: the dgls sources themselves (never in the training corpus) and the example.
SOURCES = [
    ROOT / "dgls" / "engine.py",
    ROOT / "dgls" / "cli.py",
    ROOT / "model" / "sampler.py",
    ROOT / "examples" / "fib.py",
]


def make_requests(n: int, prefix_chars: int = 1200, suffix_chars: int = 300) -> list[dict]:
    """Cursor positions at line starts spread over the source files (deterministic)."""
    texts = [p.read_text() for p in SOURCES if p.is_file()]
    out = []
    for i in range(n):
        text = texts[i % len(texts)]
        lines = text.splitlines(keepends=True)
        row = 5 + (i * 7919) % max(1, len(lines) - 10)
        cursor = sum(len(x) for x in lines[:row])
        out.append(
            {
                "prefix": text[max(0, cursor - prefix_chars) : cursor],
                "suffix": text[cursor : cursor + suffix_chars],
                "language": "python",
            }
        )
    return out


def run_diffusion(model: str, requests: list[dict], n_middle: int, threads: int) -> list[dict]:
    """All requests through one `dgls infill --jsonl` process; returns its output lines."""
    lines = [json.dumps({**r, "n_middle": n_middle}) for r in requests]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-m", "dgls.cli", "infill", "--jsonl", "--model", model],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"dgls infill --jsonl failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines()]


@torch.no_grad()
def ar_decode(model, prefix_ids: list[int], n: int) -> float:
    """Greedy left-to-right decoding of `n` tokens with the KV cache; returns milliseconds (prefill included)."""
    from dgls.model.backend import new_cache

    enc = model.model.encoder
    cap = model.config.get_text_config(decoder=True).final_logit_softcapping
    t0 = time.perf_counter()
    cache = new_cache(model)
    ids = torch.tensor([prefix_ids])
    pos = torch.arange(ids.shape[1])[None]
    for _ in range(n):
        h = enc(input_ids=ids, past_key_values=cache, position_ids=pos).last_hidden_state[:, -1]
        logits = model.lm_head(h).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        nxt = logits.argmax(-1, keepdim=True)
        pos = pos[:, -1:] + 1
        ids = nxt
    return (time.perf_counter() - t0) * 1e3


@torch.no_grad()
def ar_decode_fast(model, prefix_ids: list[int], n: int) -> float:
    """:func:`ar_decode` on dgls's fast path (``dgls.model.fastpath``: the encoder without transformers'
    per-call overhead, as the diffusion side runs), greedy, with the KV cache; returns milliseconds."""
    from dgls.model import fastpath
    from dgls.model.backend import new_cache

    t0 = time.perf_counter()
    cache = new_cache(model)
    ids = torch.tensor([prefix_ids])
    for _ in range(n):
        ids = fastpath.next_token_logits(model, ids, cache).argmax(-1, keepdim=True)
    return (time.perf_counter() - t0) * 1e3


def run_ar(model_name: str, requests: list[dict], n_tokens: int, fast: bool = False) -> list[float]:
    """Per-request AR milliseconds for the same prefixes (windows cut as the engine cuts them)."""
    from dgls.engine import Engine, EngineOptions

    engine = Engine(EngineOptions(model=model_name, device="cpu"))
    engine.wait_ready()
    inf = engine._infiller
    times = []
    for r in requests:
        req = engine.build_request(r["prefix"] + r["suffix"], len(r["prefix"]), language="python")
        ids = [inf.spec.bos_id, *inf.tokenize(req.prefix)]
        times.append((ar_decode_fast if fast else ar_decode)(inf.model, ids, n_tokens))
    engine.shutdown()
    return times


def machine() -> dict:
    """Where and with what this ran."""
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--canvases", default="16,32,64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    requests = make_requests(args.requests)
    rows = []
    for n in (int(x) for x in args.canvases.split(",")):
        out = run_diffusion(args.model, requests, n, args.threads)
        errors = [o for o in out if "error" in o]
        if errors:
            raise SystemExit(f"{len(errors)} request(s) failed: {errors[0]}")
        ms = [o["ms"] for o in out][1:] or [o["ms"] for o in out]  # the first request pays the warm-up
        nfe = [o["nfe"] for o in out]
        ar = run_ar(args.model, requests, n)[1:] or [0.0]
        ar_fast = run_ar(args.model, requests, n, fast=True)[1:] or [0.0]
        rows.append(
            {
                "canvas": n,
                "p50": percentile(ms, 50),
                "p95": percentile(ms, 95),
                "nfe": statistics.median(nfe),
                "nfe_mean": statistics.mean(nfe),
                "ar_p50": percentile(ar, 50),
                "ar_p95": percentile(ar, 95),
                "ratio": percentile(ms, 50) / percentile(ar, 50),
                "ar_fast_p50": percentile(ar_fast, 50),
                "ratio_fast": percentile(ms, 50) / percentile(ar_fast, 50),
                "n": len(ms),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    info = machine()
    table = [
        f"\n## Infill latency on CPU: diffusion vs autoregressive ({info['date']})\n",
        f"Machine: {info['cpu']}, {info['cores']} cores, {args.threads} torch threads; Python {info['python']}, "
        f"torch {info['torch']}, transformers {info['transformers']}; commit {info['commit']}; model `{args.model}`.",
        f"Command: `python benchmarks/infill_latency.py --requests {args.requests} --write`. Each row: "
        f"{rows[0]['n']} requests after one warm-up through `dgls infill --jsonl` (one process, one model load), "
        "model time per request (prefix encode + all denoising steps + decode); AR = the same model decoding the "
        "same number of tokens greedily, one at a time, with its KV cache, in the same run: through transformers' "
        "forward (AR), and through dgls's fast path (AR fast: the same encoder code the diffusion side runs, "
        "`dgls.model.fastpath.next_token_logits`). A ratio below 1 means diffusion is faster.\n",
        "| canvas (free slots) | diffusion p50 ms | p95 ms | NFE median (mean) | AR p50 ms | AR p95 ms "
        "| diffusion / AR (p50) | AR fast p50 ms | diffusion / AR fast (p50) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['canvas']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['nfe']:.0f} ({r['nfe_mean']:.1f}) "
            f"| {r['ar_p50']:.1f} | {r['ar_p95']:.1f} | {r['ratio']:.2f} | {r['ar_fast_p50']:.1f} "
            f"| {r['ratio_fast']:.2f} |"
        )
    text = "\n".join(table) + "\n"
    print(text)
    if args.write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n\nEach section: machine, versions, commit, date, command.\n")
        with results.open("a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
