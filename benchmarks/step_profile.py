"""Where the time of one infill request goes: the encoder, each decoder part and each sampler part, per step.

One request is ``Infiller.infill_ids`` on one canvas row (B=1) of 16, 32 or 64 free slots with a pinned 32-token
suffix, after a prefix of 256, 1k or 4k tokens, fixed seed, the prefix cache emptied first (so the encoder runs:
a miss). The prefix and suffix are cut, deterministically, from this checkout's own sources (dgls/*.py then
model/*.py, concatenated): the first N tokens, then the 32 after them.

The time is attributed without touching the product code: for the duration of a request the functions that do
each part are replaced by timed wrappers (module attributes, class attributes, forward hooks on the reference
path's modules) that add ``time.perf_counter()`` deltas to a category. A call inside a timed leaf (attention inside
the encoder, a softmax inside the entropy) counts for that leaf; a container (the decoder pass, the sampler's draw)
counts only what none of its timed callees does. CPU ops are synchronous, so wall time is where the work is.

- encoder: ``PrefixCache._encode`` (and ``backend.encode``, called by name for further blocks), per request;
- attention, mlp (MoE included), lm_head, self_cond (self-conditioning: its MLP, and on the fast path the soft
  embedding): the fast path's ``_attention``, ``_feed_forward``, ``_Weights.head``, ``_self_conditioned``; on the
  reference path, hooks on the decoder's modules (:func:`reference_modules`; the final norm counts as lm_head);
- decoder other: the rest of a decoder pass (the fast path's per-canvas buffers, built on the first pass, and its
  final norm; on the reference path transformers' masks and rotary tables, and the soft-embedding matmul and the
  soft cap, which are no modules);
- noise (``denoiser.noise``), stats (``sampler.entropy``, ``sampler.logp_of_argmax`` and the rest of
  ``sampler.draw_accepted``: the argmax, laying slots out), acceptance (``sampler.accept_mask``), sampling
  (``sampler.sample_rows``; before it existed, ``torch.multinomial`` and the softmax the draw computed for it),
  renoise (``Canvas.renoise``), stop (``sampler._StopRule.__call__``);
- overhead: the request's wall time minus all of the above (the denoising loop's own tensor work, Python, dispatch).

The wrappers cost time themselves (most on the reference path, whose hooks fire per module); each cell also runs
the request unprofiled, interleaved with the profiled runs, and reports that as ``bare ms``; ``others`` is the CPU
other processes used during the cell (on a 2-core machine, 2 torch threads slow down many times over when anything
else runs: rerun a cell that shows more than a little). The script tolerates older checkouts (no fast path, no
``Infiller(fast=...)``, no ``sample_rows``) by looking for each of them.

    python benchmarks/step_profile.py [--path fast|reference] [--repeats 5] [--threads 2] [--json] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import cpu_name, git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUFFIX_TOKENS = 32
# ms per step, in the table's order; the encoder (ms per request) and overhead are columns of their own
STEP_PARTS = (
    "attention",
    "mlp",
    "lm_head",
    "self_cond",
    "decoder_other",
    "noise",
    "stats",
    "acceptance",
    "sampling",
    "renoise",
    "stop",
)
PARTS = ("encoder", *STEP_PARTS)


@dataclass
class _Frame:
    category: str | None  # None: a call inside a leaf, which the leaf counts
    leaf: bool
    start: float = 0.0
    children: float = 0.0  # time of timed calls made from this one


@dataclass
class Profile:
    """Wall time per category from nested timed calls: a leaf counts everything it calls, a container only itself."""

    seconds: dict[str, float] = field(default_factory=dict)
    stack: list[_Frame] = field(default_factory=list)

    def enter(self, category: str, leaf: bool = True) -> None:
        """A timed call starts."""
        if self.stack and self.stack[-1].leaf:
            self.stack.append(_Frame(None, True))
        else:
            self.stack.append(_Frame(category, leaf, time.perf_counter()))

    def exit(self) -> None:
        """The innermost timed call ends."""
        frame = self.stack.pop()
        if frame.category is None:
            return
        elapsed = time.perf_counter() - frame.start
        self.seconds[frame.category] = self.seconds.get(frame.category, 0.0) + elapsed - frame.children
        if self.stack:
            self.stack[-1].children += elapsed

    def directly_in(self, category: str) -> bool:
        """Whether the innermost timed call is a container of `category` (so a call made now is its own)."""
        return bool(self.stack) and not self.stack[-1].leaf and self.stack[-1].category == category

    def timed(self, category: str, fn: Callable, leaf: bool = True, only_in: str | None = None) -> Callable:
        """`fn` with its time added to `category`; with `only_in`, only when called directly from that container."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if only_in is not None and not self.directly_in(only_in):
                return fn(*args, **kwargs)
            self.enter(category, leaf)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()

        return wrapper


