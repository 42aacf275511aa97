"""Train the embedded ``dgls-tiny`` model: uniform-noise block diffusion on infill-shaped examples.

transformers ships no loss for ``DiffusionGemmaForBlockDiffusion``; this module writes one. Per example:

* **Layout** (the sampler uses exactly this at inference): the encoder reads ``[<bos>] + prefix`` at
  positions ``0..P-1`` into a ``DynamicCache``; the decoder canvas of ``C = N + S`` slots at positions
  ``P..P+C-1`` is ``[middle (n) | <|fim_pad|> x (N - n) | suffix (S)]``. The suffix is pinned (clean, no loss,
  one-hot self-conditioning); middle *and filler* slots are targets, so the model learns to emit the filler
  where the middle ends. ``S = 0`` (no suffix) and ``n = N`` (no filler) both occur.
* **Middles** look like editor requests: the rest of a line, a whole line, a few lines, the body of a block,
  plus random spans, cut at line boundaries often. Prefix, middle and suffix are tokenized separately, as the
  sampler does with the text before and after the cursor.
* **Noise**: ``t ~ U(noise_t_min, 1)`` per example; every free slot is replaced with prob. ``t`` by a token
  drawn uniformly from ``[noise_low, V)`` (``noise_low`` = first id after the special tokens).
* **Loss**: cross-entropy against the clean canvas on all free slots (under uniform noise the model cannot
  tell corrupt slots from clean ones, so every free slot is a target).
* **Self-conditioning**: a no-grad pass gives raw logits; the graded pass gets them as
  ``self_conditioning_logits`` (pinned suffix slots get a one-hot signal), enabled per example with
  probability ``sc_prob`` via ``self_conditioning_mask``.
* **Encoder next-token loss** (``ar_weight``): the encoder is the same transformer run causally over the
  prefix, so its last hidden state through the tied lm_head predicts the next prefix token; added with weight
  ``ar_weight``. It turns every prefix token into a target (the prefix is most of the compute and carried no
  loss before) and is the use transformers documents for ``encoder_last_hidden_state``.

Examples of one batch share the free length ``N`` (drawn per batch from ``canvas_lengths``); prefixes are
right-padded and canvases padded after the suffix, with a 2-D ``decoder_attention_mask`` and per-row
positions, which gives the same logits as running each example alone.

Run ``python -m dgls.model.train --help`` (or ``dgls train``).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DynamicCache

from .checkpoint import dgls_facts, set_generation_defaults, write_dgls_json
from .data import build_corpus, load_manifest, read_source, split_files
from .tokenizer import BOI, EOI, IMAGE, check_special_tokens, filler_token_id, load_tokenizer, train_tokenizer

# The smallest vision tower DiffusionGemma accepts (a tower is mandatory, even for a text-only model): 7k params.
# The one definition; the test fixtures and benchmarks/gpu_speed.py import it.
TINY_VISION = dict(
    model_type="gemma4_vision",
    hidden_size=16,
    intermediate_size=16,
    num_hidden_layers=1,
    num_attention_heads=1,
    num_key_value_heads=1,
    head_dim=16,
    position_embedding_size=16,
    patch_size=4,
)
EXPERTS_IMPLEMENTATION = "eager"  # the zero-width expert breaks the default grouped_mm; not saved in config.json

# Middle kinds and their sampling weights: what an editor asks for, plus random spans.
KIND_WEIGHTS = {
    "rest_of_line": 0.24,
    "line": 0.2,
    "lines": 0.16,
    "block": 0.1,
    "span": 0.15,
    "fill": 0.12,
    "empty": 0.03,
}


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``run_config.json`` next to the weights."""

    # data
    corpus: str = "runs/corpus"
    stdlib: str | None = None  # stdlib root override (tests); default: the running interpreter's
    site_packages: bool = False
    heldout_fraction: float = 0.09  # used when the corpus manifest is built here
    tokenizer: str | None = None  # existing tokenizer folder; default: train one into <run_dir>/tokenizer
    vocab_size: int = 8192
    # model
    hidden: int = 256
    layers: int = 7
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 1024
    sliding_window: int = 512
    # layout
    canvas_lengths: list[int] = field(default_factory=lambda: [16, 32, 64])
    max_prefix: int = 256  # tokens in the encoder, <bos> included
    min_prefix: int = 16  # lower end of the per-example prefix budget (a file start gives fewer)
    max_suffix: int = 64
    no_suffix_prob: float = 0.15
    # objective
    noise_t_min: float = 0.05
    sc_prob: float = 0.5
    ar_weight: float = 0.5  # next-token loss on the causal encoder pass over the prefix (shared weights); 0 = off
    # optimisation
    batch: int = 8
    steps: int = 1500
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_minutes: float | None = None
    stop_at: int | None = None  # end this session after this step (resume later); schedule still uses steps
    lr_by_time: bool = False  # cosine progress = max(step/steps, elapsed/max_minutes)
    # bookkeeping
    run_dir: str = "runs/dgls-tiny"
    out: str | None = None  # shippable folder (safetensors + tokenizer + configs); default <run_dir>/model
    eval_every: int = 250
    eval_batches: int = 12
    save_every: int = 250
    log_every: int = 10
    seed: int = 0
    languages: list[str] = field(default_factory=lambda: ["python"])  # what the corpus holds (LSP language ids)
    export_to: str | None = None  # --export-to FOLDER: write <out> there in --save-dtype and exit (export_model)
    threads: int = 2
    device: str = "auto"
    amp: str = "auto"  # "bf16" autocast, "off" (fp32), or "auto": bf16 where this device runs it faster
    save_dtype: str = "float32"  # dtype of the saved model folder's weights; "bfloat16" halves a shipped model
    max_shard_mb: int | None = None  # split the saved weights into safetensors shards of at most this size
    init_from: str | None = None  # warm start from a model folder (fresh optimizer) when there is no state to resume


