"""The decoder pass without the framework's per-call overhead: the same DiffusionGemma weights, the same math.

A denoising step of a small model on a CPU is dominated by dispatch, not arithmetic: transformers' decoder
builds masks, rotary tables and a ``torch.cat`` of the prefix cache on every call, runs the MoE router and
expert loop even where the experts are empty, and the sampler then works over every canvas slot. This module
runs one step as a short, fixed sequence of large operations over the model's own parameters:

- everything that is the same at every step of a request is built once (:class:`_Request`): rotary tables for
  the canvas positions, the key/value buffers holding the prefix cache (the canvas part is overwritten per step,
  nothing is concatenated), the padding mask, the pinned slots' embeddings;
- q, k and v are one matmul (their weights concatenated once), normalised together (one ``rms_norm`` over every
  head, the per-head scales stacked) and rotated together; gate and up are one matmul;
- the MoE branch is skipped where the model has no experts (``moe_intermediate_size == 0``: the branch adds an
  exact zero), and runs the model's own router and experts otherwise;
- the vocabulary-sized work (self-conditioning's soft embedding, the lm_head, the soft cap) runs only over the
  free slots (:meth:`FastDenoiser.free_logits`): a pinned slot's logits are never read, and its
  self-conditioning signal is the embedding of its token, exactly what softmax of a one-hot times E gives; that
  signal is the same at every step, so self-conditioning's MLP runs over pinned rows once per canvas.

The output equals :class:`~dgls.model.backend.DiffusionGemmaDenoiser`'s to float rounding (tests/model/
test_fastpath.py compares logits and whole middles on fixed seeds). Models it does not cover (clipped linears)
use the reference path: :func:`supports`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dgls.model.canvas import Canvas


def supports(model) -> str | None:
    """Why the fast path cannot run `model` exactly, or None when it can."""
    cfg = model.config.get_text_config(decoder=True)
    if getattr(cfg, "use_clipped_linears", False):
        return "clipped linears"
    dec = model.model.decoder
    if any(getattr(layer.self_attn, "q_proj", None) is None for layer in dec.layers):
        return "an attention layout it does not know"
    if any(m.bias is not None for layer in dec.layers for m in (layer.self_attn.q_proj, layer.self_attn.o_proj)):
        return "attention biases"
    return None


@dataclass
class _Layer:
    """One decoder layer's weights, fused where one matmul can do the work of several."""

    index: int
    layer_type: str
    n_q: int  # query heads
    n_kv: int  # key/value heads
    head_dim: int
    w_qkv: torch.Tensor  # (n_q + 2 n_kv) * head_dim x hidden: q, k, v (k again where v is k)
    w_qkv_norm: torch.Tensor  # (n_q + 2 n_kv, head_dim): q_norm, k_norm, ones (v_norm has no scale)
    w_o: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor
    norms: tuple[torch.Tensor, ...]  # input, post-attention, pre-ff, post-ff-1, post-ff (weights)
    scalar: torch.Tensor
    moe: Any  # the layer module, when it has experts to run (else None)