def reference_modules(model) -> Iterator[tuple[torch.nn.Module, str]]:
    """The reference path's decoder modules and the category each one's forward counts for."""
    dec = model.model.decoder
    for layer in dec.layers:
        for name in ("input_layernorm", "self_attn", "post_attention_layernorm"):
            yield getattr(layer, name), "attention"
        for name in (
            "pre_feedforward_layernorm",
            "mlp",
            "post_feedforward_layernorm_1",
            "pre_feedforward_layernorm_2",
            "router",
            "experts",
            "post_feedforward_layernorm_2",
            "post_feedforward_layernorm",
        ):
            if getattr(layer, name, None) is not None:
                yield getattr(layer, name), "mlp"
    yield dec.self_conditioning, "self_cond"
    yield dec.norm, "lm_head"
    yield model.lm_head, "lm_head"


def has_fast_path() -> bool:
    """Whether the checkout under test has the fast decoder path (55466a3 and later)."""
    return importlib.util.find_spec("dgls.model.fastpath") is not None


@contextlib.contextmanager
def instrumented(prof: Profile, model, path: str) -> Iterator[None]:
    """Timed wrappers (and, on the reference path, forward hooks) in place for the duration of the block."""
    from dgls.model import backend, canvas, infill, sampler

    with contextlib.ExitStack() as stack:

        def wrap(owner: Any, name: str, category: str, leaf: bool = True, only_in: str | None = None) -> None:
            timed = prof.timed(category, getattr(owner, name), leaf, only_in)
            stack.enter_context(mock.patch.object(owner, name, timed))

        wrap(backend.PrefixCache, "_encode", "encoder")
        wrap(backend, "encode", "encoder")
        if hasattr(infill, "encode"):
            wrap(infill, "encode", "encoder")
        wrap(backend.DiffusionGemmaDenoiser, "noise", "noise")
        wrap(canvas.Canvas, "renoise", "renoise")
        wrap(sampler._StopRule, "__call__", "stop")
        wrap(sampler, "draw_accepted", "stats", leaf=False)  # the argmax and the glue around its timed callees
        wrap(sampler, "entropy", "stats")
        wrap(sampler, "logp_of_argmax", "stats")
        wrap(sampler, "accept_mask", "acceptance")
        if hasattr(sampler, "sample_rows"):
            wrap(sampler, "sample_rows", "sampling")
        else:  # before the latency work: a softmax over the accepted rows, then torch.multinomial
            wrap(torch, "multinomial", "sampling")
            wrap(torch, "softmax", "sampling", only_in="stats")
        if path == "fast":
            from dgls.model import fastpath

            wrap(fastpath.FastDenoiser, "free_logits", "decoder_other", leaf=False)
            wrap(fastpath.FastDenoiser, "__call__", "decoder_other", leaf=False)
            wrap(fastpath, "_attention", "attention")
            wrap(fastpath, "_feed_forward", "mlp")
            wrap(fastpath, "_self_conditioned", "self_cond")
            wrap(fastpath._Weights, "head", "lm_head")
        else:
            wrap(backend.DiffusionGemmaDenoiser, "__call__", "decoder_other", leaf=False)
            for module, category in reference_modules(model):
                pre = module.register_forward_pre_hook(lambda m, a, c=category: prof.enter(c))
                post = module.register_forward_hook(lambda m, a, out: prof.exit())
                stack.callback(pre.remove)
                stack.callback(post.remove)
        yield


def make_infiller(loaded, path: str):
    """An Infiller on `path`; a checkout without the fast path has only the reference one."""
    from dgls.model.infill import Infiller

    takes_fast = "fast" in inspect.signature(Infiller.__init__).parameters
    if path == "fast":
        if not (takes_fast and has_fast_path()):
            raise SystemExit("this checkout has no fast decoder path: use --path reference")
        return Infiller(loaded, fast=True)
    return Infiller(loaded, fast=False) if takes_fast else Infiller(loaded)


def source_ids(tokenizer, n: int) -> list[int]:
    """The first `n` tokens of dgls/*.py then model/*.py of this checkout, concatenated (deterministic)."""
    files = sorted((ROOT / "dgls").glob("*.py")) + sorted((ROOT / "model").glob("*.py"))
    text = "".join(p.read_text(encoding="utf-8") for p in files)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) < n:
        raise SystemExit(f"the sources hold {len(ids)} tokens, {n} needed")
    return ids[:n]


