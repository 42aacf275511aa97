"""GPU speed on the real DiffusionGemma 26B-A4B shape (random bf16 weights): transformers as-is vs dgls kernels vs AR.

Builds the 26B-A4B config (reference/diffusiongemma.md §7: hidden 2816, 30 layers 5 sliding : 1 full, 16 heads,
head_dim 256 / global 512, KV heads 8 / global 2, dense MLP 2112, 128 experts x 704 top-8, vocab 262,144, window
1024, soft-cap 30) on the meta device, ties encoder and decoder (one set of weights, as the model does), then
materializes every tensor once directly on the GPU and initializes it there (no 2x peak from the untied
construction, no CPU copy). Random weights: timings only, the tokens mean nothing.

Paths (each row of every table is measured on each of them):

* ``transformers``: the model as transformers 5.23 runs it (its default experts implementation, ``grouped_mm``
  on a GPU), with the sampler's torch statistics (``DGLS_KERNELS=0``);
* ``dgls: sampler``: the fused sampler-statistics kernel (``dgls.kernels.canvas_sampler``) in the same loop;
* ``dgls: sampler + MoE bf16``: also the experts of every layer on ``dgls.kernels.moe`` (``dgls.model.experts``);
* ``dgls: sampler + MoE fp8``: the same with the experts quantized once to float8_e4m3fn, per-output-channel
  scales (the bf16 experts stay in memory; the FP8 copy is dropped after its rows).

A path whose kernels are not usable on the machine is reported as skipped with the registry's reason.

Per prefix (default 1024 and 4096 tokens, encoded once per prefix) and canvas (default 64 and 256 slots, batch 1):

* **denoising step** through the project's sampler (``dgls.model.sampler.denoise``: decoder pass, temperature,
  entropy-bound acceptance, sampling, renoise, self-conditioning), a fixed number of steps (early stopping off,
  default 16): ms/step p20/p50/p80, synchronized after every step, and **tokens/s** = canvas slots / the time of
  those fixed steps (the 256-slot rows at 16 steps are the issue's figure);
* the decoder **forward alone**, so the sampler's share of a step is visible;
* **GB/s**: estimated weight bytes one step streams (every non-expert decoder weight, the embedding twice for
  the lm_head and the self-conditioning matmul, and the experts the canvas's tokens touch under uniform top-8
  routing, ``128 (1 - (120/128)^C)`` per layer, at 1 byte per expert weight on the FP8 path) divided by the step
  time, against the **measured** copy bandwidth (a 2 GiB device-to-device copy, read + write); the floor
  ``bytes / bandwidth`` is printed too;
* **AR baseline**: the same weights decoding the same number of tokens greedily, one at a time, with the
  encoder (causal) and its KV cache after the same prefix: ms/token and the total, and how many denoising steps
  fit in that time (diffusion wins when the canvas converges in fewer steps); next to it the AR floor, one
  token's weight bytes (8 of 128 experts per layer) / the measured bandwidth, since an eager per-token loop pays
  launch overheads that an optimized AR server does not, and the fair ratio lies between the two;
* **infill end to end**: a 64-slot canvas with a 32-token pinned suffix after the prefix, timed from token ids
  to the last step: prefix encode + 8 (or 16) fixed steps, p50 of 3 runs after one warm-up;
* **kernel micro-benchmarks** on the step's real shapes: the sampler statistics over (C, V) fp32 logits
  (torch ops vs ``row_stats``), the self-conditioning soft embedding (the model's dense ``softmax(logits) @ E``
  vs ``topk_soft_embedding`` with k = 64, plain and with the uniform-tail correction), and one layer's MoE
  experts for C tokens x top-8 (transformers' experts module vs ``moe_experts`` with bf16 and FP8 weights).

    python benchmarks/gpu_speed.py [--steps 16] [--canvases 64,256] [--prefixes 1024,4096] [--budget-s S]
                                   [--out DIR] [--write]
    python benchmarks/gpu_speed.py --tiny --device cpu     # smoke test of this script on a CPU; not a result
    python benchmarks/gpu_speed.py --layers 2 --device cpu --steps 1 --warmup 0 --canvases 4 --prefixes 1100 \
        --infill-steps 1 --infill-canvas 4 --infill-suffix 2   # the real widths on a CPU (~10 GB RAM); not a result

``--layers N`` keeps the real widths with N of the 30 layers: on a GPU with less memory than the whole model
needs, per-layer costs scale; on a CPU it runs the real config's code paths (the 1,024-token sliding window,
global head_dim 512, 2 global KV heads, 128 experts, V = 262,144) through every table of this script.

Rows run prefix-major (every path at the first prefix, then the next prefix), so with ``--budget-s`` (no new row
starts after that many seconds; the rest are reported as skipped, with the reason) a short device lease still
gets every path at 1,024 tokens. ``--out DIR`` writes the table and the raw rows there (gpu_speed.md,
gpu_speed.json): what benchmarks/gpu_session.sh brings back from the GPU machine.

Needs a CUDA GPU with about 55 GiB free (bf16 weights ~51 GB, no optimizer, no gradients), e.g. one H100 80GB;
the FP8 rows need another ~23 GB (skipped with the reason when it is not free). Sized for one run in under 10
minutes with the defaults (estimated: the model builds in well under a minute, and about 4 paths x 2 prefixes x 2
canvases x 19 steps, 4 x 2 x 320 AR tokens and 4 x 2 x 2 x 4 infills follow; the script prints its wall time).
``--write`` appends the tables to benchmarks/RESULTS.md with machine, versions, commit and date.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import git_commit, percentile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# reference/diffusiongemma.md §7 (third-party copies of google/gemma-4-26B-A4B config.json; check against the
# real config.json when available)
REAL_TEXT = dict(
    vocab_size=262_144,
    hidden_size=2816,
    num_hidden_layers=30,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    global_head_dim=512,
    num_global_key_value_heads=2,
    intermediate_size=2112,
    num_experts=128,
    top_k_experts=8,
    moe_intermediate_size=704,
    sliding_window=1024,
    final_logit_softcapping=30.0,
)
REAL_PARAMS_B = 25.421  # §7, vision tower (transformers' default) included
TINY_TEXT = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    global_head_dim=32,
    num_experts=4,
    top_k_experts=2,
    moe_intermediate_size=32,
    layer_types=["sliding_attention", "full_attention"],
    sliding_window=64,
)


class BenchError(Exception):
    """A condition the user must fix; printed as one message, no traceback."""


def sync(device: torch.device) -> None:
    """Wait for the device (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int, warmup: int = 2) -> list[float]:
    """Milliseconds of `fn()` per call, synchronized around each call."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Measured device copy bandwidth in GB/s (bytes read + bytes written per second), median of 10."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), device, reps=10, warmup=3)
    return 2 * nbytes / (statistics.median(ms) / 1e3) / 1e9


def build_config(tiny: bool, experts: str | None = None, layers: int | None = None):
    """The 26B-A4B DiffusionGemma config (or the tiny smoke-test one); `experts`: experts implementation;
    `layers`: the real widths with fewer layers (transformers makes the last one full attention)."""
    from transformers import DiffusionGemmaConfig

    from dgls.model.train import TINY_VISION

    kw = {"experts_implementation": experts} if experts else {}
    if tiny:
        return DiffusionGemmaConfig(
            text_config=dict(TINY_TEXT),
            vision_config=TINY_VISION,
            canvas_length=64,
            image_token_id=6,
            boi_token_id=7,
            eoi_token_id=8,
            **kw,
        )
    text = dict(REAL_TEXT, num_hidden_layers=layers or REAL_TEXT["num_hidden_layers"])
    return DiffusionGemmaConfig(text_config=text, canvas_length=256, **kw)


def unique_params(model: torch.nn.Module) -> dict[int, tuple[str, torch.Tensor]]:
    """Parameters by identity (tied tensors once), with their first name."""
    out: dict[int, tuple[str, torch.Tensor]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), (name, p))
    return out


@contextlib.contextmanager
def parameters_on_meta():
    """Parameters created inside go to the meta device (no memory); buffers stay real, with their init values.

    The same trick as accelerate's ``init_empty_weights(include_buffers=False)``: constructors still compute
    their small buffers (rotary frequencies, layer scalars), while no weight is ever allocated.
    """
    register = torch.nn.Module.register_parameter

    def to_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = torch.nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def materialize(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Give every meta parameter real storage on `device`, shared tensors staying shared, then initialize.

    Floating parameters take `dtype`; buffers move to `device` with their values and dtypes (rotary frequencies
    stay fp32). transformers' ``initialize_weights`` then fills the weights on the device (random normal
    matrices, norms, router scales).
    """
    new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(old) -> (old kept alive, new)
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None:
                continue
            if id(p) not in new:
                dt = dtype if p.is_floating_point() else p.dtype
                new[id(p)] = (p, torch.nn.Parameter(torch.empty(p.shape, dtype=dt, device=device), requires_grad=False))
            mod._parameters[name] = new[id(p)][1]
        for name, b in list(mod._buffers.items()):
            if b is None:
                continue
            if id(b) not in new:
                new[id(b)] = (b, b.to(device))
            mod._buffers[name] = new[id(b)][1]
    for mod in model.modules():  # construction marked the modules initialized: run their init again
        mod.__dict__.pop("_is_hf_initialized", None)
    model.initialize_weights()  # each sub-model (text, vision) with its own _init_weights


