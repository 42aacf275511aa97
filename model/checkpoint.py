"""The checkpoint folder format: what dgls writes (model/train.py) and reads (model/loading.py) besides weights.

A checkpoint is a folder holding a ``DiffusionGemmaForBlockDiffusion`` ``config.json``, its weights as
``*.safetensors`` (one file or an index of shards), a tokenizer loadable by ``AutoTokenizer``, optionally a
``generation_config.json`` with the sampler defaults under DiffusionGemma's own keys (``max_denoising_steps``,
``t_min``, ``t_max``, ``stability_threshold``, ``confidence_threshold``, ``sampler_config.entropy_bound``; that
class rejects any other key, so :data:`GENERATION_CONFIG_KEYS` is all it may hold) and optionally a
``dgls.json`` with the sampler defaults and the layout facts the model was trained with::

    {"max_steps": 32, "entropy_bound": 0.1, "t_max": 0.8, "t_min": 0.4, "stability_threshold": 1,
     "confidence_threshold": 0.005, "filler_token_id": 4, "noise_low": 9, "canvas_lengths": [16, 32, 64],
     "sc_raw_logits": true, "max_prefix_tokens": 256, "max_suffix_tokens": 64,
     "experts_implementation": "eager", "languages": ["python"],
     "automatic_max_steps": 2, "automatic_canvas": 16, "automatic_suffix_tokens": 16}

Readers take a sampler default from ``dgls.json`` first, then from ``generation_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgls.model.sampler import SamplerConfig

DGLS_JSON = "dgls.json"  # layout facts and sampler defaults the engine reads
GENERATION_CONFIG_JSON = "generation_config.json"

# Sampler defaults a trained folder gets in dgls.json (and generation_config.json's own keys);
# tuned on the held-out split (see the model card).
SAMPLER_DEFAULTS = {
    "max_steps": 32,
    "entropy_bound": 0.1,
    "t_max": 0.8,
    "t_min": 0.4,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}

# The keys DiffusionGemma's generation config accepts (plus those transformers itself writes).
GENERATION_CONFIG_KEYS = frozenset(
    {
        "max_denoising_steps",
        "sampler_config",
        "t_min",
        "t_max",
        "stability_threshold",
        "confidence_threshold",
        "bos_token_id",
        "pad_token_id",
        "eos_token_id",
        "transformers_version",
        "_from_model_config",
        "_commit_hash",
        "return_dict_in_generate",
        "max_new_tokens",
        "max_length",
        "cache_implementation",
        "cache_config",
        "disable_compile",
    }
)


class ModelLoadError(Exception):
    """A checkpoint could not be found or loaded; the message names the path and what was expected."""


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs to know about a checkpoint besides its weights."""

    bos_id: int
    eos_id: int | None
    pad_id: int | None
    filler_id: int | None  # token the model emits for unused middle slots (None: the model has none)
    noise_low: int  # uniform noise is drawn from [noise_low, vocab_size)
    vocab_size: int
    canvas_lengths: tuple[int, ...]  # middle lengths the model was trained on, ascending (else its canvas_length)
    max_prefix_tokens: int | None = None  # longest prefix / suffix windows the model was trained on
    max_suffix_tokens: int | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # languages the model was trained on (dgls.json "languages", LSP language ids); None: not declared
    languages: tuple[str, ...] | None = None
    # the budget of an Automatic trigger (ghost text while typing), tuned for exact match per millisecond:
    # dgls.json "automatic_max_steps", "automatic_canvas" and "automatic_suffix_tokens"; None: no cap
    automatic_steps: int | None = None
    automatic_canvas: int | None = None
    automatic_suffix: int | None = None


# ---------------------------------------------------------------------------------------------- writing


def dgls_facts(out: Path, **layout: Any) -> dict[str, Any]:
    """The ``dgls.json`` content for folder `out`: sampler defaults, then the `layout` facts.

    The sampler defaults are :data:`SAMPLER_DEFAULTS`, overridden by those already tuned in `out`'s ``dgls.json``;
    `layout` holds the facts the engine reads (filler id, noise range, canvas lengths, raw-logit SC...).
    """
    old = json.loads((out / DGLS_JSON).read_text()) if (out / DGLS_JSON).is_file() else {}
    return {**SAMPLER_DEFAULTS, **{k: v for k, v in old.items() if k in SAMPLER_DEFAULTS}, **layout}


def write_dgls_json(out: Path, facts: dict[str, Any]) -> None:
    """Write `facts` (from :func:`dgls_facts`) as ``out/dgls.json``."""
    (out / DGLS_JSON).write_text(json.dumps(facts, indent=1) + "\n")


