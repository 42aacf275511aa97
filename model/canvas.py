"""The canvas: a batch of token rows, each ``[free slots | pinned suffix | padding]``, with positions.

A row may also hold several runs of free slots with pinned code between them (a joint fill of several holes, a
selection regenerated in place), and a free run may start from seed tokens instead of noise.

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


@dataclass(frozen=True)
class Free:
    """`n` free slots of a canvas row; the first ``len(seed)`` start as `seed` tokens instead of noise."""

    n: int
    seed: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1 or len(self.seed) > self.n:
            raise ValueError(f"a free segment needs n >= 1 and at most n seed tokens, got n={self.n}, {len(self.seed)}")


Segment = Free | Sequence[int]  # free slots, or pinned token ids


@dataclass
class Canvas:
    """A batch of canvases sharing one prefix."""

    tokens: torch.Tensor  # (B, C) long: noise in free slots, known tokens in pinned ones
    pinned: torch.Tensor  # (B, C) bool: known tokens that never change
    valid: torch.Tensor  # (B, C) bool: False for padding slots
    positions: torch.Tensor  # (B, C) long: absolute positions (the prefix occupies 0..P-1)
    n_free: tuple[int, ...]  # free (middle) slots per row
    hole: torch.Tensor | None = None  # (B, C) long: which run of free slots (hole) a free slot is in, -1 elsewhere
    seed: torch.Tensor | None = None  # (B, C) long: the seed token a free slot started from, -1 elsewhere

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
        if start < 1:
            raise ValueError(f"canvas start position must be >= 1 (the prefix holds at least BOS), got {start}")
        suffix_ids = tuple(
            int(t) for t in (suffix.reshape(-1).tolist() if isinstance(suffix, torch.Tensor) else suffix)
        )
        return cls.from_segments([[Free(int(n)), suffix_ids] for n in n_free], start, noise, pad_id, device)

    @classmethod
    def from_segments(
        cls,
        rows: Sequence[Sequence[Segment]],
        start: int,
        noise: NoiseFn,
        pad_id: int = 0,
        device: torch.device | str = "cpu",
    ) -> Canvas:
        """Lay out one row per entry of `rows`, each a sequence of segments, in order; then padding.

        A segment is :class:`Free` slots (noise, or the run's `seed` tokens in its first slots) or pinned token
        ids. Runs of free slots separated by pinned code are the holes of a joint fill (``hole`` numbers them, left
        to right). Noise is drawn once for the whole (B, C) canvas, as :meth:`build` always did.
        """
        if start < 1:
            raise ValueError(f"canvas start position must be >= 1 (the prefix holds at least BOS), got {start}")
        laid: list[tuple[list[int], list[bool], list[int]]] = []  # per row: ids (-1: noise), pinned, hole
        for segments in rows:
            ids: list[int] = []
            pinned: list[bool] = []
            hole: list[int] = []
            n_holes = 0
            for seg in segments:
                if isinstance(seg, Free):
                    if pinned and not pinned[-1]:
                        raise ValueError("two free segments in a row need pinned tokens between them")
                    ids += list(seg.seed) + [-1] * (seg.n - len(seg.seed))
                    pinned += [False] * seg.n
                    hole += [n_holes] * seg.n
                    n_holes += 1
                else:
                    ids += [int(t) for t in seg]
                    pinned += [True] * len(seg)
                    hole += [-1] * len(seg)
            if not n_holes:
                raise ValueError("every canvas row needs at least one free slot")
            laid.append((ids, pinned, hole))
        B, C = len(laid), max(len(ids) for ids, *_ in laid)
        seeded = torch.full((B, C), -1, dtype=torch.long)
        is_pinned = torch.zeros(B, C, dtype=torch.bool)
        valid = torch.zeros(B, C, dtype=torch.bool)
        holes = torch.full((B, C), -1, dtype=torch.long)
        for i, (ids, pinned, hole) in enumerate(laid):
            n = len(ids)
            seeded[i, :n] = torch.tensor(ids, dtype=torch.long)
            is_pinned[i, :n] = torch.tensor(pinned)
            valid[i, :n] = True
            holes[i, :n] = torch.tensor(hole, dtype=torch.long)
        seeded, is_pinned, valid, holes = (t.to(device) for t in (seeded, is_pinned, valid, holes))
        is_free = valid & ~is_pinned
        tokens = torch.where(is_free & (seeded < 0), noise((B, C)).to(device), seeded)
        tokens = torch.where(valid, tokens, torch.full_like(tokens, pad_id))
        slot = torch.arange(C, device=device)[None].expand(B, C)
        return cls(
            tokens=tokens,
            pinned=is_pinned,
            valid=valid,
            positions=start + slot,
            n_free=tuple(int(x) for x in is_free.sum(-1).tolist()),
            hole=holes,
            seed=torch.where(is_free, seeded, -1) if bool((is_free & (seeded >= 0)).any()) else None,
        )

    def run_rank(self) -> torch.Tensor:
        """(B, C) long: each free slot's index within its run of free slots (0 for a run's first slot)."""
        C = self.tokens.shape[1]
        idx = torch.arange(C, device=self.tokens.device)[None].expand_as(self.tokens)
        last_other = torch.cummax(torch.where(self.free, -1, idx), dim=-1).values
        return idx - last_other - 1

    def renoise(self, accept: torch.Tensor, sampled: torch.Tensor, noise_ids: torch.Tensor) -> None:
        """Keep `sampled` where accepted, draw fresh noise in every other free slot; pinned slots stay."""
        free = self.free
        new = torch.where(accept, sampled, noise_ids)
        self.tokens = torch.where(free, new, self.tokens)