def build_model(config, device: torch.device, dtype: torch.dtype):
    """Construction with meta parameters (ties included), then materialization on `device`."""
    from transformers import DiffusionGemmaForBlockDiffusion

    with parameters_on_meta():
        model = DiffusionGemmaForBlockDiffusion(config)
    model.tie_weights()  # encoder = decoder weights, lm_head = embedding: one copy of each on the device
    n_bytes = sum(p.numel() for _, p in unique_params(model).values()) * torch.finfo(dtype).bits // 8
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        if n_bytes > free - 2 * 2**30:
            raise BenchError(
                f"the model needs {n_bytes / 1e9:.1f} GB of {dtype} weights plus ~2 GB of working "
                f"memory; the GPU has {free / 1e9:.1f} GB free of {total / 1e9:.1f} GB"
            )
    materialize(model, device, dtype)
    enc = model.model.encoder.language_model.layers[0].self_attn.q_proj.weight
    dec = model.model.decoder.layers[0].self_attn.q_proj.weight
    assert enc is dec, "encoder and decoder weights must stay tied after materialization"
    assert not any(p.is_meta for p in model.parameters()), "a parameter stayed on the meta device"
    return model.eval().requires_grad_(False)


def step_bytes(model, tokens: int, fp8_experts: bool = False) -> dict[str, float]:
    """Weight bytes one decoder pass over `tokens` canvas slots streams, and one AR token (uniform routing).

    `fp8_experts`: the experts are read as float8_e4m3fn (1 byte per weight; the per-channel scales, 1/H of
    that, are left out).
    """
    tc = model.config.get_text_config(decoder=True)
    E, k = tc.num_experts, tc.top_k_experts
    distinct = E * (1 - (1 - k / E) ** tokens)  # expected experts touched per layer
    dec = model.model.decoder
    seen: set[int] = set()
    expert = other = emb = 0
    for name, p in dec.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        b = p.numel() * p.element_size()
        if p is dec.embed_tokens.weight:
            emb += b
        elif ".experts." in name:
            expert += p.numel() if fp8_experts else b
        else:
            other += b
    return {
        "step": other + 2 * emb + expert * distinct / E,  # lm_head and SC matmul both read the embedding
        "ar_token": other + emb + expert * k / E,  # one token: lm_head once, its top-k experts
        "distinct_experts": distinct,
        "experts": expert,
    }