def set_generation_defaults(gc, tok, dgls: dict) -> None:
    """Copy special ids and sampler defaults onto a DiffusionGemma generation config, under its own keys."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    gc.max_denoising_steps, gc.t_max, gc.t_min = dgls["max_steps"], dgls["t_max"], dgls["t_min"]
    gc.stability_threshold, gc.confidence_threshold = dgls["stability_threshold"], dgls["confidence_threshold"]
    gc.sampler_config = EntropyBoundSamplerConfig(entropy_bound=float(dgls["entropy_bound"]))


# ---------------------------------------------------------------------------------------------- reading


def read_json(file: Path) -> dict[str, Any]:
    """A JSON object from `file` ({} when it does not exist); anything else raises ModelLoadError."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"corrupt {file.name} at {file}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"corrupt {file.name} at {file}: expected a JSON object")
    return data


def check_generation_config(path: Path) -> None:
    """Refuse a ``generation_config.json`` with keys DiffusionGemma's generation config would reject."""
    unknown = sorted(set(read_json(path / GENERATION_CONFIG_JSON)) - GENERATION_CONFIG_KEYS)
    if unknown:
        raise ModelLoadError(
            f"{path / GENERATION_CONFIG_JSON} has keys DiffusionGemma's generation config "
            f"rejects: {unknown}; dgls layout facts belong in {DGLS_JSON}"
        )


def read_spec(path: Path, config: dict[str, Any], tokenizer: Any) -> ModelSpec:
    """Collect special ids, noise range, canvas lengths and sampler defaults from the checkpoint."""
    text_cfg = config.get("text_config") or {}
    vocab = int(text_cfg.get("vocab_size") or config.get("vocab_size") or len(tokenizer))
    gen_file = path / GENERATION_CONFIG_JSON
    gen = read_json(gen_file)
    ours = read_json(path / DGLS_JSON)

    def first(*values):
        return next((v for v in values if v is not None), None)

    bos = first(
        getattr(tokenizer, "bos_token_id", None),
        gen.get("bos_token_id"),
        config.get("bos_token_id"),
        text_cfg.get("bos_token_id"),
    )
    if bos is None:
        raise ModelLoadError(f"checkpoint {path} defines no BOS token: the prefix must start with one")
    eos = first(getattr(tokenizer, "eos_token_id", None), gen.get("eos_token_id"), config.get("eos_token_id"))
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    pad = first(getattr(tokenizer, "pad_token_id", None), gen.get("pad_token_id"), config.get("pad_token_id"))
    filler = ours.get("filler_token_id")
    canvas_length = int(config.get("canvas_length", 256))
    lengths = tuple(sorted(int(n) for n in ours.get("canvas_lengths", ()) if int(n) > 0)) or (canvas_length,)
    sampler_keys = {
        "max_steps": first(ours.get("max_steps"), gen.get("max_denoising_steps")),
        "entropy_bound": first(ours.get("entropy_bound"), (gen.get("sampler_config") or {}).get("entropy_bound")),
        "t_max": first(ours.get("t_max"), gen.get("t_max")),
        "t_min": first(ours.get("t_min"), gen.get("t_min")),
        "stability_threshold": first(ours.get("stability_threshold"), gen.get("stability_threshold")),
        "confidence_threshold": first(ours.get("confidence_threshold"), gen.get("confidence_threshold")),
        "sc_raw_logits": ours.get("sc_raw_logits"),
    }
    if not isinstance(gen.get("sampler_config"), (dict, type(None))):
        raise ModelLoadError(f"invalid sampler_config in {gen_file}: expected an object")
    try:
        sampler = SamplerConfig.from_dict({k: v for k, v in sampler_keys.items() if v is not None})
    except ValueError as exc:
        raise ModelLoadError(f"invalid sampler defaults in {gen_file}: {exc}") from None

    def opt(v):
        return None if v is None else int(v)

    languages = ours.get("languages")
    if languages is not None and (not isinstance(languages, list) or not all(isinstance(x, str) for x in languages)):
        raise ModelLoadError(f"invalid languages in {path / DGLS_JSON}: expected a list of language ids")
    return ModelSpec(
        languages=None if languages is None else tuple(languages),
        bos_id=int(bos),
        eos_id=opt(eos),
        pad_id=opt(pad),
        filler_id=opt(filler),
        noise_low=int(ours.get("noise_low", 0)),
        max_prefix_tokens=opt(ours.get("max_prefix_tokens")),
        max_suffix_tokens=opt(ours.get("max_suffix_tokens")),
        vocab_size=vocab,
        canvas_lengths=lengths,
        sampler=sampler,
        automatic_steps=_positive(ours, "automatic_max_steps", path),
        automatic_canvas=_positive(ours, "automatic_canvas", path),
        automatic_suffix=_positive(ours, "automatic_suffix_tokens", path),
    )


def _positive(facts: dict[str, Any], key: str, path: Path) -> int | None:
    """An optional integer >= 1 of ``dgls.json``."""
    v = facts.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelLoadError(f"invalid {key} in {path / DGLS_JSON}: expected an integer >= 1, got {v!r}")
    return v