class FastDenoiser:
    """One decoder pass of a DiffusionGemmaForBlockDiffusion over a canvas, read from a fixed encoder cache.

    Same interface as :class:`~dgls.model.backend.DiffusionGemmaDenoiser` (``__call__``, ``noise``), plus
    :meth:`free_logits`, which the sampler prefers. The weights are shared with the model (fused copies are
    built once per model by :func:`prepared` and cached on it).
    """

    def __init__(self, model, cache, noise_low: int = 0):
        from dgls.model.backend import DiffusionGemmaDenoiser

        self._ref = DiffusionGemmaDenoiser(model, cache, noise_low)  # noise, sizes and checks are the same
        self.model = model
        self.cache = cache
        self.prefix_len = self._ref.prefix_len
        self.vocab_size = self._ref.vocab_size
        self.noise_low = noise_low
        self.weights = prepared(model)
        self._req: _Request | None = None

    def noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform random tokens in [noise_low, V), as the reference path draws them."""
        return self._ref.noise(shape, generator)

    def _request(self, canvas: Canvas) -> _Request:
        req = self._req
        if req is None or req.canvas is not canvas:
            req = self._req = _Request(self.weights, self.cache, canvas)
        return req

    @torch.no_grad()
    def hidden(self, canvas: Canvas, sc_free: torch.Tensor | None) -> torch.Tensor:
        """The decoder's final hidden states (B, C, H), self-conditioned on `sc_free` (N_free, V) logits or None."""
        w, req = self.weights, self._request(canvas)
        x = _self_conditioned(w, req, canvas.tokens, sc_free)
        for layer in w.layers:
            x = _layer(layer, x, req, w.eps)
        return F.rms_norm(x, (w.hidden,), w.final_norm, w.eps)

    def free_logits(self, canvas: Canvas, sc_free: torch.Tensor | None) -> torch.Tensor:
        """Logits (N_free, V) float32 of the free slots, row-major: all the sampler reads."""
        h = self.hidden(canvas, sc_free)
        return self.weights.head(h[self._request(canvas).free_rows])

    def __call__(self, canvas: Canvas, sc_logits: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, C, V) float32 of every slot; `sc_logits` (B, C, V) as the reference path takes them."""
        req = self._request(canvas)
        sc_free = None if sc_logits is None else sc_logits[req.free_rows]
        # the reference path's pinned rows are one-hot self-conditioning (the sampler's); this pass assumes it
        return self.weights.head(self.hidden(canvas, sc_free))


@dataclass
class _Weights:
    hidden: int
    eps: float
    embed: torch.Tensor  # (V, H), tied with the lm_head
    embed_scale: torch.Tensor
    softcap: float | None
    sc_pre_norm: torch.Tensor
    sc_gate_up: torch.Tensor
    sc_down: torch.Tensor
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    layers: list[_Layer]
    rotary: Any  # the decoder's rotary module (tables are built once per request from it)
    encoder_layers: list[_Layer]
    encoder_embed: torch.Tensor
    encoder_embed_scale: torch.Tensor
    sliding_window: int

    def head(self, h: torch.Tensor) -> torch.Tensor:
        logits = (h @ self.lm_head.T).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _fuse(layers, cfg, fused: dict[int, tuple[torch.Tensor, ...]]) -> list[_Layer]:
    """`layers` (decoder or encoder) as :class:`_Layer` records.

    `fused` shares the concatenated weights between the two stacks where they share their tensors (DiffusionGemma
    ties them), so each is built once.
    """
    out = []
    moe_size = int(getattr(cfg, "moe_intermediate_size", 0) or 0)
    for i, layer in enumerate(layers[: cfg.num_hidden_layers]):
        a = layer.self_attn
        n_q = a.q_proj.out_features // a.head_dim
        n_kv = a.k_proj.out_features // a.head_dim
        key = id(a.q_proj.weight)
        if key not in fused:
            w_v = a.v_proj.weight if a.v_proj is not None else a.k_proj.weight  # v is k before its norm
            norm = [a.q_norm.weight.expand(n_q, -1), a.k_norm.weight.expand(n_kv, -1), torch.ones(n_kv, a.head_dim)]
            fused[key] = (
                torch.cat([a.q_proj.weight, a.k_proj.weight, w_v]).contiguous(),
                torch.cat([n.to(a.q_proj.weight) for n in norm]).contiguous(),
                torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).contiguous(),
            )
        w_qkv, w_qkv_norm, w_gate_up = fused[key]
        out.append(
            _Layer(
                index=i,
                layer_type=cfg.layer_types[i],
                n_q=n_q,
                n_kv=n_kv,
                head_dim=a.head_dim,
                w_qkv=w_qkv,
                w_qkv_norm=w_qkv_norm,
                w_o=a.o_proj.weight,
                w_gate_up=w_gate_up,
                w_down=layer.mlp.down_proj.weight,
                norms=(
                    layer.input_layernorm.weight,
                    layer.post_attention_layernorm.weight,
                    layer.pre_feedforward_layernorm.weight,
                    layer.post_feedforward_layernorm_1.weight,
                    layer.post_feedforward_layernorm.weight,
                ),
                scalar=layer.layer_scalar,
                moe=layer if moe_size > 0 and layer.experts.num_experts > 0 else None,
            )
        )
    return out


def prepared(model) -> _Weights:
    """The fused weights of `model`'s decoder and encoder, built on first use and kept on the model object."""
    cached = getattr(model, "_dgls_fastpath", None)
    if cached is None:
        cached = model._dgls_fastpath = _prepare(model)
    return cached