# --------------------------------------------------------------------------------------------- model


def build_model_config(cfg: TrainConfig, tok) -> DiffusionGemmaConfig:
    """DiffusionGemma config for the tiny dense model, with special ids taken from the tokenizer.

    Dense through a single zero-width expert (``num_experts=1, top_k_experts=1, moe_intermediate_size=0``;
    the MoE branch is mandatory in 5.23.0), a 7k-param vision tower (mandatory too), ``global_head_dim`` set
    explicitly (else 512), last layer full attention, the others sliding.
    """
    layer_types = ["sliding_attention"] * (cfg.layers - 1) + ["full_attention"]
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    text = dict(
        vocab_size=len(tok),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        global_head_dim=cfg.head_dim,
        layer_types=layer_types,
        sliding_window=cfg.sliding_window,
        num_experts=1,
        top_k_experts=1,
        moe_intermediate_size=0,
        **ids,
    )
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=TINY_VISION,
        canvas_length=max(cfg.canvas_lengths),
        image_token_id=tok.convert_tokens_to_ids(IMAGE),
        boi_token_id=tok.convert_tokens_to_ids(BOI),
        eoi_token_id=tok.convert_tokens_to_ids(EOI),
        attn_implementation="sdpa",  # type: ignore[call-arg]  # PretrainedConfig takes these through **kwargs
        experts_implementation=EXPERTS_IMPLEMENTATION,
        **ids,
    )


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied encoder/decoder weights counted once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- data


@dataclass
class InfillExample:
    """Token ids of one training example; ``prefix`` excludes ``<bos>``."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    kind: str


@dataclass
class Batch:
    """Padded tensors of a batch of infill examples sharing the free length ``n_free``."""

    prefix: torch.Tensor  # (B, P) <bos> + prefix, right-padded
    prefix_mask: torch.Tensor  # (B, P) bool
    canvas: torch.Tensor  # (B, C) clean canvas: middle | filler | suffix | pad
    canvas_mask: torch.Tensor  # (B, C) bool, False on padding
    free: torch.Tensor  # (B, C) bool: middle + filler slots (targets)
    middle: torch.Tensor  # (B, C) bool: middle tokens only
    positions: torch.Tensor  # (B, C) decoder positions P_i .. P_i + C - 1
    n_free: int

    def to(self, device) -> Batch:
        """Copy of the batch on ``device``."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "n_free"}
        )


_WORD_CHAR = re.compile(r"\w")