def run_request(infiller, prefix: list[int], suffix: list[int], n: int, prof: Profile | None, path: str) -> dict:
    """One request from an empty prefix cache: total ms, NFE and, when profiled, ms per category."""
    infiller.prefix_cache.clear()
    gc.collect()
    cfg = infiller.spec.sampler
    with instrumented(prof, infiller.model, path) if prof is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        res = infiller.infill_ids(prefix, suffix, lengths=(n,), seed=0, sampler=cfg)
        total = time.perf_counter() - t0
    out = {"total_ms": total * 1e3, "nfe": res.nfe}
    if prof is not None:
        assert not prof.stack, f"unbalanced timers: {prof.stack}"
        out.update({k: prof.seconds.get(k, 0.0) * 1e3 for k in PARTS})
        out["overhead"] = out["total_ms"] - sum(out[k] for k in PARTS)
    return out


def per_step(run: dict, bare: dict) -> dict:
    """A profiled run as the table reads it: the encoder per request, every other part per decoder pass."""
    nfe = run["nfe"]
    row = {
        "total_ms": run["total_ms"],
        "bare_ms": bare["total_ms"],
        "nfe": nfe,
        "ms_per_step": (run["total_ms"] - run["encoder"]) / nfe,
        "encoder": run["encoder"],
    }
    row.update({k: run[k] / nfe for k in (*STEP_PARTS, "overhead")})
    return row


def busy_elsewhere() -> tuple[float, float]:
    """(wall seconds, CPU seconds every other process has used): the clock a cell's contention is read from.

    From /proc/stat (all CPUs' busy time) minus this process's own CPU time; (wall, 0) where there is no /proc.
    """
    wall, own = time.perf_counter(), sum(os.times()[:2])
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return wall, 0.0
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    return wall, busy - own


def profile_cell(infiller, ids: list[int], n_prefix: int, n_free: int, repeats: int, path: str) -> dict:
    """Median over `repeats` profiled requests (each after an unprofiled one) of one prefix x canvas cell.

    ``others``: the CPUs other processes kept busy meanwhile (0.5: half a core), to tell a quiet cell from one
    that shared the machine.
    """
    prefix, suffix = ids[:n_prefix], ids[n_prefix : n_prefix + SUFFIX_TOKENS]
    wall, elsewhere = busy_elsewhere()
    run_request(infiller, prefix, suffix, n_free, None, path)  # warm-up
    rows = []
    for _ in range(repeats):
        bare = run_request(infiller, prefix, suffix, n_free, None, path)
        rows.append(per_step(run_request(infiller, prefix, suffix, n_free, Profile(), path), bare))
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    wall_end, elsewhere_end = busy_elsewhere()
    others = max(0.0, (elsewhere_end - elsewhere) / (wall_end - wall))
    return {"prefix": n_prefix, "canvas": n_free, "others": others, "repeats": rows, "median": median}


