"""The kernel registry that `dgls doctor` and the sampler consult."""

from __future__ import annotations

import importlib

import pytest
import torch

import dgls.kernels as kernels


def test_registry_lists_every_kernel_with_a_reason():
    statuses = kernels.registry()
    assert [s.name for s in statuses] == list(kernels.KERNELS) == ["canvas_sampler", "soft_embedding", "moe_experts"]
    assert all(s.why for s in statuses)
    for info in kernels.KERNELS.values():
        importlib.import_module(info.reference)  # every kernel names an importable reference


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_cpu_runs_the_torch_reference_path():
    ok, why = kernels.availability()
    assert ok is False and "torch reference path runs" in why and "canvas_sampler" in why
    assert not any(kernels.usable(name) for name in kernels.KERNELS)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.status("nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU answer is tested above)")
def test_every_kernel_is_usable_on_this_gpu():
    ok, why = kernels.availability()
    assert ok, why
    assert all(kernels.usable(name) for name in kernels.KERNELS)


def test_self_checks_pass_on_this_device():
    # on CPU the kernels run in Triton's interpreter (see conftest): this exercises the load-time check itself
    from dgls.kernels import canvas_sampler, moe, soft_embedding

    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert canvas_sampler.self_check(device) is None
    assert soft_embedding.self_check(device) is None
    assert moe.self_check(device) is None