class InfillExamples:
    """Draws infill examples from source texts: a file weighted by size, then a middle of some kind."""

    def __init__(self, texts: Sequence[str], tok, cfg: TrainConfig):
        self.texts = [t for t in texts if t.strip()]
        if not self.texts:
            raise ValueError("InfillExamples needs at least one non-empty text, found none")
        self.cum = []
        total = 0
        for t in self.texts:
            total += len(t)
            self.cum.append(total)
        self.enc = tok.backend_tokenizer
        self.cfg = cfg
        self._lines: dict[int, list[tuple[int, int]]] = {}
        self.kinds = list(KIND_WEIGHTS)
        self.weights = [KIND_WEIGHTS[k] for k in self.kinds]

    def lines(self, i: int) -> list[tuple[int, int]]:
        """``(start, end)`` char offsets of each line of text ``i`` (``end`` excludes the newline)."""
        if i not in self._lines:
            text, spans, start = self.texts[i], [], 0
            for m in re.finditer("\n", text):
                spans.append((start, m.start()))
                start = m.end()
            spans.append((start, len(text)))
            self._lines[i] = spans
        return self._lines[i]

    def _encode(self, s: str) -> list[int]:
        return self.enc.encode(s, add_special_tokens=False).ids if s else []

    def _span(self, rng: random.Random, i: int, kind: str, n_free: int) -> tuple[int, int] | None:
        text, lines = self.texts[i], self.lines(i)
        li = rng.randrange(len(lines))
        s, e = lines[li]
        indent = s + len(text[s:e]) - len(text[s:e].lstrip())
        if kind == "span":
            a = rng.randrange(len(text))
            return a, min(len(text), a + rng.randint(1, 4 * n_free))
        if kind == "empty":
            return e, e
        if indent >= e:  # blank line: nothing to complete on it
            return None
        if kind == "rest_of_line":
            a = rng.randrange(indent, e)
            if rng.random() < 0.5:  # snap back to a word start, where typing usually pauses
                while a > indent and _WORD_CHAR.match(text[a - 1]):
                    a -= 1
            return a, e
        a = indent if rng.random() < 0.75 else s
        if kind in ("line", "fill"):
            end = e
        elif kind == "lines":
            end = lines[min(len(lines) - 1, li + rng.randint(1, 7))][1]
        else:  # block: the indented body after a line ending with ':'
            if not text[s:e].rstrip().endswith(":"):
                return None
            depth = indent - s
            last = li
            for j in range(li + 1, len(lines)):
                js, je = lines[j]
                body = text[js:je]
                if body.strip() and len(body) - len(body.lstrip()) <= depth:
                    break
                if body.strip():
                    last = j
            if last == li:
                return None
            first = lines[li + 1][0]
            a = first + len(text[first : lines[li + 1][1]]) - len(text[first : lines[li + 1][1]].lstrip())
            end = lines[last][1]
        if end < len(text) and rng.random() < 0.25:
            end += 1  # take the newline too: the suffix then starts at the next line
        return a, end

    def sample(self, rng: random.Random, n_free: int) -> InfillExample:
        """One example whose middle has at most ``n_free`` tokens."""
        cfg = self.cfg
        kind = rng.choices(self.kinds, self.weights)[0]
        for _ in range(20):
            i = bisect.bisect_right(self.cum, rng.randrange(self.cum[-1]))
            text = self.texts[i]
            span = self._span(rng, i, kind, n_free)
            if span is None:
                continue
            a, b = span
            if kind == "fill":
                enc = self.enc.encode(text[a : a + 12 * n_free], add_special_tokens=False)
                middle = enc.ids[:n_free]
                if not middle:
                    continue
                b = a + enc.offsets[len(middle) - 1][1]
            else:
                middle = self._encode(text[a:b])
                if len(middle) > n_free:
                    continue
            break
        else:  # nothing fitted (tiny test corpora): an empty middle is always valid
            a = b = rng.randrange(len(text) + 1)
            middle, kind = [], "empty"
        p_budget = rng.randint(min(cfg.min_prefix, cfg.max_prefix), cfg.max_prefix) - 1
        if rng.random() < 0.3:
            p_budget = cfg.max_prefix - 1
        prefix = self._encode(text[max(0, a - 8 * p_budget) : a])[-p_budget:] if p_budget > 0 else []
        suffix: list[int] = []
        # No suffix (end of file, or none sent): only with editor-shaped middles, which end at a line end.
        if (kind == "span" or rng.random() >= cfg.no_suffix_prob) and cfg.max_suffix > 0:
            s_budget = cfg.max_suffix if rng.random() < 0.5 else rng.randint(1, cfg.max_suffix)
            suffix = self._encode(text[b : b + 8 * s_budget])[:s_budget]
        return InfillExample(prefix, middle, suffix, kind)


