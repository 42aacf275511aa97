"""Loading checkpoints: good ones through the real path, and every kind of bad one with a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dgls.model import loading
from dgls.model.loading import ModelLoadError, load_model, resolve_checkpoint


@pytest.fixture()
def copy_of(tiny_checkpoint, tmp_path):
    def make(name="ckpt"):
        dst = tmp_path / name
        shutil.copytree(tiny_checkpoint, dst)
        return dst

    return make


def test_good_checkpoint_round_trips_exactly(tiny_checkpoint, tiny_loaded):
    from safetensors.torch import load_file

    saved = load_file(tiny_checkpoint / "model.safetensors")
    state = tiny_loaded.model.state_dict()
    for key, tensor in saved.items():
        assert torch.equal(state[key], tensor), key
    assert tiny_loaded.device.type == "cpu" and tiny_loaded.dtype == torch.float32
    spec = tiny_loaded.spec
    assert (spec.bos_id, spec.eos_id, spec.pad_id, spec.filler_id, spec.noise_low) == (2, 1, 0, 4, 9)
    assert spec.canvas_lengths == (8, 16) and spec.sampler.max_steps == 12
    assert tiny_loaded.tokenizer.decode(tiny_loaded.tokenizer("x = 1\n")["input_ids"]) == "x = 1\n"


def test_dtype_override_and_auto(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loading.pick_dtype(None, torch.device("cpu")) == torch.float32
    assert loading.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found: .*nope"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_wrong_architecture(copy_of):
    ckpt = copy_of()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelLoadError, match="not a DiffusionGemma model.*LlamaForCausalLM"):
        load_model(ckpt)


def test_pickle_only_checkpoint_is_refused(copy_of):
    ckpt = copy_of()
    (ckpt / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, ckpt / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="only pickle weights.*pytorch_model.bin.*safetensors only"):
        load_model(ckpt)


def test_truncated_safetensors(copy_of):
    ckpt = copy_of()
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated safetensors file .*model.safetensors"):
        load_model(ckpt)


@pytest.mark.parametrize("payload", [b"", b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}", b"\xff" * 64])
def test_corrupt_safetensors(copy_of, payload):
    ckpt = copy_of()
    (ckpt / "model.safetensors").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="corrupt safetensors file"):
        load_model(ckpt)


def test_missing_shard(copy_of):
    ckpt = copy_of()
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match="incomplete.*model-00002.safetensors"):
        load_model(ckpt)


def test_no_tokenizer(copy_of):
    ckpt = copy_of()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        load_model(ckpt)


def test_too_large_for_the_device(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(loading, "available_memory", lambda device: 1024)
    with pytest.raises(ModelLoadError, match=r"needs .* GiB .* but cpu has 0.0 GiB free"):
        load_model(tiny_checkpoint, device="cpu")


def test_a_gpu_load_checks_cpu_memory_too(tiny_checkpoint, monkeypatch):
    """Loading for a GPU reads the whole checkpoint into CPU memory first: too little RAM is a clear error before
    anything is read (the GPU side is faked: this runs before any CUDA call)."""
    monkeypatch.setattr(loading, "pick_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(loading, "available_memory", lambda dev: 2**40)
    monkeypatch.setattr(loading, "host_memory_total", lambda: 1024)
    with pytest.raises(
        ModelLoadError,
        match=r"loaded through CPU memory: it needs .* GiB of RAM in bfloat16 but "
        r"this machine has 0.0 GiB of RAM and swap",
    ):
        load_model(tiny_checkpoint)
    monkeypatch.undo()
    assert loading.host_memory_total() >= loading.available_memory(torch.device("cpu")) > 0


def test_generation_config_with_foreign_keys(copy_of):
    ckpt = copy_of()
    (ckpt / "generation_config.json").write_text(json.dumps({"dgls": {"max_steps": 3}}))
    with pytest.raises(ModelLoadError, match="rejects.*dgls.json"):
        load_model(ckpt)


def test_bad_device_and_dtype(tiny_checkpoint):
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model(tiny_checkpoint, device="tpu:banana")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(tiny_checkpoint, device="cpu", dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(tiny_checkpoint, device="cuda")


def test_hub_id_from_the_local_cache_only(tiny_checkpoint, tmp_path, monkeypatch):
    """An id already in the Hugging Face cache loads offline; one that is not gives a clear error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tiny-dg"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    assert resolve_checkpoint("acme/tiny-dg") == repo / "snapshots" / revision
    assert load_model("acme/tiny-dg", device="cpu").spec.bos_id == 2
    with pytest.raises(ModelLoadError, match="acme/other is not in the local Hugging Face cache"):
        load_model("acme/other")


