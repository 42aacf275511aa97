"""DiffusionGemma ``generate()``'s draw order, the reference :func:`dgls.model.sampler.denoise` is tested against.

``SamplerConfig(compat_generate=True)`` selects it (tests only): every slot is sampled with softmax +
multinomial over (B*C, V) from the global RNG before acceptance, the noise comes from the global RNG too, and
the fused kernel is never used. With an empty suffix the sampler then reproduces ``generate()`` token for token
(tests/model/test_infill.py). The (B, C, V) multinomial is what the sampler's own path avoids.
"""

from __future__ import annotations

import torch

from dgls.model.sampler import SlotDraw, accept_mask, entropy, logp_of_argmax


def draw_every_slot(
    logits: torch.Tensor,
    scaled: torch.Tensor,
    t: torch.Tensor,
    free: torch.Tensor,
    tokens: torch.Tensor,
    bound: float,
    generator: torch.Generator | None,
) -> SlotDraw:
    """generate()'s step: a sample in every slot from the global RNG (`generator` and `tokens` unused)."""
    B, C, V = scaled.shape
    argmax = scaled.argmax(-1)  # (B, C)
    H = entropy(scaled)  # (B, C)
    probs = torch.softmax(scaled, dim=-1, dtype=torch.float32)  # (B, C, V)
    sampled = torch.multinomial(probs.view(-1, V), 1).view(B, C)
    return SlotDraw(H, argmax, logp_of_argmax(logits, argmax), accept_mask(H, free, bound), sampled)
