"""Trainer throughput of ``dgls train``'s step, fp32 against bf16 autocast in the same run, with a phase profile.

The same batches (drawn once from the corpus' train split with a fixed seed) go through the real
``infill_loss`` + backward + AdamW step of a freshly initialised model of each size, first in fp32, then under
bf16 autocast (fp32 master weights, loss in fp32). Tokens/s counts every prefix and canvas token a step
processes. One extra profiled step per precision splits the step into the phases ``infill_loss`` labels
(encoder, encoder lm_head + next-token CE, self-conditioning pass, graded decoder pass + CE), the backward
and the optimizer.

    python benchmarks/train_speed.py --corpus /path/corpus --sizes 256x5 --steps 6

Prints Markdown and appends it to RESULTS.md (``--no-append`` to only print).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ROOT, cpu_name, git_commit  # noqa: E402
from size_sweep import SIZES  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

PHASES = ("train.encoder", "train.encoder_lm_head", "train.self_conditioning_pass", "train.decoder_pass")


def cpu_flags() -> str:
    """The matrix-relevant CPU features (AMX, AVX-512 bf16) this machine reports."""
    try:
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return " ".join(wanted) or "none of avx2/avx512/amx"


def measure(size: str, batches, tok, steps: int, precision: str, threads: int) -> dict:
    """Tokens/s over ``steps`` steps after one warm-up step, and one profiled step split by phase."""
    from dgls.model import train

    torch.set_num_threads(threads)
    h, L, inter, heads, kv, hd = SIZES[size]
    cfg = train.TrainConfig(hidden=h, layers=L, intermediate=inter, heads=heads, kv_heads=kv, head_dim=hd)
    torch.manual_seed(0)
    model = train.DiffusionGemmaForBlockDiffusion(train.build_model_config(cfg, tok)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    noise_low = train.noise_low_id(tok)

    def step(b):
        with amp:
            loss, s = train.infill_loss(model, b, gen, noise_low, cfg.noise_t_min, cfg.sc_prob, cfg.ar_weight)
        opt.zero_grad(set_to_none=True)
        with torch.profiler.record_function("train.backward"):
            loss.backward()
        with torch.profiler.record_function("train.optimizer"):
            opt.step()
        return s["tokens"]

    step(batches[0])
    tokens, t0 = 0, time.perf_counter()
    for b in batches[1 : steps + 1]:
        tokens += step(b)
    secs = time.perf_counter() - t0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t1 = time.perf_counter()
        step(batches[0])
        total = time.perf_counter() - t1
    ms = {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages() if e.key.startswith("train.")}
    share = {
        k.removeprefix("train."): round(100 * ms.get(k, 0.0) / (total * 1e3), 1)
        for k in (*PHASES, "train.backward", "train.optimizer")
    }
    return {
        "size": size,
        "precision": precision,
        "steps": steps,
        "tok_s": round(tokens / secs),
        "step_s": round(secs / steps, 3),
        "profile_pct": share,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", default=str(ROOT / "model" / "checkpoints" / DEFAULT_MODEL))
    ap.add_argument("--sizes", default="256x5")
    ap.add_argument("--steps", type=int, default=6, help="timed fp32 steps per size")
    ap.add_argument("--bf16-steps", type=int, default=None, help="timed bf16 steps (default: --steps)")
    ap.add_argument("--max-prefix", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)

    from dgls.model import train
    from dgls.model.data import load_manifest, read_source, split_files
    from dgls.model.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    train_files = split_files(load_manifest(args.corpus))[0]
    pick = random.Random(0).sample(train_files, min(300, len(train_files)))
    cfg = train.TrainConfig(max_prefix=args.max_prefix, max_suffix=32)
    sampler = train.InfillExamples([read_source(f) for f in pick], tok, cfg)
    rng = random.Random(0)
    n = max(args.steps, args.bf16_steps or 0) + 1
    batches = []
    for i in range(n):
        free = cfg.canvas_lengths[i % len(cfg.canvas_lengths)]
        batches.append(train.collate([sampler.sample(rng, free) for _ in range(cfg.batch)], free, tok))
    rows = []
    for size in args.sizes.split(","):
        for precision, steps in (("fp32", args.steps), ("bf16", args.bf16_steps or args.steps)):
            rows.append(measure(size, batches, tok, steps, precision, args.threads))
            print(json.dumps(rows[-1]), flush=True)
    head = (
        f"\n### Trainer throughput, fp32 vs bf16 autocast ({dt.date.today()}, commit {git_commit()}, "
        f"{cpu_name()} [{cpu_flags()}], {args.threads} threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}; batch 8, prefixes up to {args.max_prefix} tokens, same batches)\n\n"
    )
    cols = ["size", "precision", "steps", "tok_s", "step_s"]
    phases = [p.removeprefix("train.") for p in (*PHASES, "train.backward", "train.optimizer")]
    table = "| " + " | ".join(cols + [f"{p} %" for p in phases]) + " |\n|" + "---|" * (len(cols) + len(phases)) + "\n"
    for r in rows:
        table += "| " + " | ".join(str(r[c]) for c in cols) + " | "
        table += " | ".join(str(r["profile_pct"][p]) for p in phases) + " |\n"
    by = {(r["size"], r["precision"]): r["tok_s"] for r in rows}
    ratios = "".join(
        f"\nbf16/fp32 tokens/s at {s}: {by[(s, 'bf16')] / by[(s, 'fp32')]:.2f}x" for s in args.sizes.split(",")
    )
    print(head + table + ratios)
    if not args.no_append:
        with args.results.open("a") as f:
            f.write(head + table + ratios + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
