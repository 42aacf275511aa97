"""The shipped dgls-tiny folder keeps its contract: size, safetensors only, reloads, ids agree across files."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

from dgls.model.tokenizer import FILLER, check_special_tokens

SHIPPED = Path(__file__).resolve().parents[2] / "model" / "checkpoints" / "dgls-tiny"
pytestmark = pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="no shipped checkpoint")


def test_folder_is_small_and_has_no_pickles():
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir()}
    assert sum(files.values()) <= 64 * 2**20, files
    assert not [n for n in files if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))], files
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "dgls.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "run_config.json",
        "README.md",
    ):
        assert name in files, name


@pytest.fixture(scope="module")
def loaded():
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(SHIPPED), experts_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(str(SHIPPED))


def test_reloads_and_ids_agree(loaded):
    model, tok = loaded
    check_special_tokens(tok)
    assert sum(p.numel() for p in model.parameters()) <= 14_000_000
    dgls = json.loads((SHIPPED / "dgls.json").read_text())
    gen = model.generation_config
    assert dgls["filler_token_id"] == tok.convert_tokens_to_ids(FILLER)
    assert dgls["noise_low"] == max(tok.all_special_ids) + 1
    assert dgls["sc_raw_logits"] is True and dgls["canvas_lengths"] == [16, 32, 64]
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert gen.max_denoising_steps == dgls["max_steps"]
    assert gen.sampler_config.entropy_bound == pytest.approx(dgls["entropy_bound"])
    cfg = model.config
    assert cfg.get_text_config().vocab_size == len(tok)
    assert (cfg.image_token_id, cfg.boi_token_id, cfg.eoi_token_id) == tuple(
        tok.convert_tokens_to_ids(t) for t in ("<|image|>", "<|boi|>", "<|eoi|>")
    )


def test_trained_model_ends_middles_with_filler(loaded):
    """The one thing the tiny model reliably learned: an all-noise canvas next to a suffix ends in filler."""
    from transformers import DynamicCache

    model, tok = loaded
    filler = tok.convert_tokens_to_ids(FILLER)
    prefix = torch.tensor([[tok.bos_token_id] + tok.encode("def f(x):\n    y = x + 1\n    ", add_special_tokens=False)])
    suffix = tok.encode("\n    return y\n", add_special_tokens=False)
    g = torch.Generator().manual_seed(0)
    n = 32
    canvas = torch.cat(
        [torch.randint(max(tok.all_special_ids) + 1, len(tok), (1, n), generator=g), torch.tensor([suffix])], 1
    )
    P = prefix.shape[1]
    with torch.no_grad():
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
        model.model.encoder(input_ids=prefix, past_key_values=cache, position_ids=torch.arange(P)[None])
        logits = model(
            decoder_input_ids=canvas,
            past_key_values=cache,
            decoder_position_ids=torch.arange(P, P + canvas.shape[1])[None],
        ).logits
    tail = logits[0, n - 8 : n].argmax(-1)
    assert (tail == filler).float().mean() >= 0.75, tail.tolist()