def profiled_commit() -> str:
    """The commit of the dgls package under test (this checkout's, or the one it was imported from)."""
    import dgls.model

    root = Path(dgls.model.__file__).resolve().parents[1]
    if root == ROOT:
        return git_commit()
    run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True)
    commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip() or "unknown"
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return commit + (" (uncommitted changes)" if dirty else "")


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces the measurement (no output options, no local paths)."""
    return (
        f"python benchmarks/step_profile.py --path {args.path} --model {args.model} --threads {args.threads} "
        f"--repeats {args.repeats} --prefixes {args.prefixes} --canvases {args.canvases}"
        + (f" --repeats-4k {args.repeats_4k}" if args.repeats_4k else "")
    )


def machine(args: argparse.Namespace, load_before: tuple[float, ...]) -> dict:
    """Where, with what and on which code this ran."""
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),  # the `dgls` command sets PASSIVE
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "commit": profiled_commit(),
        "script_commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "command": command(args),
        "path": args.path,
        "model": args.model,
    }


NOTE = (
    "One request = `Infiller.infill_ids`, B=1, fixed seed, prefix cache emptied (encoder: a miss); each figure the "
    "median over the repeats (so a row need not add up exactly). total / bare ms: the request with and without "
    "the timers; ms/step: (total - encoder) / NFE; encoder: ms per request; every other column: ms per decoder "
    "pass (NFE). {parts} stats: entropy, argmax, log p(argmax) and laying slots out; sampling: {sampling}; "
    "overhead: total minus every column (the loop's own tensor work, Python, dispatch, the request's set-up); "
    "others: CPUs other processes kept busy during the cell (0.5 = half a core; above ~0.2 the cell shared the "
    "machine and its times are not clean)."
)
# what the decoder columns hold on each path (the two split a pass at different places)
DECODER_PARTS = {
    "fast": "attention and MLP: the halves of each layer, norms and residuals included; lm_head: the lm_head matmul "
    "and the soft cap, over the free slots; self-cond: the canvas embedding, the soft embedding (over the free "
    "slots) and its MLP; decoder other: per-canvas buffers built on the first pass, the final norm, the layer "
    "scalars.",
    "reference": "attention and MLP: the layers' attention and feed-forward modules and their norms; lm_head: the "
    "final norm and the lm_head, over every slot; self-cond: the self-conditioning MLP; decoder other: the rest of "
    "transformers' forward (the canvas embedding, the soft-embedding matmul and the soft cap, which are no modules, "
    "masks, rotary tables, residual adds) and the hooks' own cost.",
}


def markdown(info: dict, cells: list[dict], sampling: str, subsection: str | None) -> str:
    """The results section: header, note and one row per prefix x canvas."""
    title = subsection or f"Per-step profile of one request, {info['path']} path ({info['date']})"
    level = "###" if subsection else "##"
    load = "/".join(f"{x:.2f}" for x in info["load_before"]), "/".join(f"{x:.2f}" for x in info["load_after"])
    script = "" if info["script_commit"] == info["commit"] else f" (this script: commit {info['script_commit']})"
    lines = [
        f"{level} {title}\n",
        f"- machine: {info['cpu']}, {info['cores']} CPUs visible, {info['threads']} torch threads (OMP_WAIT_POLICY "
        f"{info['omp_wait_policy']}), CPU; load average "
        f"(1/5/15 min) {load[0]} before, {load[1]} after",
        f"- versions: Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}",
        f"- code profiled: commit {info['commit']}{script}; model `{info['model']}`; {info['path']} decoder path; "
        f"{info['date']}",
        f"- command: `{info['command']}`\n",
        NOTE.format(parts=DECODER_PARTS[info["path"]], sampling=sampling) + "\n",
        "| prefix | canvas | total ms | bare ms | NFE | ms/step | encoder ms | attention | MLP | lm_head | self-cond "
        "| decoder other | noise | stats | acceptance | sampling | renoise | stop | overhead | others |",
        "|" + "---|" * 20,
    ]
    for cell in cells:
        m = cell["median"]
        parts = " | ".join(f"{m[k]:.2f}" for k in (*STEP_PARTS, "overhead"))
        lines.append(
            f"| {cell['prefix']} | {cell['canvas']} | {m['total_ms']:.1f} | {m['bare_ms']:.1f} | {m['nfe']:.0f} "
            f"| {m['ms_per_step']:.2f} | {m['encoder']:.1f} | {parts} | {cell['others']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dgls-tiny", help="checkpoint folder or embedded model name")
    p.add_argument("--path", choices=("fast", "reference"), default="fast", help="decoder path to profile")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="profiled requests per cell (median reported)")
    p.add_argument("--repeats-4k", type=int, default=0, help="repeats for prefixes of 4096 tokens or more (0: same)")
    p.add_argument("--prefixes", default="256,1024,4096", help="prefix lengths in tokens")
    p.add_argument("--canvases", default="16,32,64", help="free slots per canvas")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--write", action="store_true", help="append the table to --results")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    p.add_argument("--subsection", help="write the section as '### SUBSECTION' (under a heading written by hand)")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from dgls.model import sampler
    from dgls.model.loading import load_model

    loaded = load_model(args.model, device="cpu")
    infiller = make_infiller(loaded, args.path)
    prefixes = [int(x) for x in args.prefixes.split(",")]
    ids = source_ids(loaded.tokenizer, max(prefixes) + SUFFIX_TOKENS)
    cells = []
    for n_prefix in prefixes:
        repeats = args.repeats_4k if args.repeats_4k and n_prefix >= 4096 else args.repeats
        for n_free in (int(x) for x in args.canvases.split(",")):
            cells.append(profile_cell(infiller, ids, n_prefix, n_free, repeats, args.path))
            cell = cells[-1]
            print(
                json.dumps({"prefix": n_prefix, "canvas": n_free, "others": cell["others"], **cell["median"]}),
                file=sys.stderr,
            )
    info = machine(args, load_before)
    sampling = "`sample_rows`" if hasattr(sampler, "sample_rows") else "`torch.multinomial` and its softmax"
    text = markdown(info, cells, sampling, args.subsection)
    print(json.dumps({"machine": info, "cells": cells}, indent=1) if args.json else text)
    if args.write:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