def collate(examples: Sequence[InfillExample], n_free: int, tok) -> Batch:
    """Pad examples into a :class:`Batch` (layout: ``[<bos>+prefix]`` | ``[middle|filler*|suffix|pad*]``)."""
    bos, pad, filler = tok.bos_token_id, tok.pad_token_id, filler_token_id(tok)
    B = len(examples)
    for ex in examples:
        if len(ex.middle) > n_free:
            raise ValueError(f"middle of {len(ex.middle)} tokens does not fit {n_free} free slots")
    P = 1 + max(len(ex.prefix) for ex in examples)
    C = n_free + max(len(ex.suffix) for ex in examples)
    prefix = torch.full((B, P), pad, dtype=torch.long)
    prefix_mask = torch.zeros(B, P, dtype=torch.bool)
    canvas = torch.full((B, C), pad, dtype=torch.long)
    canvas_mask = torch.zeros(B, C, dtype=torch.bool)
    middle = torch.zeros(B, C, dtype=torch.bool)
    positions = torch.zeros(B, C, dtype=torch.long)
    for r, ex in enumerate(examples):
        p = [bos] + ex.prefix
        prefix[r, : len(p)] = torch.tensor(p)
        prefix_mask[r, : len(p)] = True
        row = ex.middle + [filler] * (n_free - len(ex.middle)) + ex.suffix
        canvas[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        canvas_mask[r, : len(row)] = True
        middle[r, : len(ex.middle)] = True
        positions[r] = len(p) + torch.arange(C)
    free = torch.zeros(B, C, dtype=torch.bool)
    free[:, :n_free] = True
    return Batch(prefix, prefix_mask, canvas, canvas_mask, free, middle, positions, n_free)


# ---------------------------------------------------------------------------------------------- loss


def noise_low_id(tok) -> int:
    """First id that uniform noise may draw: one past the highest special-token id."""
    return max(tok.all_special_ids) + 1


def infill_loss(
    model: DiffusionGemmaForBlockDiffusion,
    batch: Batch,
    gen: torch.Generator,
    noise_low: int,
    noise_t_min: float,
    sc_prob: float,
    ar_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion cross-entropy on the free slots of a batch, plus ``ar_weight`` x the encoder's next-token loss.

    The encoder is the same transformer run causally over the prefix; its last hidden state through the tied
    lm_head (soft-capped as the model caps its logits) predicts the next prefix token. Every prefix token becomes
    a target at the cost of one extra vocabulary matmul, which teaches the shared weights the language far
    faster than the canvas slots alone. Returns ``(loss, stats)``.
    """
    dev = batch.canvas.device
    B, C = batch.canvas.shape
    P = batch.prefix.shape[1]
    V = model.config.get_text_config().vocab_size
    t = noise_t_min + (1 - noise_t_min) * torch.rand(B, 1, generator=gen, device=dev)
    corrupt = (torch.rand(B, C, generator=gen, device=dev) < t) & batch.free
    noise = torch.randint(noise_low, V, (B, C), generator=gen, device=dev)
    noisy = torch.where(corrupt, noise, batch.canvas)  # (B, C)

    # Encoder -> cache, with grad: the encoder shares all its weights with the decoder.
    # (record_function labels name the phases in a profile: benchmarks/train_speed.py; free when not profiling)
    phase = torch.profiler.record_function
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    with phase("train.encoder"):
        enc = model.model.encoder(
            input_ids=batch.prefix,
            attention_mask=batch.prefix_mask.long(),
            past_key_values=cache,
            position_ids=torch.arange(P, device=dev)[None].expand(B, P),
        )
    ce_ar = None
    if ar_weight > 0 and P > 1:
        with phase("train.encoder_lm_head"):
            cap = model.config.get_text_config().final_logit_softcapping
            ar_logits = model.lm_head(enc.last_hidden_state[:, :-1])  # (B, P-1, V)
            if cap:
                ar_logits = torch.tanh(ar_logits / cap) * cap
            ar_ce = F.cross_entropy(ar_logits.float().reshape(-1, V), batch.prefix[:, 1:].reshape(-1), reduction="none")
            ar_mask = batch.prefix_mask[:, 1:].reshape(-1).float()  # right-padded: target valid => source valid
            ce_ar = (ar_ce * ar_mask).sum() / ar_mask.sum().clamp(min=1)
    kw = dict(
        decoder_input_ids=noisy,
        past_key_values=cache,
        decoder_position_ids=batch.positions,
        decoder_attention_mask=torch.cat([batch.prefix_mask, batch.canvas_mask], dim=1),  # (B, P + C)
    )
    sc_logits = sc_mask = None
    if sc_prob > 0:
        with torch.no_grad(), phase("train.self_conditioning_pass"):
            sc_logits = model(**kw).logits  # (B, C, V) raw logits: the sampler feeds raw logits too
        pinned = batch.canvas_mask & ~batch.free
        onehot = torch.full_like(sc_logits, -1e4).scatter_(-1, batch.canvas.unsqueeze(-1), 1e4)
        sc_logits = torch.where(pinned[..., None], onehot, sc_logits)
        sc_mask = torch.rand(B, generator=gen, device=dev) < sc_prob
    with phase("train.decoder_pass"):
        logits = model(**kw, self_conditioning_logits=sc_logits, self_conditioning_mask=sc_mask).logits
        ce = F.cross_entropy(logits.float().reshape(-1, V), batch.canvas.reshape(-1), reduction="none").view(B, C)
    free = batch.free.float()
    loss = (ce * free).sum() / free.sum()
    diffusion_loss = loss
    if ce_ar is not None:
        loss = loss + ar_weight * ce_ar
    with torch.no_grad():
        mid = batch.middle.float()
        fill = (batch.free & ~batch.middle).float()
        stats = {
            "loss": diffusion_loss.item(),
            "ce_ar": ce_ar.item() if ce_ar is not None else float("nan"),
            "ce_middle": ((ce * mid).sum() / mid.sum().clamp(min=1)).item(),
            "ce_filler": ((ce * fill).sum() / fill.sum().clamp(min=1)).item(),
            "n_middle": mid.sum().item(),
            "n_free": free.sum().item(),
            "tokens": int(batch.prefix_mask.sum().item() + batch.canvas_mask.sum().item()),
        }
    return loss, stats


def make_eval_batches(examples: InfillExamples, tok, cfg: TrainConfig, seed: int = 1234) -> list[Batch]:
    """A fixed list of held-out batches (cycling the canvas lengths), identical for every evaluation."""
    rng = random.Random(seed)
    out = []
    for k in range(cfg.eval_batches):
        n = cfg.canvas_lengths[k % len(cfg.canvas_lengths)]
        out.append(collate([examples.sample(rng, n) for _ in range(cfg.batch)], n, tok))
    return out


@torch.no_grad()
def evaluate(model, batches: Sequence[Batch], noise_low: int, noise_t_min: float, device) -> dict[str, float]:
    """Held-out CE without self-conditioning under a fixed noise seed: all free slots, middle, filler."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(4321)
    tot: dict[str, float] = {"loss": 0.0, "mid": 0.0, "fill": 0.0, "n": 0.0, "n_mid": 0.0}
    for b in batches:
        _, s = infill_loss(model, b.to(device), gen, noise_low, noise_t_min, sc_prob=0.0)
        n_fill = s["n_free"] - s["n_middle"]
        tot["loss"] += s["loss"] * s["n_free"]
        tot["mid"] += s["ce_middle"] * s["n_middle"]
        tot["fill"] += s["ce_filler"] * n_fill
        tot["n"] += s["n_free"]
        tot["n_mid"] += s["n_middle"]
    model.train(was_training)
    n_fill = tot["n"] - tot["n_mid"]
    return {
        "eval_ce": tot["loss"] / tot["n"],
        "eval_ce_middle": tot["mid"] / max(tot["n_mid"], 1),
        "eval_ce_filler": tot["fill"] / max(n_fill, 1),
    }


# --------------------------------------------------------------------------------------------- saving


def save_model_folder(model, tok, cfg: TrainConfig, out: str | os.PathLike, summary: dict | None = None) -> Path:
    """Write the shippable folder: safetensors weights, config, generation config, tokenizer, run config.

    ``generation_config.json`` holds the special ids and the sampler defaults under DiffusionGemma's own keys
    (that class rejects any other key, which would break ``from_pretrained``); ``dgls.json`` holds the same
    defaults plus the layout facts the engine reads (filler id, noise range, canvas lengths, raw-logit SC).
    Sampler defaults tuned earlier in ``dgls.json`` are kept; other files (a model card) are left alone.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dgls = dgls_facts(
        out,
        sc_raw_logits=True,
        noise_low=noise_low_id(tok),
        filler_token_id=filler_token_id(tok),
        canvas_lengths=list(cfg.canvas_lengths),
        max_prefix_tokens=cfg.max_prefix,
        max_suffix_tokens=cfg.max_suffix,
        experts_implementation=EXPERTS_IMPLEMENTATION,
        languages=list(cfg.languages),
    )
    set_generation_defaults(model.generation_config, tok, dgls)
    if cfg.save_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"save_dtype must be float32 or bfloat16, found {cfg.save_dtype!r}")
    to_save = model if cfg.save_dtype == "float32" else copy.deepcopy(model).to(torch.bfloat16)
    for old_shard in out.glob("model*.safetensors*"):  # a shard count that changed must not leave stale files
        old_shard.unlink()
    shard = f"{cfg.max_shard_mb}MB" if cfg.max_shard_mb else "50GB"
    to_save.save_pretrained(str(out), safe_serialization=True, max_shard_size=shard)
    tok.save_pretrained(str(out))
    write_dgls_json(out, dgls)
    run = {"train_config": dataclasses.asdict(cfg), "summary": summary or {}}
    (out / "run_config.json").write_text(json.dumps(run, indent=1) + "\n")
    return out


def _save_state(path: Path, model, opt, step: int, rng: random.Random, gen, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "rng": rng.getstate(),
            "gen": gen.get_state(),
            "elapsed": elapsed,
        },
        tmp,
    )
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ main


def _warm_start(model, folder: Path) -> str | None:
    """Copy a model folder's weights into ``model`` (same shapes); returns an error message or None."""
    if not (folder / "model.safetensors").is_file():
        return f"--init-from expects a model folder with model.safetensors, found none in {folder}"
    src = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(folder), experts_implementation=EXPERTS_IMPLEMENTATION, dtype=torch.float32
    )
    mine, theirs = model.state_dict(), src.state_dict()
    bad = sorted(
        k for k in mine.keys() | theirs.keys() if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape
    )
    if bad:
        return f"--init-from {folder}: the weights do not fit this model's shape ({len(bad)} differ, e.g. {bad[0]})"
    model.load_state_dict(theirs)
    return None


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, bool]:
    """Map command-line flags (``--max-prefix``) onto a :class:`TrainConfig`; also return ``--resume``."""
    ap = argparse.ArgumentParser(prog="dgls train", description="Train the embedded dgls-tiny model on CPU or GPU.")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "canvas_lengths":
            ap.add_argument(
                flag,
                type=lambda s: [int(x) for x in s.split(",")],
                default=default,
                help="comma-separated free canvas lengths, e.g. 16,32,64",
            )
        elif f.name == "languages":
            ap.add_argument(
                flag,
                type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                default=default,
                help="comma-separated LSP language ids the corpus holds (written to dgls.json)",
            )
        else:
            kind = {"int": int, "float": float}.get(type(default).__name__, str)
            if f.name in ("max_minutes", "stop_at", "max_shard_mb"):
                kind = float if f.name == "max_minutes" else int
            ap.add_argument(flag, type=kind, default=default)
    ap.add_argument("--resume", action="store_true", help="continue from <run-dir>/train_state.pt")
    ns = vars(ap.parse_args(argv))
    resume = ns.pop("resume")
    return TrainConfig(**ns), resume


