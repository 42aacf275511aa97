"""The sampler's hook into the fused kernel: never taken on CPU; when taken, the loop behaves the same."""

from __future__ import annotations

import pytest
import torch

import dgls.kernels as kernels
import dgls.model.sampler as sampler
from dgls.kernels.canvas_sampler import row_stats
from dgls.model.canvas import Canvas
from dgls.model.sampler import SamplerConfig, denoise

V = 40
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Scripted:
    """Logits with `margin` nats on a target token per slot (fewer on the last slots: they stay uncertain)."""

    vocab_size = V

    def __init__(self, target: torch.Tensor):
        self.target = target

    def __call__(self, canvas, sc):
        B, C = canvas.tokens.shape
        logits = torch.randn(B, C, V, generator=torch.Generator().manual_seed(len(canvas.tokens.flatten())))
        margin = torch.full((B, C, 1), 25.0)
        margin[:, -3:] = 2.0
        return logits.scatter_add(-1, self.target[..., None], margin)

    def noise(self, shape, generator=None):
        return torch.randint(10, V, shape, generator=generator)


def make_canvas():
    g = torch.Generator().manual_seed(0)
    return Canvas.build((7, 5), (3, 4), 9, lambda s: torch.randint(10, V, s, generator=g))


def test_hook_is_never_taken_on_cpu(monkeypatch):
    monkeypatch.setattr(kernels, "usable", lambda name: True)
    assert sampler.fused_row_stats(torch.randn(6, V), torch.tensor(0.5), None) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hook_is_taken_on_cuda():
    logits = torch.randn(6, V, device="cuda") * 4
    got = sampler.fused_row_stats(logits, torch.tensor(0.5), None)
    assert got is not None, kernels.status("canvas_sampler").why
    H, argmax, logp, sample = got
    assert H.shape == argmax.shape == logp.shape == sample.shape == (6,)
    assert torch.equal(argmax, logits.argmax(-1))


def test_denoise_through_the_kernel_statistics_matches_the_torch_path(monkeypatch):
    target = torch.randint(10, V, (2, 9))
    cfg = SamplerConfig(max_steps=4, confidence_threshold=0.0)  # never confident: all 4 steps run
    want = denoise(Scripted(target), make_canvas(), cfg, generator=torch.Generator().manual_seed(1))

    calls = []

    def kernel_stats(logits, t, generator):  # the CUDA branch (Triton's interpreter on a CPU-only machine)
        st = row_stats(logits.to(DEVICE), float(t), seed=len(calls))  # the free slots' (N, V)
        calls.append(st)
        return tuple(x.cpu() for x in st)

    monkeypatch.setattr(sampler, "fused_row_stats", kernel_stats)
    canvas = make_canvas()
    got = denoise(Scripted(target), canvas, cfg, generator=torch.Generator().manual_seed(1))
    assert len(calls) == got.steps == want.steps == 4
    assert torch.equal(got.tokens, want.tokens)  # argmax canvas: exact
    assert (got.confidence - want.confidence).abs().max() < 1e-5
    assert (got.score - want.score).abs().max() < 1e-5
    assert canvas.tokens[canvas.pinned].tolist() == [3, 4, 3, 4]  # pinned suffix untouched
    confident = canvas.free.clone()
    confident[:, -3:] = False
    # confident free slots were accepted at the last step and hold the kernel's sample: the target
    assert torch.equal(canvas.tokens[confident], target[confident])