def _prepare(model) -> _Weights:
    why = supports(model)
    if why is not None:
        raise ValueError(f"the fast path does not cover this model: {why}")
    cfg = model.config.get_text_config(decoder=True)
    dec = model.model.decoder
    enc = model.model.encoder.language_model
    fused: dict[int, tuple[torch.Tensor, ...]] = {}
    sc = dec.self_conditioning
    w = _Weights(
        hidden=cfg.hidden_size,
        eps=cfg.rms_norm_eps,
        embed=dec.embed_tokens.weight,
        embed_scale=dec.embed_tokens.embed_scale.to(dec.embed_tokens.weight.dtype),
        softcap=cfg.final_logit_softcapping,
        sc_pre_norm=sc.pre_norm.weight,
        sc_gate_up=torch.cat([sc.gate_proj.weight, sc.up_proj.weight]).contiguous(),
        sc_down=sc.down_proj.weight,
        final_norm=dec.norm.weight,
        lm_head=model.lm_head.weight,
        layers=_fuse(dec.layers, cfg, fused),
        rotary=dec.rotary_emb,
        encoder_layers=_fuse(enc.layers, enc.config, fused),
        encoder_embed=enc.embed_tokens.weight,
        encoder_embed_scale=enc.embed_tokens.embed_scale.to(enc.embed_tokens.weight.dtype),
        sliding_window=int(getattr(enc.config, "sliding_window", 0) or 0),
    )
    return w


@torch.no_grad()
def encode(model, ids: torch.Tensor, cache):
    """The encoder over `ids` (B, T), causal, appending its keys and values to `cache` (a transformers cache).

    What :func:`dgls.model.backend.encode` does through transformers' forward, in the same order (the cache's
    own ``update`` keeps a sliding layer's window), without building its masks and tables per call. A long
    input is encoded in chunks of :data:`ENCODE_CHUNK` tokens (causal attention splits exactly), so no mask is
    larger than a chunk by its keys.
    """
    w = prepared(model)
    for at in range(0, ids.shape[1], ENCODE_CHUNK):
        _encoder(w, ids[:, at : at + ENCODE_CHUNK], cache)
    return cache


ENCODE_CHUNK = 256