def bf16_pays_off(device: torch.device, size: int = 512) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device``: always on CUDA; on a CPU, measured once.

    CPUs with AMX or AVX-512-bf16 run bf16 several times faster than fp32; CPUs without them (AVX2 only)
    emulate it, about a hundred times slower, so a fixed choice would be wrong on one of the two.
    """
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False

    def rate(dtype: torch.dtype) -> float:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        t0 = time.perf_counter()
        a @ b
        return 1.0 / max(time.perf_counter() - t0, 1e-9)

    return rate(torch.bfloat16) > 1.2 * rate(torch.float32)


def autocast_for(cfg: TrainConfig, device: torch.device) -> tuple[contextlib.AbstractContextManager, str]:
    """The autocast context of a run (bf16 with fp32 master weights, or none) and the precision's name."""
    if cfg.amp not in ("auto", "bf16", "off"):
        raise ValueError(f"amp must be auto, bf16 or off, found {cfg.amp!r}")
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and bf16_pays_off(device))
    if use and device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16), "bf16-autocast"
    return contextlib.nullcontext(), "fp32"


def _lr_factor(cfg: TrainConfig, step: int, elapsed: float) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.lr_by_time and cfg.max_minutes:
        prog = max(prog, elapsed / (60 * cfg.max_minutes))
    prog = min(1.0, prog)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


