"""DiffusionGemma ``generate()``'s draw order, the reference :func:`dgls.model.sampler.denoise` is tested against.

``SamplerConfig(compat_generate=True)`` selects it (tests only): every slot is sampled with softmax +
multinomial over (B*C, V) from the global RNG before acceptance, the noise comes from the global RNG too, and
the fused kernel is never used. With an empty suffix the sampler then reproduces ``generate()`` token for token
(tests/model/test_infill.py). The (B, C, V) multinomial is what the sampler's own path avoids.
"""

from __future__ import annotations

import torch

from dgls.model.sampler import SlotDraw, accept_mask, entropy, logp_of_argmax, on_slots


def draw_every_slot(
    logits: torch.Tensor,
    scaled: torch.Tensor,
    t: torch.Tensor,
    free: torch.Tensor,
    tokens: torch.Tensor,
    bound: float,
    generator: torch.Generator | None,
) -> SlotDraw:
    """generate()'s step: a sample in every free slot from the global RNG (`generator` unused).

    `logits` and `scaled` are the free slots' (N, V), row-major; with an empty suffix every slot is free, so the
    draws come in generate()'s order.
    """
    argmax = scaled.argmax(-1)  # (N,)
    H = on_slots(free, entropy(scaled), 0.0)  # (B, C)
    probs = torch.softmax(scaled, dim=-1, dtype=torch.float32)  # (N, V)
    sampled = on_slots(free, torch.multinomial(probs, 1).squeeze(-1), tokens)
    logp_max = on_slots(free, logp_of_argmax(logits, argmax), 0.0)
    return SlotDraw(H, on_slots(free, argmax, tokens), logp_max, accept_mask(H, free, bound), sampled)