@torch.no_grad()
def next_token_logits(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """One autoregressive step on the same weights: encode `ids` (B, T) into `cache`, logits (B, V) after the last.

    The baseline that diffusion is compared against (benchmarks/infill_latency.py), on the same fast path.
    """
    w = prepared(model)
    x = _encoder(w, ids, cache)[:, -1]
    return w.head(F.rms_norm(x, (w.hidden,), w.final_norm, w.eps))


def _encoder(w: _Weights, ids: torch.Tensor, cache) -> torch.Tensor:
    """The encoder layers over `ids`, writing `cache`; the last layer's hidden states (B, T, H), before the norm."""
    B, T = ids.shape
    start = cache.get_seq_length()
    positions = torch.arange(start, start + T, device=ids.device)[None].expand(B, -1)
    rope = {kind: _rope_tables(w.rotary, w.encoder_embed, positions, kind) for kind in {x.layer_type for x in w.layers}}
    x = w.encoder_embed[ids] * w.encoder_embed_scale
    for layer in w.encoder_layers:
        H = x.shape[-1]
        h = F.rms_norm(x, (H,), layer.norms[0], w.eps)
        q, k, v = _qkv(layer, h, *rope[layer.layer_type], w.eps)
        keys, values = cache.update(k.transpose(1, 2), v.transpose(1, 2), layer.index)  # (B, n_kv, kv_len, D)
        kv_len = keys.shape[2]
        sliding = layer.layer_type == "sliding_attention" and w.sliding_window
        mask = None
        if kv_len > T or (sliding and T > w.sliding_window):  # else plain causal: SDPA's own (flash) kernel
            key_pos = torch.arange(start + T - kv_len, start + T, device=ids.device)
            query_pos = positions[0]
            mask = key_pos[None, :] <= query_pos[:, None]
            if sliding:
                mask &= query_pos[:, None] - key_pos[None, :] < w.sliding_window
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys, values, attn_mask=mask, is_causal=mask is None, scale=1.0, enable_gqa=True
        )
        att = att.transpose(1, 2).reshape(B, T, -1) @ layer.w_o.T
        x = x + F.rms_norm(att, (H,), layer.norms[1], w.eps)
        x = _feed_forward(layer, x, w.eps) * layer.scalar
    return x


