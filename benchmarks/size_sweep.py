"""Choose dgls-tiny's size by measurement: CPU latency of each size, then equal-time training runs.

For each candidate width/depth:

1. **Latency** (no training needed: a step costs the same whatever the weights): a randomly initialised model
   of that size is saved as a checkpoint folder, loaded through ``load_model`` like the shipped one, and fills
   a 16- and a 32-slot middle after a 128-token prefix with a 32-token suffix for a fixed 8 steps; the table
   gives ms per denoising step (p50) and the projected request at 6 steps.
2. **Learning** (``--minutes M``): ``dgls train`` from scratch for M minutes on the same corpus, tokenizer and
   seed; the held-out middle loss at the end and tokens/s.

    python benchmarks/size_sweep.py --corpus /path/corpus --tokenizer model/checkpoints/dgls-tiny --minutes 7

Prints a Markdown table and appends it to RESULTS.md (``--no-append`` to only print).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ROOT, cpu_name, git_commit  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

SIZES = {  # name: (hidden, layers, intermediate, heads, kv_heads, head_dim)
    "192x4": (192, 4, 768, 3, 1, 64),
    "256x5": (256, 5, 1024, 4, 2, 64),
    "320x6": (320, 6, 1280, 5, 1, 64),
    "384x6": (384, 6, 1536, 6, 2, 64),
}


def size_args(name: str) -> list[str]:
    """``dgls train`` flags of a size."""
    h, L, inter, heads, kv, hd = SIZES[name]
    return [
        "--hidden",
        str(h),
        "--layers",
        str(L),
        "--intermediate",
        str(inter),
        "--heads",
        str(heads),
        "--kv-heads",
        str(kv),
        "--head-dim",
        str(hd),
    ]


def latency(name: str, tokenizer: str, threads: int) -> dict:
    """Per-step and per-request ms of a randomly initialised model of this size, through load_model."""
    import torch

    from dgls.model import train
    from dgls.model.infill import Infiller
    from dgls.model.loading import load_model
    from dgls.model.sampler import SamplerConfig
    from dgls.model.tokenizer import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(tokenizer)
    h, L, inter, heads, kv, hd = SIZES[name]
    cfg = train.TrainConfig(hidden=h, layers=L, intermediate=inter, heads=heads, kv_heads=kv, head_dim=hd)
    torch.manual_seed(0)
    model = train.DiffusionGemmaForBlockDiffusion(train.build_model_config(cfg, tok)).eval()
    with tempfile.TemporaryDirectory() as d:
        train.save_model_folder(model, tok, cfg, d)
        loaded = load_model(d, device="cpu")
        inf = Infiller(loaded)
        sampler = SamplerConfig.from_dict({"max_steps": 8, "entropy_bound": 0.0, "stability_threshold": 99})
        prefix = list(range(20, 20 + 127))
        suffix = list(range(300, 332))
        out = {"params_m": round(train.count_params(model) / 1e6, 2)}
        for n in (16, 32):
            steps, req = [], []
            for i in range(6):
                inf.prefix_cache = type(inf.prefix_cache)(loaded.model)
                r = inf.infill_ids(prefix[i:], suffix, lengths=[n], sampler=sampler, seed=i)
                if i:  # the first call warms up
                    steps += r.step_ms
                    req.append(r.ms)
            out[f"step_ms_{n}"] = round(statistics.median(steps), 2)
            out[f"req6_ms_{n}"] = round(6 * statistics.median(steps), 1)
    return out


def learn(name: str, corpus: str, tokenizer: str, minutes: float, threads: int, workdir: Path) -> dict:
    """Train this size from scratch for ``minutes``; held-out losses at the end and throughput."""
    run = workdir / f"sweep-{name}"
    cmd = [
        sys.executable,
        "-m",
        "dgls.model.train",
        "--corpus",
        corpus,
        "--tokenizer",
        tokenizer,
        "--run-dir",
        str(run),
        "--max-minutes",
        str(minutes),
        "--lr-by-time",
        "--steps",
        "100000",
        "--threads",
        str(threads),
        "--seed",
        "0",
        "--eval-every",
        "100000",
        "--save-every",
        "100000",
        "--log-every",
        "20",
        *size_args(name),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    final = [r for r in recs if "eval_ce" in r][-1]
    steps = [r for r in recs if "step_s" in r]
    tokens = sum(r["tokens"] for r in steps)
    return {
        "steps": final["step"],
        "tokens_m": round(tokens / 1e6, 2),
        "tok_s": round(tokens / sum(r["step_s"] for r in steps)),
        "eval_ce": round(final["eval_ce"], 3),
        "eval_middle": round(final["eval_ce_middle"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--learn-sizes", default="192x4,256x5,384x6", help="sizes to train (a subset of --sizes)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", default=str(ROOT / "model" / "checkpoints" / DEFAULT_MODEL))
    ap.add_argument("--minutes", type=float, default=0.0, help="training minutes per size (0: latency only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dgls-sweep")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name in args.sizes.split(","):
        row = {"size": name, **latency(name, args.tokenizer, args.threads)}
        if args.minutes > 0 and name in args.learn_sizes.split(","):
            row.update(learn(name, args.corpus, args.tokenizer, args.minutes, args.threads, args.workdir))
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = [
        "size",
        "params_m",
        "step_ms_16",
        "step_ms_32",
        "req6_ms_16",
        "req6_ms_32",
        "tokens_m",
        "tok_s",
        "eval_ce",
        "eval_middle",
    ]
    head = (
        f"\n### Size sweep ({dt.date.today()}, commit {git_commit()}, {cpu_name()}, {args.threads} threads, "
        f"Python {platform.python_version()}; {args.minutes:g} training minutes per size, same corpus, "
        f"tokenizer and seed)\n\n"
    )
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    table += "".join("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |\n" for r in rows)
    print(head + table)
    if not args.no_append:
        with args.results.open("a") as f:
            f.write(head + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