def torch_row_stats(logits: torch.Tensor, t: torch.Tensor):
    """The sampler's torch statistics over every slot (upper bound: every slot sampled)."""
    from dgls.model.sampler import entropy

    scaled = logits / t
    argmax = scaled.argmax(-1)
    H = entropy(scaled)
    lp = torch.log_softmax(logits, dim=-1).gather(-1, argmax[:, None])
    sample = torch.multinomial(torch.softmax(scaled, dim=-1), 1)
    return H, argmax, lp, sample


def dense_soft_embedding(sc: torch.Tensor, E: torch.Tensor, scale: float) -> torch.Tensor:
    """The model's self-conditioning expression (modeling_diffusion_gemma L1253-1256)."""
    return torch.matmul(sc.softmax(dim=-1, dtype=torch.float32).to(E.dtype), E) * scale


@torch.no_grad()
def run_denoise(model, cache, C: int, steps: int, warmup: int, kernels: bool) -> list[float]:
    """ms per denoising step (after `warmup` steps) through dgls.model.sampler.denoise, synchronized per step."""
    from dgls.model.backend import DiffusionGemmaDenoiser
    from dgls.model.canvas import Canvas
    from dgls.model.sampler import SamplerConfig, denoise

    os.environ["DGLS_KERNELS"] = "1" if kernels else "0"
    device = model.device
    denoiser = DiffusionGemmaDenoiser(model, cache)
    gen = torch.Generator(device=device).manual_seed(0)
    canvas = Canvas.build([C], [], denoiser.prefix_len, lambda s: denoiser.noise(s, gen), device=device)
    # confidence_threshold 0: never confident, so every row runs all the steps
    cfg = SamplerConfig(max_steps=warmup + steps, confidence_threshold=0.0, stability_threshold=0)
    stamps: list[float] = []

    def on_step(step: int, total: int) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    sync(device)
    stamps.append(time.perf_counter())
    res = denoise(denoiser, canvas, cfg, generator=gen, on_step=on_step)
    assert res.steps == warmup + steps, f"expected {warmup + steps} steps, ran {res.steps}"
    ms = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:], strict=False)]
    return ms[warmup:]


@torch.no_grad()
def run_ar(model, cache, n: int) -> list[float]:
    """ms per token of greedy AR decoding of `n` tokens after the cached prefix (encoder + lm_head + soft-cap)."""
    from dgls.model.backend import fork

    device = model.device
    cap = model.config.get_text_config(decoder=True).final_logit_softcapping
    cache = fork(cache)  # the prefix cache stays as it is for the other runs
    start = cache.get_seq_length()
    ids = torch.zeros(1, 1, dtype=torch.long, device=device)
    out = []
    for i in range(n):
        sync(device)
        t0 = time.perf_counter()
        pos = torch.full((1, 1), start + i, dtype=torch.long, device=device)
        h = model.model.encoder(input_ids=ids, past_key_values=cache, position_ids=pos).last_hidden_state[:, -1]
        logits = model.lm_head(h).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ids = logits.argmax(-1, keepdim=True)
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out[2:] if n > 4 else out  # the first tokens pay warm-up


@torch.no_grad()
def run_infill(model, prefix: torch.Tensor, C: int, suffix_len: int, steps: int, reps: int = 3) -> list[float]:
    """ms for one infill from token ids: encode `prefix` (1, P), then `steps` fixed denoising steps of a canvas
    with C free slots and `suffix_len` pinned suffix tokens (p50 material: `reps` runs after one warm-up)."""
    from dgls.model.backend import DiffusionGemmaDenoiser, encode
    from dgls.model.canvas import Canvas
    from dgls.model.sampler import SamplerConfig, denoise

    device = model.device
    V = model.config.get_text_config(decoder=True).vocab_size
    suffix = torch.randint(0, V, (suffix_len,), generator=torch.Generator().manual_seed(1)).tolist()
    cfg = SamplerConfig(max_steps=steps, confidence_threshold=0.0, stability_threshold=0)

    def once() -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        den = DiffusionGemmaDenoiser(model, encode(model, prefix))
        canvas = Canvas.build([C], suffix, den.prefix_len, lambda s: den.noise(s, gen), device=device)
        res = denoise(den, canvas, cfg, generator=gen)
        assert res.steps == steps, f"expected {steps} steps, ran {res.steps}"

    return timed(once, device, reps=reps, warmup=1)


