"""Pure-torch references for :mod:`dgls.kernels.soft_embedding` (self-conditioning's soft embedding).

DiffusionGemma's self-conditioning input is the expected embedding under the previous step's prediction,
``softmax(logits) @ E * scale`` (``scale = sqrt(hidden)`` in the model): a (N, V) @ (V, H) matmul that reads the
whole embedding table (V * H * 2 bytes = 1.5 GB in bf16 at the real size) and a dense (N, V) probability tensor
every step. The top-k version keeps the k most probable tokens of each row, renormalises their weights and
gathers k embedding rows, reading N * k * H elements of E instead.

Error of the top-k version (exact, not an estimate). With P the probability mass of the top-k set K,
``mu_in`` the mean embedding over K (weights p_i / P) and ``mu_out`` the mean over the rest (weights
p_i / (1 - P))::

    dense = P mu_in + (1 - P) mu_out,   sparse = mu_in
    dense - sparse = (1 - P) (mu_out - mu_in)
    ||dense - sparse|| <= (1 - P) * max_{i,j} ||e_i - e_j|| <= 2 (1 - P) max_i ||e_i||

times ``scale``. :func:`topk_error_bound` returns that last bound per row.

Uniform-tail correction: keep the k tokens' full-softmax weights and replace ``mu_out`` by ``m_out``, the
plain mean of the dropped tokens' embeddings (from E's column sums, precomputed once). Then
``dense - corrected = (1 - P) (mu_out - m_out)``: the same bound holds (both are means of the same rows), and
the error vanishes when the dropped tokens are equally likely, which is where plain top-k is worst (flat,
early-step distributions).
"""

from __future__ import annotations

import torch


def soft_embedding_ref(logits: torch.Tensor, E: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Dense ``softmax(logits) @ E * scale`` in fp32: (N, V), (V, H) -> (N, H)."""
    return torch.softmax(logits.float(), dim=-1) @ E.float() * scale


def embedding_sum(E: torch.Tensor) -> torch.Tensor:
    """Column sums of E in fp32, (V, H) -> (H,): computed once per model for the uniform-tail correction."""
    return E.float().sum(0)


def topk_soft_embedding_ref(
    logits: torch.Tensor, E: torch.Tensor, k: int, scale: float = 1.0, e_sum: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k soft embedding in fp32; with `e_sum`, the uniform-tail version (see topk_soft_embedding)."""
    x = logits.float()
    vals, idx = torch.topk(x, k, dim=-1)  # (N, k)
    Ek = E.float()[idx]  # (N, k, H)
    if e_sum is None or k == x.shape[-1]:
        w = torch.softmax(vals, dim=-1)  # (N, k), renormalised: sums to 1
        return torch.einsum("nk,nkh->nh", w, Ek) * scale
    p = torch.exp(vals - torch.logsumexp(x, dim=-1, keepdim=True))  # (N, k), full-softmax probabilities
    mean_out = (e_sum.float() - Ek.sum(1)) / (x.shape[-1] - k)  # (N, H): mean embedding of the dropped tokens
    return (torch.einsum("nk,nkh->nh", p, Ek) + (1 - p.sum(-1, keepdim=True)) * mean_out) * scale


def topk_mass(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Probability mass of each row's k most probable tokens: (N, V) -> (N,) in fp32."""
    return torch.softmax(logits.float(), dim=-1).topk(k, dim=-1).values.sum(-1)


def topk_error_bound(logits: torch.Tensor, E: torch.Tensor, k: int, scale: float = 1.0) -> torch.Tensor:
    """Per-row bound on ``||dense - top-k||_2``: ``2 (1 - mass_topk) max_i ||E_i|| * scale`` (see module doc)."""
    max_norm = E.float().norm(dim=-1).max()
    return 2 * (1 - topk_mass(logits, k)).clamp(min=0) * max_norm * abs(scale)