def _rope_tables(rotary, probe: torch.Tensor, positions: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sign-folded sin (B, T, 1, D) for :func:`_rope`, from the model's own rotary module."""
    cos, sin = rotary(probe[:1], positions, kind)
    half = cos.shape[-1] // 2
    # rotate_half(x) * sin == roll(x, half) * sin with the first half's sign flipped
    signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos[:, :, None, :], signed[:, :, None, :]


def _qkv(
    layer: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values (B, T, heads, D) of normed hidden states: one matmul, one norm, one rotation."""
    B, T, _ = h.shape
    heads = (h @ layer.w_qkv.T).view(B, T, layer.n_q + 2 * layer.n_kv, layer.head_dim)
    heads = F.rms_norm(heads, (layer.head_dim,), None, eps) * layer.w_qkv_norm
    n_rot = layer.n_q + layer.n_kv
    qk = _rope(heads[:, :, :n_rot], cos, sin)
    return qk[:, :, : layer.n_q], qk[:, :, layer.n_q :], heads[:, :, n_rot:]


class _Request:
    """What stays the same at every step of one canvas: rotary tables, prefix keys/values, mask, pinned embeddings."""

    def __init__(self, w: _Weights, cache, canvas: Canvas):
        self.canvas = canvas
        B, C = canvas.tokens.shape
        self.free_rows = canvas.free.nonzero(as_tuple=True)
        # softmax of a one-hot (+-1e4) times E is the pinned token's embedding: their self-conditioning signal
        self.soft_pinned = torch.where(
            canvas.pinned[..., None], w.embed[canvas.tokens] * w.embed_scale, torch.zeros((), dtype=w.embed.dtype)
        )
        self.sc_pinned: torch.Tensor | None = None  # the self-conditioning MLP of soft_pinned (built when first read)
        self.rope = {
            kind: _rope_tables(w.rotary, w.embed, canvas.positions, kind) for kind in {x.layer_type for x in w.layers}
        }
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in w.layers:
            keys, values = cache.layers[layer.index].keys, cache.layers[layer.index].values  # (b, n_kv, P', D)
            P = keys.shape[2]
            k = keys.new_empty(B, layer.n_kv, P + C, layer.head_dim)
            v = values.new_empty(B, layer.n_kv, P + C, layer.head_dim)
            k[:, :, :P] = keys
            v[:, :, :P] = values
            self.kv.append((k, v))
        # padding slots are no keys; every cached key is one (a sliding layer's cache holds only its window)
        self.masks: list[torch.Tensor | None] = [None] * len(self.kv)
        if canvas.padded:
            for i, (k, _) in enumerate(self.kv):
                cached = torch.ones(B, k.shape[2] - C, dtype=torch.bool, device=canvas.tokens.device)
                self.masks[i] = torch.cat([cached, canvas.valid], 1)[:, None, None, :]


def _self_conditioned(w: _Weights, req: _Request, tokens: torch.Tensor, sc_free: torch.Tensor | None) -> torch.Tensor:
    """The canvas embeddings plus the self-conditioning signal of the previous step's logits (none at the first)."""
    x = w.embed[tokens] * w.embed_scale  # (B, C, H)
    if sc_free is not None:
        # the MLP works row by row: a pinned row's signal is the same at every step, so only free rows run it
        if req.sc_pinned is None:
            req.sc_pinned = _sc_mlp(w, req.soft_pinned)  # a free row's zeros give zeros (no biases)
        probs = sc_free.softmax(-1, dtype=torch.float32).to(w.embed.dtype)
        signal = req.sc_pinned.clone()
        signal[req.free_rows] = _sc_mlp(w, (probs @ w.embed) * w.embed_scale)
        x = x + signal
    return F.rms_norm(x, (w.hidden,), None, w.eps)  # the post-norm has no scale


def _sc_mlp(w: _Weights, soft: torch.Tensor) -> torch.Tensor:
    """Self-conditioning's MLP over soft embeddings (..., H): pre-norm, then the gated MLP."""
    return _gated_mlp(F.rms_norm(soft, (w.hidden,), w.sc_pre_norm, w.eps), w.sc_gate_up, w.sc_down)


def _gated_mlp(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
    return (F.gelu(gate, approximate="tanh") * up) @ w_down.T


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, C, heads, D) over its first ``cos.shape[-1]`` dims (all of them here)."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


def _layer(layer: _Layer, x: torch.Tensor, req: _Request, eps: float) -> torch.Tensor:
    x = _attention(layer, x, req, eps)
    return _feed_forward(layer, x, eps) * layer.scalar


def _attention(layer: _Layer, x: torch.Tensor, req: _Request, eps: float) -> torch.Tensor:
    """The attention half of a decoder layer, residual included: the canvas attends to the prefix and itself."""
    B, C, H = x.shape
    n_input, n_post_attn = layer.norms[:2]
    q, k, v = _qkv(layer, F.rms_norm(x, (H,), n_input, eps), *req.rope[layer.layer_type], eps)
    k_buf, v_buf = req.kv[layer.index]
    P = k_buf.shape[2] - C
    k_buf[:, :, P:] = k.transpose(1, 2)
    v_buf[:, :, P:] = v.transpose(1, 2)
    mask = req.masks[layer.index]
    att = F.scaled_dot_product_attention(q.transpose(1, 2), k_buf, v_buf, attn_mask=mask, scale=1.0, enable_gqa=True)
    att = att.transpose(1, 2).reshape(B, C, -1) @ layer.w_o.T
    return x + F.rms_norm(att, (H,), n_post_attn, eps)


def _feed_forward(layer: _Layer, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The MLP (and MoE, where the model has experts) half of a decoder layer, residual included."""
    H = x.shape[-1]
    n_pre_ff, n_post_ff1, n_post_ff = layer.norms[2:]
    mlp = _gated_mlp(F.rms_norm(x, (H,), n_pre_ff, eps), layer.w_gate_up, layer.w_down)
    ff = F.rms_norm(mlp, (H,), n_post_ff1, eps)
    if layer.moe is not None:  # the model's own router and experts (empty experts add an exact zero: skipped)
        m = layer.moe
        flat = x.reshape(-1, H)
        _, weights, index = m.router(flat)
        experts = m.experts(m.pre_feedforward_layernorm_2(flat), index, weights).reshape(x.shape)
        ff = ff + m.post_feedforward_layernorm_2(experts)
    return x + F.rms_norm(ff, (H,), n_post_ff, eps)