def export_model(src: Path, dest: Path, save_dtype: str = "bfloat16") -> Path:
    """Ship a trained model folder: ``src``'s weights in ``save_dtype`` with its configs, tokenizer and eval curve.

    The training configuration comes from ``src/run_config.json``; sampler defaults already tuned in
    ``dest/dgls.json`` and any other file in ``dest`` (the model card) are kept.
    """
    run = json.loads((src / "run_config.json").read_text())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in run["train_config"].items() if k in fields})
    cfg = dataclasses.replace(cfg, save_dtype=save_dtype, export_to=None)
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(
        str(src), experts_implementation=EXPERTS_IMPLEMENTATION, dtype=torch.float32
    ).eval()
    save_model_folder(model, load_tokenizer(src), cfg, dest, run.get("summary"))
    if (src / "eval_log.jsonl").is_file():
        (dest / "eval_log.jsonl").write_text((src / "eval_log.jsonl").read_text())
    return dest


class _RunError(Exception):
    """A run cannot start as asked; main prints ``error: <message>`` and exits with 2."""


class _RunLog:
    """``log.jsonl`` of a run (every record), and the console (the lines worth reading)."""

    def __init__(self, path: Path):
        self.file = path.open("a")

    def __call__(self, rec: dict, line: str | None = None) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if line:
            print(line, flush=True)

    def close(self) -> None:
        """Close the log file."""
        self.file.close()


class _LossWindow:
    """Sums over the steps since the last console line: mean losses, tokens per second."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.loss = self.mid = self.fill = self.ar = self.t = 0.0
        self.n = self.tokens = self.canvas = 0

    def add(self, s: dict[str, float], dt: float) -> None:
        """One step's stats (from :func:`infill_loss`) and its seconds."""
        self.loss += s["loss"]
        self.mid += s["ce_middle"]
        self.fill += s["ce_filler"]
        self.ar += s["ce_ar"]
        self.n += 1
        self.tokens += int(s["tokens"])
        self.canvas += int(s["n_free"])
        self.t += dt

    def line(self, step: int, steps: int, lr: float, minutes: float) -> str:
        """The console line of the window."""
        n = self.n
        return (
            f"step {step}/{steps} loss {self.loss / n:.3f} middle {self.mid / n:.3f} "
            f"filler {self.fill / n:.3f} ar {self.ar / n:.3f} lr {lr:.2e} "
            f"tok/s {self.tokens / self.t:.0f} (free {self.canvas / self.t:.0f}) elapsed {minutes:.1f}m"
        )


