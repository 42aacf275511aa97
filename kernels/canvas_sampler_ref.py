"""Pure-torch references for :mod:`dgls.kernels.canvas_sampler`; the tests and the benchmark import these.

Row statistics of a (N, V) block of logits (N = B*C canvas slots), all in fp32 whatever the input dtype:

* ``x = cap * tanh(x / cap)`` when soft-capping is on, then ``z = x / T``;
* ``entropy = -sum_v p_v log p_v`` with ``p = softmax(z)`` (the sampler's acceptance statistic);
* ``argmax = argmax_v z_v`` (first index on ties, as ``torch.argmax``);
* ``logp_max = log softmax(x)[argmax]`` at temperature 1 (the confidence, as a log-probability);
* ``sample ~ Categorical(softmax(z))``; the reference draws with ``torch.multinomial``, the kernel with the
  Gumbel-max trick, so only their distributions agree.

This reference materializes (N, V) fp32 temporaries (several of them: 4 bytes * N * V each), which is what the
kernel avoids.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RowStats(NamedTuple):
    """Per-row statistics of a logits block, each (N,)."""

    entropy: torch.Tensor  # float32, nats, of softmax(x / T)
    argmax: torch.Tensor  # int64
    logp_max: torch.Tensor  # float32, log-probability of `argmax` at temperature 1
    sample: torch.Tensor | None  # int64 draw from softmax(x / T), or None when not asked for


def softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``cap * tanh(x / cap)`` (Gemma's final-logit soft-capping); identity for None or 0."""
    return x if not cap else cap * torch.tanh(x / cap)


def row_stats_ref(
    logits: torch.Tensor,
    temperature: float,
    *,
    cap: float | None = None,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> RowStats:
    """Reference row statistics of `logits` (N, V), computed in fp32."""
    x = softcap(logits.float(), cap)  # (N, V) fp32
    z = x / temperature  # (N, V)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    ent = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)  # 0 * log 0 = 0
    am = z.argmax(-1)
    logp1 = torch.log_softmax(x, dim=-1).gather(-1, am[:, None]).squeeze(-1)
    s = torch.multinomial(p, 1, generator=generator).squeeze(-1) if sample else None
    return RowStats(ent, am, logp1, s)
