"""Held-out loss of model folders on one training run's fixed evaluation batches (the numbers in its log).

``dgls train`` evaluates on fixed held-out batches drawn from its run configuration (corpus, tokenizer, layout,
seed 1234). This script rebuilds exactly those batches from a run's ``run_config.json`` and scores any model
folder of the same tokenizer on them, so that a new checkpoint and the shipped one are compared on the same
examples (the gate for shipping a new checkpoint).

    python benchmarks/heldout_loss.py --run-dir /path/run model/checkpoints/dgls-tiny /path/run/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a dgls train run folder (its run_config.json)")
    ap.add_argument("models", nargs="+", type=Path, help="model folders to score")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from transformers import DiffusionGemmaForBlockDiffusion

    from dgls.model import train
    from dgls.model.data import load_manifest, read_source, split_files
    from dgls.model.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    cfg = train.TrainConfig(**json.loads((args.run_dir / "run_config.json").read_text()))
    tok = load_tokenizer(cfg.tokenizer)
    held = split_files(load_manifest(cfg.corpus))[1]
    batches = train.make_eval_batches(train.InfillExamples([read_source(f) for f in held], tok, cfg), tok, cfg)
    for folder in args.models:
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            str(folder), experts_implementation=train.EXPERTS_IMPLEMENTATION, dtype=torch.float32
        )
        ev = train.evaluate(model, batches, train.noise_low_id(tok), cfg.noise_t_min, torch.device("cpu"))
        print(json.dumps({"model": str(folder), **{k: round(v, 4) for k, v in ev.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