def _load_corpus(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """Train and held-out source texts: from the corpus manifest, or a corpus built now."""
    manifest = Path(cfg.corpus) / "manifest.jsonl"
    if manifest.is_file():
        files = load_manifest(manifest)
    else:
        files = build_corpus(
            cfg.corpus, cfg.site_packages, cfg.heldout_fraction, stdlib=Path(cfg.stdlib) if cfg.stdlib else None
        )
    train_files, held_files = split_files(files)
    if not train_files or not held_files:
        raise _RunError(
            f"corpus {cfg.corpus} needs train and held-out files, found {len(train_files)} and {len(held_files)}"
        )
    return [read_source(f) for f in train_files], [read_source(f) for f in held_files]


def _tokenizer(cfg: TrainConfig, run_dir: Path, train_texts: Sequence[str]):
    """The run's tokenizer: the one in ``cfg.tokenizer`` (or the run folder), else one trained on the texts."""
    tok_dir = Path(cfg.tokenizer) if cfg.tokenizer else run_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        tok = load_tokenizer(tok_dir)
        check_special_tokens(tok)
    else:
        tok = train_tokenizer(train_texts, tok_dir, cfg.vocab_size)
    cfg.tokenizer = str(tok_dir)
    return tok


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def _restore(
    cfg: TrainConfig, resume: bool, state_path: Path, model, opt, rng: random.Random, gen, device: torch.device
) -> tuple[int, float]:
    """Resume from ``train_state.pt`` or warm-start from ``--init-from``; returns (step, elapsed seconds)."""
    if resume and not state_path.is_file() and not cfg.init_from:
        raise _RunError(f"--resume expects {state_path}, which does not exist (or give --init-from)")
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)  # tensors and plain data only, no code
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rng.setstate(st["rng"])
        gen.set_state(st["gen"])
        return st["step"], st["elapsed"]
    if cfg.init_from:
        err = _warm_start(model, Path(cfg.init_from))
        if err:
            raise _RunError(err)
    return 0, 0.0


