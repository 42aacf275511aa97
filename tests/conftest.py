"""Shared fixtures: a tiny random-weight DiffusionGemma checkpoint built, saved and reloaded for real."""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

if not torch.cuda.is_available():
    # Triton's interpreter for the kernel tests on machines without CUDA. Set here, before any test module is
    # collected: triton reads it when it is imported, and test modules outside tests/kernels import triton too.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def build_tokenizer(out: Path, vocab_size: int = 512) -> None:
    """The project's byte-level BPE (dgls.model.tokenizer), trained on a few stdlib files."""
    from dgls.model.tokenizer import train_tokenizer

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "bisect.py", "heapq.py")]
    train_tokenizer(texts, out, vocab_size)


def tiny_config(vocab_size: int, moe: bool = False, canvas_length: int = 32, sliding_window: int = 64):
    """A 2-layer DiffusionGemma config (1 sliding + 1 full layer)."""
    from transformers import DiffusionGemmaConfig

    from dgls.model.train import TINY_VISION

    if moe:
        moe_kw = dict(num_experts=4, top_k_experts=2, moe_intermediate_size=32)
    else:
        moe_kw = dict(num_experts=1, top_k_experts=1, moe_intermediate_size=0)
    tc = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        global_head_dim=32,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=sliding_window,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        **moe_kw,
    )
    return DiffusionGemmaConfig(
        text_config=tc,
        vision_config=TINY_VISION,
        canvas_length=canvas_length,
        image_token_id=6,
        boi_token_id=7,
        eoi_token_id=8,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        experts_implementation="eager",
    )


def save_tiny_checkpoint(out: Path, moe: bool = False, seed: int = 0, dgls_defaults: dict | None = None) -> Path:
    """Build a random-weight tiny model with a tokenizer and save it the way a real checkpoint is saved."""
    from transformers import DiffusionGemmaForBlockDiffusion

    build_tokenizer(out)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(tiny_config(512, moe=moe))
    model.save_pretrained(out, safe_serialization=True)
    gen = {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "max_denoising_steps": 12}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    facts = {"noise_low": 9, "filler_token_id": 4, "canvas_lengths": [8, 16], **(dgls_defaults or {})}
    (out / "dgls.json").write_text(json.dumps(facts, indent=2))
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Folder of a tiny dense random-weight checkpoint (session-wide, read-only)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-dense"))


@pytest.fixture(scope="session")
def tiny_moe_checkpoint(tmp_path_factory) -> Path:
    """Folder of a tiny MoE random-weight checkpoint."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-moe"), moe=True, seed=1)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_checkpoint):
    """The tiny dense checkpoint loaded through the real loading path, on CPU."""
    from dgls.model.loading import load_model

    return load_model(tiny_checkpoint, device="cpu")


# The fast tier, `pytest -m "not slow"`, leaves out what starts servers, editors, the CLI or benchmark scripts, and
# the kernels at the real model's sizes; the full suite (CI) runs everything.
SLOW_PATHS = (
    "e2e/",
    "editors/",
    "benchmarks/",
    "remote/",
    "reliability/test_faults.py",
    "reliability/test_jsonrpc_fuzz.py",
    "reliability/test_leaks.py",
    "reliability/test_security.py",
    "reliability/test_soak.py",
    "dgls/test_cli.py",
    "kernels/test_real_sizes.py",
)


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    for item in items:
        where = Path(str(item.fspath)).relative_to(tests_dir).as_posix()
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
