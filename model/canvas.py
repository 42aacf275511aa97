"""The canvas: a batch of token rows, each ``[free slots | pinned suffix | padding]``, with positions.

Free slots start as noise and are denoised; pinned slots hold known tokens (the suffix) and never change;
padding slots exist only so that rows of different middle lengths share one tensor, and are masked out of
attention. The prefix is not on the canvas: it lives in the encoder's KV cache at positions ``0..P-1``, and
row ``i`` sits at positions ``P..P+N_i+S-1`` so that its suffix starts right after its own middle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]


@dataclass
class Canvas:
    """A batch of canvases sharing one prefix."""

    tokens: torch.Tensor  # (B, C) long: noise in free slots, known tokens in pinned ones
    pinned: torch.Tensor  # (B, C) bool: known tokens that never change
    valid: torch.Tensor  # (B, C) bool: False for padding slots
    positions: torch.Tensor  # (B, C) long: absolute positions (the prefix occupies 0..P-1)
    n_free: tuple[int, ...]  # free (middle) slots per row

    @property
    def free(self) -> torch.Tensor:
        """(B, C) bool: the slots the sampler fills."""
        return self.valid & ~self.pinned

    @property
    def padded(self) -> bool:
        """Whether any row has padding slots (then attention needs a mask)."""
        return not bool(self.valid.all())

    def attention_mask(self, prefix_len: int) -> torch.Tensor | None:
        """(B, P + C) bool key mask over cache + canvas, or None when nothing is padded."""
        if not self.padded:
            return None
        B = self.tokens.shape[0]
        cached = torch.ones(B, prefix_len, dtype=torch.bool, device=self.tokens.device)
        return torch.cat([cached, self.valid], dim=1)

    @classmethod
    def build(
        cls,
        n_free: Sequence[int],
        suffix: Sequence[int] | torch.Tensor,
        start: int,
        noise: NoiseFn,
        pad_id: int = 0,
        device: torch.device | str = "cpu",
    ) -> Canvas:
        """Lay out one row per entry of `n_free`: that many noise slots, then the pinned suffix, then padding.

        `start` is the position of the first canvas slot (the prefix length in the cache).
        """
        if not n_free or min(n_free) < 1:
            raise ValueError(f"every canvas row needs at least one free slot, got n_free={list(n_free)}")
        suffix_ids = torch.as_tensor(
            list(suffix) if not isinstance(suffix, torch.Tensor) else suffix, dtype=torch.long, device=device
        ).reshape(-1)
        if start < 1:
            raise ValueError(f"canvas start position must be >= 1 (the prefix holds at least BOS), got {start}")
        B, S = len(n_free), suffix_ids.numel()
        C = max(n_free) + S
        slot = torch.arange(C, device=device)[None].expand(B, C)  # (B, C)
        n = torch.tensor(list(n_free), device=device)[:, None]  # (B, 1)
        is_free = slot < n
        is_suffix = (slot >= n) & (slot < n + S)
        tokens = torch.full((B, C), pad_id, dtype=torch.long, device=device)
        noise_ids = noise((B, C)).to(device)
        tokens = torch.where(is_free, noise_ids, tokens)
        if S:
            suffix_idx = (slot - n).clamp(0, S - 1)
            tokens = torch.where(is_suffix, suffix_ids[suffix_idx], tokens)
        return cls(
            tokens=tokens,
            pinned=is_suffix,
            valid=is_free | is_suffix,
            positions=start + slot,
            n_free=tuple(int(x) for x in n_free),
        )

    def renoise(self, accept: torch.Tensor, sampled: torch.Tensor, noise_ids: torch.Tensor) -> None:
        """Keep `sampled` where accepted, draw fresh noise in every other free slot; pinned slots stay."""
        free = self.free
        new = torch.where(accept, sampled, noise_ids)
        self.tokens = torch.where(free, new, self.tokens)
