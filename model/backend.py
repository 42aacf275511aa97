"""DiffusionGemma behind the sampler's Denoiser interface, and the encoder cache of the last prefix.

The encoder runs causally over the prefix and writes a KV cache; the decoder reads that cache at every
denoising step and never writes it (transformers 5.23 ``append_to_cache`` concatenates), so one cache serves
every step and every request whose prefix is unchanged, and a prefix that grows is extended in place.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from dgls.model.canvas import Canvas


def new_cache(model) -> DynamicCache:
    """An empty cache laid out for the model's layer types (sliding windows included)."""
    return DynamicCache(config=model.config.get_text_config(decoder=True))


@torch.no_grad()
def encode(model, ids: torch.Tensor, cache: DynamicCache | None = None) -> DynamicCache:
    """Run the encoder over `ids` (B, T), appending to `cache` at positions after what it holds."""
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"encoder input must be (B, T) with T >= 1, got shape {tuple(ids.shape)}")
    cache = cache if cache is not None else new_cache(model)
    start = cache.get_seq_length()
    pos = torch.arange(start, start + ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
    model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=pos)
    return cache


def batched(cache: DynamicCache, batch: int) -> DynamicCache:
    """A copy of a batch-1 cache repeated `batch` times (the original stays usable for later requests)."""
    out = copy.deepcopy(cache)
    if batch > 1:
        out.batch_repeat_interleave(batch)
    return out


class PrefixCache:
    """The encoder cache of the last prefix: reused when the next prefix is equal, extended when it grows.

    Sliding-window layers drop old keys, so a cache cannot be cropped back; any other change re-encodes.
    """

    def __init__(self, model):
        self.model = model
        self.ids: tuple[int, ...] = ()
        self.cache: DynamicCache | None = None
        self.stats = {"hit": 0, "extend": 0, "miss": 0}

    def get(self, ids: Sequence[int]) -> tuple[DynamicCache, str]:
        """Return a batch-1 cache holding exactly `ids`, and how it was obtained: hit, extend or miss.

        The returned cache is shared: callers that append to it (multi-block) must copy it first.
        """
        ids = tuple(int(i) for i in ids)
        device = self.model.device
        if self.cache is not None and ids == self.ids:
            kind = "hit"
        elif self.cache is not None and len(ids) > len(self.ids) and ids[: len(self.ids)] == self.ids:
            tail = torch.tensor([ids[len(self.ids):]], device=device)
            encode(self.model, tail, self.cache)
            kind = "extend"
        else:
            self.cache = None  # free the old cache before building the new one
            self.cache = encode(self.model, torch.tensor([ids], device=device))
            kind = "miss"
        self.ids = ids
        self.stats[kind] += 1
        return self.cache, kind

    def clear(self) -> None:
        """Forget the cached prefix."""
        self.ids, self.cache = (), None


class DiffusionGemmaDenoiser:
    """One decoder pass of a DiffusionGemmaForBlockDiffusion over a canvas, reading a fixed encoder cache."""

    def __init__(self, model, cache: DynamicCache, noise_low: int = 0):
        self.model = model
        self.cache = cache
        self.prefix_len = cache.get_seq_length()
        self.vocab_size = int(model.config.get_text_config(decoder=True).vocab_size)
        if not 0 <= noise_low < self.vocab_size:
            raise ValueError(f"noise_low must be in [0, {self.vocab_size}), got {noise_low}")
        self.noise_low = noise_low
        self.emb_dtype = model.model.decoder.embed_tokens.weight.dtype

    def __call__(self, canvas: Canvas, sc_logits: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, C, V) float32 for every slot of `canvas`."""
        out = self.model(decoder_input_ids=canvas.tokens, past_key_values=self.cache,
                         self_conditioning_logits=None if sc_logits is None else sc_logits.to(self.emb_dtype),
                         decoder_position_ids=canvas.positions,
                         decoder_attention_mask=canvas.attention_mask(self.prefix_len))
        return out.logits.float()

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform random tokens in [noise_low, V), the model's noise family."""
        device = self.model.device
        if generator is None:  # the global RNG, as generate() draws it
            return torch.randint(self.noise_low, self.vocab_size, shape, device=device)
        return torch.randint(self.noise_low, self.vocab_size, shape, device=device, generator=generator)