def micro(model, C: int, device: torch.device, kernels_ok: bool, reps: int = 20) -> list[dict]:
    """Kernel vs torch on the step's real shapes: sampler statistics and the self-conditioning soft embedding."""
    V = model.config.get_text_config(decoder=True).vocab_size
    E = model.model.decoder.embed_tokens.weight  # (V, H) bf16
    scale = float(model.model.decoder.embed_tokens.embed_scale)
    H = E.shape[1]
    logits = (torch.randn(C, V, device=device) * 3).clamp(-30, 30)  # fp32, like the decoder's output
    t = torch.tensor(0.6)
    rows = []
    torch_ms = timed(lambda: torch_row_stats(logits, t), device, reps=reps)
    k_ms = None
    if kernels_ok:
        from dgls.kernels.canvas_sampler import row_stats

        k_ms = timed(lambda: row_stats(logits, 0.6, seed=1), device, reps=reps)
    # bytes: the logits read once; torch's (C, V) temporaries are its extra cost, not counted
    rows.append(
        {
            "op": "sampler statistics (entropy, argmax, confidence, sample)",
            "C": C,
            "bytes_torch": C * V * 4,
            "bytes_kernel": C * V * 4,
            "torch_ms": percentile(torch_ms, 50),
            "kernel_ms": k_ms and percentile(k_ms, 50),
        }
    )
    k = min(64, V)
    dense_ms = timed(lambda: dense_soft_embedding(logits, E, scale), device, reps=reps)
    dense_bytes = V * H * E.element_size() + C * V * (4 + 2)  # E once, logits read, bf16 probabilities written
    for tail in (False, True):
        k_ms = None
        if kernels_ok:
            from dgls.kernels.soft_embedding import topk_soft_embedding
            from dgls.kernels.soft_embedding_ref import embedding_sum

            e_sum = embedding_sum(E) if tail else None  # once per model, outside the timing
            k_ms = timed(
                lambda e_sum=e_sum: topk_soft_embedding(logits, E, k, scale=scale, e_sum=e_sum), device, reps=reps
            )
        rows.append(
            {
                "op": f"self-conditioning soft embedding (dense vs top-{k}{' + uniform tail' if tail else ''})",
                "C": C,
                "bytes_torch": dense_bytes,
                "bytes_kernel": C * V * 4 * (2 if tail else 1) + C * k * H * 2,
                "torch_ms": percentile(dense_ms, 50),
                "kernel_ms": k_ms and percentile(k_ms, 50),
            }
        )
    return rows