def _train_step(
    model, opt, batch: Batch, gen, noise_low: int, cfg: TrainConfig, amp: contextlib.AbstractContextManager
) -> tuple[dict[str, float], torch.Tensor, float]:
    """One optimizer step on `batch`: (loss stats, gradient norm before clipping, seconds)."""
    ts = time.perf_counter()
    with amp:
        loss, s = infill_loss(model, batch, gen, noise_low, cfg.noise_t_min, cfg.sc_prob, cfg.ar_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return s, gnorm, time.perf_counter() - ts


def _eval_line(ev: dict[str, float]) -> str:
    return f"eval_ce {ev['eval_ce']:.3f} middle {ev['eval_ce_middle']:.3f} filler {ev['eval_ce_filler']:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Train (or resume) a run; returns a process exit code."""
    cfg, resume = parse_args(argv)
    if cfg.export_to:
        src = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "model"
        print(f"exported {src} to {export_model(src, Path(cfg.export_to), cfg.save_dtype)} ({cfg.save_dtype})")
        return 0
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = Path(cfg.out) if cfg.out else run_dir / "model"
    cfg.out = str(out)
    log = _RunLog(run_dir / "log.jsonl")
    try:
        return _run(cfg, resume, device, run_dir, out, log)
    except _RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        log.close()


@dataclass
class _Session:
    """What one training session works with, once set up."""

    cfg: TrainConfig
    device: torch.device
    run_dir: Path
    out: Path
    log: _RunLog
    tok: Any
    model: Any  # DiffusionGemmaForBlockDiffusion
    opt: torch.optim.Optimizer
    rng: random.Random
    gen: torch.Generator
    amp: contextlib.AbstractContextManager
    noise_low: int
    eval_batches: list[Batch]

    @property
    def state_path(self) -> Path:
        """Where the resumable state goes."""
        return self.run_dir / "train_state.pt"

    def evaluate(self) -> dict[str, float]:
        """Held-out CE of the model now (:func:`evaluate` under the run's autocast)."""
        with self.amp:
            return evaluate(self.model, self.eval_batches, self.noise_low, self.cfg.noise_t_min, self.device)

    def save(self, step: int, elapsed: float) -> None:
        """The resumable state (``train_state.pt``)."""
        _save_state(self.state_path, self.model, self.opt, step, self.rng, self.gen, elapsed)


def _run(cfg: TrainConfig, resume: bool, device: torch.device, run_dir: Path, out: Path, log: _RunLog) -> int:
    """The run itself: corpus, tokenizer, model, first evaluation, the steps, the shipped folder."""
    train_texts, held_texts = _load_corpus(cfg)
    tok = _tokenizer(cfg, run_dir, train_texts)
    model = DiffusionGemmaForBlockDiffusion(build_model_config(cfg, tok))
    model.to(device)  # type: ignore[arg-type]  # transformers types `to` through a decorator that loses it
    model.train()
    n_params = count_params(model)
    opt = _optimizer(model, cfg)
    rng = random.Random(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step, elapsed = _restore(cfg, resume, run_dir / "train_state.pt", model, opt, rng, gen, device)
    (run_dir / "run_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")

    train_examples = InfillExamples(train_texts, tok, cfg)
    eval_batches = make_eval_batches(InfillExamples(held_texts, tok, cfg), tok, cfg)
    amp, precision = autocast_for(cfg, device)
    run = _Session(cfg, device, run_dir, out, log, tok, model, opt, rng, gen, amp, noise_low_id(tok), eval_batches)
    log(
        {"precision": precision, "init_from": cfg.init_from if step == 0 else None},
        f"precision {precision} device {device} threads {torch.get_num_threads()}",
    )
    ev = run.evaluate()
    first_eval = ev if step == 0 else None
    log(
        {"step": step, **ev},
        f"step {step} params {n_params:,} train_files {len(train_texts)} "
        f"heldout_files {len(held_texts)} eval_ce {ev['eval_ce']:.3f} middle {ev['eval_ce_middle']:.3f}",
    )
    if first_eval:
        (run_dir / "eval_init.json").write_text(json.dumps(first_eval) + "\n")
    elif (run_dir / "eval_init.json").is_file():
        first_eval = json.loads((run_dir / "eval_init.json").read_text())

    t_start = time.perf_counter() - elapsed
    step, stop_reason = _train_loop(run, train_examples, step, t_start)
    elapsed = time.perf_counter() - t_start
    ev = run.evaluate()
    log({"step": step, **ev}, f"step {step} final {_eval_line(ev)} ({stop_reason}, {elapsed / 60:.1f} min)")
    run.save(step, elapsed)
    summary = {
        "params": n_params,
        "steps": step,
        "stop_reason": stop_reason,
        "train_minutes": round(elapsed / 60, 2),
        "device": str(device),
        "threads": cfg.threads,
        "precision": precision,
        "train_files": len(train_texts),
        "heldout_files": len(held_texts),
        "eval_init": first_eval,
        "eval_final": ev,
        "torch": torch.__version__,
    }
    save_model_folder(model.eval(), tok, cfg, out, summary)
    with (run_dir / "log.jsonl").open() as f:  # the eval curve travels with the weights
        evals = [line for line in f if '"eval_ce"' in line]
    (out / "eval_log.jsonl").write_text("".join(evals))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


def _train_loop(run: _Session, examples: InfillExamples, step: int, t_start: float) -> tuple[int, str]:
    """Optimizer steps until ``cfg.steps``, ``max_minutes`` or ``stop_at``; logs, evaluates and saves on the way.

    Returns the step reached and why the loop stopped.
    """
    cfg, log = run.cfg, run.log
    window = _LossWindow()
    while step < cfg.steps:
        elapsed = time.perf_counter() - t_start
        if cfg.max_minutes is not None and elapsed > 60 * cfg.max_minutes:
            return step, "max_minutes"
        if cfg.stop_at is not None and step >= cfg.stop_at:
            return step, "stop_at"
        n_free = run.rng.choice(cfg.canvas_lengths)
        batch = collate([examples.sample(run.rng, n_free) for _ in range(cfg.batch)], n_free, run.tok).to(run.device)
        for g in run.opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(cfg, step, elapsed)
        s, gnorm, dt = _train_step(run.model, run.opt, batch, run.gen, run.noise_low, cfg, run.amp)
        step += 1
        window.add(s, dt)
        rec = {
            "step": step,
            "lr": run.opt.param_groups[0]["lr"],
            "gnorm": gnorm.item(),
            "n_free": n_free,
            "step_s": dt,
            **s,
        }
        if step % cfg.log_every == 0:
            line = window.line(step, cfg.steps, rec["lr"], (time.perf_counter() - t_start) / 60)
            window.reset()
            log(rec, line)
        else:
            log(rec)
        if step % cfg.eval_every == 0 and step < cfg.steps:
            ev = run.evaluate()
            log({"step": step, **ev}, f"step {step} {_eval_line(ev)}")
        if step % cfg.save_every == 0:
            run.save(step, time.perf_counter() - t_start)
            save_model_folder(run.model, run.tok, cfg, run.out, {"step": step, "partial": True})
    return step, "steps"


if __name__ == "__main__":
    sys.exit(main())