def test_embedded_name_resolves_from_package_data():
    names = loading.embedded_models()
    for name in names:
        assert resolve_checkpoint(name) == loading.CHECKPOINTS_DIR / name
    with pytest.raises(ModelLoadError, match="embedded model name"):
        resolve_checkpoint("dgls-huge")


def test_experts_path_is_reported(tiny_checkpoint, tiny_moe_checkpoint):
    """On a CPU the MoE experts stay on transformers' eager loop (the kernel is CUDA only); a dense model has none."""
    from dgls.model.loading import load_model

    moe = load_model(tiny_moe_checkpoint, device="cpu")
    assert moe.experts == "transformers eager"
    assert all("forward" not in m.__dict__ for m in moe.model.modules())  # nothing patched on the CPU
    assert load_model(tiny_checkpoint, device="cpu").experts == "dense (no experts)"


def test_fp8_experts_are_refused_off_cuda_and_ignored_for_a_dense_model(tiny_checkpoint, tiny_moe_checkpoint):
    """experts="fp8" runs only on the dgls kernel on a CUDA GPU: a clear error on the CPU, before loading; a dense
    checkpoint has no experts and loads as with "auto"; an unknown value is refused."""
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="FP8 experts run on the dgls MoE kernel, which needs a CUDA GPU"):
            load_model(tiny_moe_checkpoint, device="cpu", experts="fp8")
    dense = load_model(tiny_checkpoint, device="cpu", experts="fp8")
    assert dense.experts == "dense (no experts)" and dense.model.dtype == torch.float32
    with pytest.raises(ModelLoadError, match="unknown experts setting 'int4': expected auto or fp8"):
        load_model(tiny_checkpoint, device="cpu", experts="int4")


def test_count_weights_splits_the_experts_from_the_rest(tiny_moe_checkpoint):
    """The memory check's split (FP8 experts at 1 byte): header counts equal the loaded model's own."""
    total = loading.count_weights(tiny_moe_checkpoint)
    experts = loading.count_weights(tiny_moe_checkpoint, loading._is_expert_weight)
    model = load_model(tiny_moe_checkpoint, device="cpu").model
    seen = {}  # what save_pretrained writes: parameters and persistent buffers, tied tensors once
    for name, t in model.state_dict().items():
        seen.setdefault(t.data_ptr(), (name, t.numel()))
    assert total == loading.check_checkpoint(tiny_moe_checkpoint)[1] == sum(n for _, n in seen.values())
    assert experts == sum(n for name, n in seen.values() if ".experts." in name) > 0


def test_languages_come_from_dgls_json(copy_of):
    ckpt = copy_of()
    ours = json.loads((ckpt / "dgls.json").read_text()) if (ckpt / "dgls.json").is_file() else {}
    ours.pop("languages", None)
    (ckpt / "dgls.json").write_text(json.dumps(ours))
    assert load_model(ckpt).spec.languages is None  # not declared
    (ckpt / "dgls.json").write_text(json.dumps({**ours, "languages": ["python", "cython"]}))
    assert load_model(ckpt).spec.languages == ("python", "cython")
    (ckpt / "dgls.json").write_text(json.dumps({**ours, "languages": "python"}))
    with pytest.raises(ModelLoadError, match="invalid languages"):
        load_model(ckpt)


def test_the_shipped_model_declares_its_languages():
    assert json.loads((loading.CHECKPOINTS_DIR / "dgls-tiny" / "dgls.json").read_text())["languages"] == ["python"]