def micro_moe(model, C: int, device: torch.device, moe_ok: bool, reps: int = 20) -> list[dict]:
    """One decoder layer's experts for C tokens x top-k: transformers' module as-is vs moe_experts (bf16, FP8)."""
    from dgls.kernels import moe

    experts = model.model.decoder.layers[0].experts
    tc = model.config.get_text_config(decoder=True)
    E, K = tc.num_experts, tc.top_k_experts
    H, I = experts.down_proj.shape[1:]  # noqa: E741
    dtype = experts.down_proj.dtype
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(C, H, device=device, generator=g).to(dtype)
    scores = torch.randn(C, E, device=device, generator=g)  # uniform routing: top-k of random scores
    w, ids = torch.softmax(scores, -1).topk(K, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    touched = int(ids.unique().numel())
    per_expert = experts.gate_up_proj[0].numel() + experts.down_proj[0].numel()  # weights of one expert
    act = 2 * C * H * x.element_size()  # x read, out written
    with torch.no_grad():
        torch_ms = percentile(timed(lambda: experts(x, ids, w), device, reps=reps), 50)
    name = f"MoE experts, 1 layer: {C} tokens x top-{K}, {E} x {I}, H {H} ({touched} experts touched)"
    rows = []
    for fp8 in (False, True):
        k_ms = None
        if moe_ok and (not fp8 or moe.fp8_supported(device)):
            weights = moe.quantize_experts_fp8(experts.gate_up_proj, experts.down_proj) if fp8 else None
            if fp8:
                k_ms = timed(lambda weights=weights: moe.moe_experts(x, ids, w, weights), device, reps=reps)
            else:
                k_ms = timed(
                    lambda: moe.moe_experts(x, ids, w, experts.gate_up_proj, experts.down_proj), device, reps=reps
                )
            k_ms = percentile(k_ms, 50)
        rows.append(
            {
                "op": f"{name}, kernel {'fp8' if fp8 else dtype_name(dtype)} weights",
                "C": C,
                "bytes_torch": touched * per_expert * experts.down_proj.element_size() + act,
                "bytes_kernel": touched * per_expert * (1 if fp8 else experts.down_proj.element_size()) + act,
                "torch_ms": torch_ms,
                "kernel_ms": k_ms,
            }
        )
    return rows


def dtype_name(dtype: torch.dtype) -> str:
    """'bf16' for torch.bfloat16, and so on."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def machine(device: torch.device) -> dict:
    """Where and with what this ran."""
    import transformers

    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        triton_v = None
    gpu = "cpu"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"
    return {
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_v,
        "transformers": transformers.__version__,
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def fmt(x: float | None, spec: str = ".2f") -> str:
    """A number, or '-' when not measured."""
    return "-" if x is None else format(x, spec)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running the model: the sampler-statistics kernel on or off, the experts on the MoE kernel."""

    name: str
    sampler: bool  # DGLS_KERNELS=1: the sampler takes the fused statistics kernel when usable
    moe: str | None  # None: transformers' experts; "bf16" / "fp8": patch_moe_experts


PATHS = (
    Variant("transformers", False, None),
    Variant("dgls: sampler", True, None),
    Variant("dgls: sampler + MoE bf16", True, "bf16"),
    Variant("dgls: sampler + MoE fp8", True, "fp8"),
)


def skip_reason(path: Variant, model, device: torch.device, moe_forced: bool) -> str | None:
    """Why `path` cannot run here (None when it can)."""
    from dgls import kernels

    sampler = kernels.status("canvas_sampler")
    if path.sampler and path.moe is None and not sampler.usable:
        return sampler.why
    if path.moe:
        st = kernels.status("moe_experts")
        if not (st.usable or moe_forced):
            return st.why
        from dgls.kernels import moe

        if path.moe == "fp8" and not moe.fp8_supported(device):
            return "FP8 weights need compute capability 8.9+ (float8_e4m3fn tiles)"
        if path.moe == "fp8" and device.type == "cuda":
            need = step_bytes(model, 1, fp8_experts=True)["experts"] + 4 * 2**30  # the copy + quantize temps
            free = torch.cuda.mem_get_info(device)[0]
            if free < need:
                return f"the FP8 copy of the experts needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free"
    return None


@contextlib.contextmanager
def on_path(model, path: Variant, moe_forced: bool):
    """Patch the experts for `path` (and undo it after); the sampler switch is run_denoise's `kernels`."""
    patch = None
    if path.moe:
        from dgls.model.experts import patch_moe_experts

        os.environ.pop("DGLS_KERNELS", None)  # the registry must see the kernel as it is
        patch = patch_moe_experts(model, fp8=path.moe == "fp8", require_usable=not moe_forced)
    try:
        yield
    finally:
        if patch is not None:
            patch.undo()
        os.environ.pop("DGLS_KERNELS", None)


class Budget:
    """The run's time budget (``--budget-s``): rows that would start after it are reported as skipped."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.t0 = time.perf_counter()
        self.interrupted = False

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    @contextlib.contextmanager
    def guard(self):
        """Around one row: Ctrl-C or SIGINT (the session's time limit) ends the row and marks the run interrupted,
        so the rows after it are reported as skipped and the tables are still written."""
        try:
            yield
        except KeyboardInterrupt:
            self.interrupted = True
            print(f"[{self.elapsed():.0f} s] interrupted: the rows left are reported as skipped", flush=True)

    def spent(self) -> str | None:
        """Why no new row may start (None while time is left)."""
        if self.interrupted:
            return "not run: the run was interrupted (SIGINT, as the session's time limit sends)"
        if self.seconds is not None and self.elapsed() > self.seconds:
            return f"not run: the --budget-s {self.seconds:.0f} s of this run was spent"
        return None


def not_run_row(model, bw: float, P: int, C: int, path: Variant, label: str) -> dict:
    """A table row for a (prefix, canvas, path) that was not measured: its bytes and floor, no timings."""
    nbytes = step_bytes(model, C, fp8_experts=path.moe == "fp8")
    return {
        "prefix": P,
        "C": C,
        "path": label,
        "p20": None,
        "p50": None,
        "p80": None,
        "fwd_p50": None,
        "sampler_ms": None,
        "gb": nbytes["step"] / 1e9,
        "gbps": None,
        "pct_bw": None,
        "floor_ms": nbytes["step"] / (bw * 1e9) * 1e3,
        "tok_s": None,
        "ar_ms": None,
        "ar_total": None,
        "steps_in_ar": None,
        "ar_floor_ms": nbytes["ar_token"] / (bw * 1e9) * 1e3,
    }


def not_run_infill(P: int, steps: int, label: str) -> dict:
    """An infill row that was not measured."""
    return {"prefix": P, "steps": steps, "path": label, "p50": None, "min": None, "max": None}


def report(
    info: dict,
    args,
    params: int,
    bw: float,
    prefill_ms: dict[int, float],
    rows: list[dict],
    infill_rows: list[dict],
    micro_rows: list[dict],
    kernel_status: str,
    wall_s: float,
) -> str:
    """The markdown section for RESULTS.md."""
    prefill = ", ".join(f"{P} tokens {ms:.0f} ms" for P, ms in prefill_ms.items())
    out = [
        f"\n## GPU speed, DiffusionGemma {shape_name(args)}, "
        f"random {'bf16' if info['gpu'] != 'cpu' else 'fp32'} weights ({info['date']})\n",
        f"- Machine: {info['gpu']}; measured copy bandwidth {bw:.0f} GB/s (2 GiB device copy, read + write)",
        f"- Versions: Python {info['python']}, torch {info['torch']} (CUDA {info['cuda']}), triton {info['triton']}, "
        f"transformers {info['transformers']}",
        f"- Commit: {info['commit']}",
        f"- Model: {params / 1e9:.3f} B parameters ({params:,}; reference/diffusiongemma.md §7: {REAL_PARAMS_B} B), "
        f"experts implementation `{info['experts']}` on the transformers path; prefill (transformers) {prefill}; "
        f"batch 1, canvas all free; {args.steps} measured steps after {args.warmup} warm-up, early stop off; "
        f"run wall time {wall_s:.0f} s",
        f"- Kernels: {kernel_status}",
        f"- Command: `python benchmarks/gpu_speed.py {' '.join(sys.argv[1:])}`",
        "- GB/s: estimated weight bytes per step (non-expert decoder weights, embedding twice, experts touched under "
        "uniform top-8 routing, 1 byte per expert weight on the fp8 path) / step time; floor = those bytes / "
        f"measured bandwidth; tok/s = canvas slots / the time of the {args.steps} fixed steps; AR floor = the weight "
        "bytes of one AR token (non-expert weights, the embedding once, 8 of 128 experts) / measured bandwidth: what "
        "a fully optimized AR decoder could reach, against which the measured eager AR loop can be read",
        "",
        f"| prefix | canvas | path | ms/step p20 / p50 / p80 | decoder forward p50 ms | sampler share p50 ms "
        f"| weight GB/step | GB/s (p50) | % of copy BW | floor ms | tok/s at {args.steps} steps | AR ms/token p50 "
        "| AR floor ms/token | AR ms for C tokens | steps in AR time |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['prefix']} | {r['C']} | {r['path']} "
            f"| {fmt(r['p20'], '.1f')} / {fmt(r['p50'], '.1f')} / {fmt(r['p80'], '.1f')} "
            f"| {fmt(r['fwd_p50'], '.1f')} | {fmt(r['sampler_ms'], '.1f')} | {r['gb']:.1f} | {fmt(r['gbps'], '.0f')} "
            f"| {fmt(r['pct_bw'], '.0f')} | {r['floor_ms']:.1f} | {fmt(r['tok_s'], '.0f')} | {fmt(r['ar_ms'], '.1f')} "
            f"| {r['ar_floor_ms']:.2f} | {fmt(r['ar_total'], '.0f')} | {fmt(r['steps_in_ar'], '.1f')} |"
        )
    out += [
        "",
        f"Infill end to end: prefix encode + fixed steps of a {args.infill_canvas}-slot canvas with a "
        f"{args.infill_suffix}-token pinned suffix, from token ids (p50 of 3 after one warm-up).",
        "",
        "| prefix | steps | path | ms p50 | min / max ms |",
        "|---:|---:|---|---:|---|",
    ]
    for r in infill_rows:
        out.append(
            f"| {r['prefix']} | {r['steps']} | {r['path']} | {fmt(r['p50'], '.0f')} "
            f"| {fmt(r['min'], '.0f')} / {fmt(r['max'], '.0f')} |"
        )
    out += [
        "",
        "| op | C | torch ms p50 | kernel ms p50 | torch GB/s | kernel GB/s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in micro_rows:
        k_ms = m["kernel_ms"]
        out.append(
            f"| {m['op']} | {m['C']} | {m['torch_ms']:.3f} | {fmt(k_ms, '.3f')} "
            f"| {m['bytes_torch'] / m['torch_ms'] / 1e6:.0f} "
            f"| {fmt(k_ms and m['bytes_kernel'] / k_ms / 1e6, '.0f')} "
            f"| {fmt(k_ms and m['torch_ms'] / k_ms, '.2f')} |"
        )
    return "\n".join(out) + "\n"


def shape_name(args) -> str:
    """What model the run measured, for the report's title."""
    if args.tiny:
        return "TINY smoke config"
    if args.layers and args.layers != REAL_TEXT["num_hidden_layers"]:
        return f"26B-A4B widths with {args.layers} of {REAL_TEXT['num_hidden_layers']} layers"
    return "26B-A4B shape"


def ints(text: str) -> list[int]:
    """'64,256' -> [64, 256]."""
    return [int(c) for c in text.split(",") if c.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked: a BenchError names the first option that cannot work here."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16, help="measured denoising steps per canvas and path")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--canvases", default="64,256")
    p.add_argument("--prefixes", default="1024,4096", help="prefix lengths in tokens, each encoded once")
    p.add_argument("--infill-steps", default="8,16", help="fixed step counts of the end-to-end infill rows")
    p.add_argument("--infill-canvas", type=int, default=64, help="free slots of the end-to-end infill canvas")
    p.add_argument("--infill-suffix", type=int, default=32, help="pinned suffix tokens of the infill canvas")
    p.add_argument("--experts", default=None, help="experts implementation (transformers default if unset)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random model: a smoke test of this script, CPU allowed")
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="the real widths with this many of the 30 layers (a GPU with less memory; on a CPU, a check "
        "of this script at the real widths: not a result)",
    )
    p.add_argument(
        "--moe-interpret",
        action="store_true",
        help="smoke test only (--tiny --device cpu): run the MoE rows on Triton's interpreter",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new row after this many seconds (the rest are reported as skipped)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the table (gpu_speed.md) and the raw rows (gpu_speed.json) into this folder",
    )
    p.add_argument("--write", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> torch.device:
    """The device the run uses, after every option was checked against it (BenchError otherwise)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(
            f"this benchmark needs a CUDA GPU and found none (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); a smoke test of the script runs with --tiny --device cpu"
        )
    if args.layers is not None and not 1 <= args.layers <= REAL_TEXT["num_hidden_layers"]:
        raise BenchError(f"--layers must be 1 to {REAL_TEXT['num_hidden_layers']}, got {args.layers}")
    if args.layers is not None and args.tiny:
        raise BenchError("--layers is for the real widths, --tiny for the tiny model: one or the other")
    if device.type != "cuda" and not (args.tiny or args.layers):
        raise BenchError(
            f"--device {args.device}: the real 26B shape runs only on a CUDA GPU (use --tiny for a "
            "smoke test, or --layers N for the real widths with fewer layers)"
        )
    if (args.tiny or device.type != "cuda") and args.write:
        raise BenchError("--tiny and CPU runs check the script; their numbers do not go into RESULTS.md")
    if args.moe_interpret and (not args.tiny or device.type != "cpu"):
        raise BenchError("--moe-interpret is for the --tiny --device cpu smoke test only")
    return device


def prefill(model, prefixes: list[int], device: torch.device) -> tuple[dict, dict, dict[int, float]]:
    """Random prefixes of each length, their caches (encoded once, reused by every row) and the ms it took."""
    from dgls.model.backend import encode

    V = model.config.get_text_config(decoder=True).vocab_size
    gen = torch.Generator(device=device).manual_seed(0)
    prefix_ids = {P: torch.randint(0, V, (1, P), device=device, generator=gen) for P in prefixes}
    caches, prefill_ms = {}, {}
    for P in prefixes:
        sync(device)
        t0 = time.perf_counter()
        caches[P] = encode(model, prefix_ids[P])
        sync(device)
        prefill_ms[P] = (time.perf_counter() - t0) * 1e3
    return prefix_ids, caches, prefill_ms


def kernel_report(moe_interpret: bool) -> tuple[bool, bool, str]:
    """(sampler kernels usable, MoE kernel usable or forced, the registry in words)."""
    from dgls import kernels

    os.environ.pop("DGLS_KERNELS", None)
    kernels_ok = kernels.usable("canvas_sampler") and kernels.usable("soft_embedding")
    moe_ok = kernels.usable("moe_experts") or moe_interpret
    kernel_status = "; ".join(
        f"{s.name}: {'usable' if s.usable else 'not usable'} ({s.why})" for s in kernels.registry()
    )
    if moe_interpret:
        kernel_status += "; moe_experts forced on Triton's interpreter (--moe-interpret smoke test)"
    return kernels_ok, moe_ok, kernel_status


class Results:
    """The rows measured so far, and the report made of them."""

    def __init__(
        self, info: dict, args, params: int, bw: float, prefill_ms: dict[int, float], kernel_status: str, budget: Budget
    ):
        self.info, self.args, self.params, self.bw = info, args, params, bw
        self.prefill_ms, self.kernel_status, self.budget = prefill_ms, kernel_status, budget
        self.rows: list[dict] = []
        self.infill: list[dict] = []
        self.micro: list[dict] = []

    def save(self) -> tuple[str, str]:
        """The report and the raw rows so far; with --out, also written there (after every row: a run cut short
        keeps the rows it has)."""
        wall_s = time.perf_counter() - self.budget.t0
        text = report(
            self.info,
            self.args,
            self.params,
            self.bw,
            self.prefill_ms,
            self.rows,
            self.infill,
            self.micro,
            self.kernel_status,
            wall_s,
        )
        raw = json.dumps(
            {
                "bench": "gpu_speed",
                **self.info,
                "bandwidth_gbps": self.bw,
                "prefill_ms": self.prefill_ms,
                "rows": self.rows,
                "infill": self.infill,
                "micro": self.micro,
                "wall_s": wall_s,
                "interrupted": self.budget.interrupted,
            }
        )
        out = self.args.out
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_speed.md").write_text(text)
            (out / "gpu_speed.json").write_text(raw + "\n")
        return text, raw

    def done(self, row: dict | list) -> None:
        """Print a finished row (or rows) and save."""
        print(f"[{self.budget.elapsed():.0f} s] {json.dumps(row)}", flush=True)
        self.save()


def step_row(
    model,
    cache,
    P: int,
    C: int,
    path: Variant,
    name: str,
    args,
    bw: float,
    device: torch.device,
    ar_runs: dict[tuple, list[float]],
) -> dict:
    """One canvas row: the decoder pass alone, the whole denoising step, and AR decoding of as many tokens."""
    from dgls.model.backend import DiffusionGemmaDenoiser
    from dgls.model.canvas import Canvas

    V = model.config.get_text_config(decoder=True).vocab_size
    row = not_run_row(model, bw, P, C, path, name)  # bytes and floors; the timings follow
    key = (path.moe, P, C)
    if key not in ar_runs:
        ar_runs[key] = run_ar(model, cache, C)
    ar_ms = percentile(ar_runs[key], 50)
    den = DiffusionGemmaDenoiser(model, cache)
    canvas = Canvas.build([C], [], den.prefix_len, lambda s, den=den: den.noise(s, None), device=device)
    sc = torch.randn(1, C, V, device=device)
    with torch.no_grad():
        if not bool(torch.isfinite(den(canvas, sc)).all()):  # NaN would trip the multinomial
            raise BenchError(
                f"{name}: the random-weight model produced non-finite logits; the "
                "timings would be meaningless (check the init in materialize())"
            )
        fwd = timed(lambda den=den, canvas=canvas, sc=sc: den(canvas, sc), device, reps=args.steps, warmup=args.warmup)
    ms = run_denoise(model, cache, C, args.steps, args.warmup, kernels=path.sampler)
    p50 = percentile(ms, 50)
    gbps = row["gb"] / (p50 / 1e3)
    row.update(
        p20=percentile(ms, 20),
        p50=p50,
        p80=percentile(ms, 80),
        fwd_p50=percentile(fwd, 50),
        sampler_ms=p50 - percentile(fwd, 50),
        gbps=gbps,
        pct_bw=100 * gbps / bw,
        tok_s=C / (sum(ms) / 1e3),
        ar_ms=ar_ms,
        ar_total=ar_ms * C,
        steps_in_ar=ar_ms * C / p50,
    )
    return row


def run_path(
    model,
    P: int,
    path: Variant,
    args,
    bw: float,
    device: torch.device,
    cache,
    prefix: torch.Tensor,
    res: Results,
    ar_runs: dict[tuple, list[float]],
) -> None:
    """Every canvas row and every infill row of one path at prefix length P."""
    from dgls import kernels

    budget = res.budget
    name = path.name
    if path.sampler and not kernels.usable("canvas_sampler"):
        name += " (sampler kernel not usable: torch statistics)"
    with on_path(model, path, args.moe_interpret):
        for C in ints(args.canvases):
            if why := budget.spent():
                res.rows.append(not_run_row(model, bw, P, C, path, f"{name}: skipped ({why})"))
                continue
            with budget.guard():
                res.rows.append(step_row(model, cache, P, C, path, name, args, bw, device, ar_runs))
                res.done(res.rows[-1])
        for n in ints(args.infill_steps):
            if why := budget.spent():
                res.infill.append(not_run_infill(P, n, f"{name}: skipped ({why})"))
                continue
            os.environ["DGLS_KERNELS"] = "1" if path.sampler else "0"
            with budget.guard():
                inf = run_infill(model, prefix, args.infill_canvas, args.infill_suffix, n)
                res.infill.append(
                    {
                        "prefix": P,
                        "steps": n,
                        "path": name,
                        "p50": percentile(inf, 50),
                        "min": min(inf),
                        "max": max(inf),
                    }
                )
                res.done(res.infill[-1])
            os.environ.pop("DGLS_KERNELS", None)


def main(argv: list[str] | None = None) -> int:
    """Measure every path at every prefix and canvas, then the kernel micro-benchmarks; print (and write) the report."""
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    device = check_args(args)
    if args.moe_interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels module defines its kernels (imported below)
    canvases, prefixes, infill_steps = ints(args.canvases), ints(args.prefixes), ints(args.infill_steps)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)

    bw = copy_bandwidth(device, 2**31 if device.type == "cuda" else 2**26)
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    t0 = time.perf_counter()
    model = build_model(build_config(args.tiny, args.experts, args.layers), device, dtype)
    params = sum(p.numel() for _, p in unique_params(model).values())
    print(f"model: {params / 1e9:.3f} B params built in {time.perf_counter() - t0:.1f} s", flush=True)
    prefix_ids, caches, prefill_ms = prefill(model, prefixes, device)
    kernels_ok, moe_ok, kernel_status = kernel_report(args.moe_interpret)
    print(kernel_status, flush=True)

    info = machine(device)
    info["experts"] = getattr(model.config, "_experts_implementation", None) or args.experts or "default"
    res = Results(info, args, params, bw, prefill_ms, kernel_status, budget)
    ar_runs: dict[tuple, list[float]] = {}  # AR does not use the sampler: one run per experts path
    reasons = {path: skip_reason(path, model, device, args.moe_interpret) for path in PATHS}
    for path, why in reasons.items():
        if why:
            print(f"{path.name}: skipped ({why})", flush=True)
    # prefix-major: if the budget runs out, every path has its rows at the first prefix
    for P in prefixes:
        for path in PATHS:
            if why := reasons[path] or budget.spent():
                skipped = f"{path.name}: skipped ({why})"
                res.rows += [not_run_row(model, bw, P, C, path, skipped) for C in canvases]
                res.infill += [not_run_infill(P, n, skipped) for n in infill_steps]
                continue
            run_path(model, P, path, args, bw, device, caches[P], prefix_ids[P], res, ar_runs)
    for C in canvases:
        if why := budget.spent():
            print(f"kernel micro-benchmarks at C={C}: skipped ({why})", flush=True)
            continue
        reps = 20 if device.type == "cuda" else 3  # a CPU run checks the script: every op runs, no more
        with budget.guard():
            res.micro += micro(model, C, device, kernels_ok, reps) + micro_moe(model, C, device, moe_ok, reps)
            res.done(res.micro[-5:])

    text, raw = res.save()
    print(text)
    if device.type != "cuda":
        print("(a CPU run checks this script; these numbers are not results)")
    if args.write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        with results.open("a") as fh:
            fh.write(text)
    print(raw)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"gpu_speed.py: {exc}", file=sys.stderr)
        sys.exit(2)
    except torch.cuda.OutOfMemoryError as exc:
        print(
            f"gpu_speed.py: out of GPU memory ({str(exc).splitlines()[0]}); try fewer/smaller --canvases or --prefixes",
            file=sys.stderr,
        )
        sys.exit(1)
