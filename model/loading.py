"""Checkpoint -> model, tokenizer and sampler defaults (safetensors only, never remote code).

The folder format (``config.json``, safetensors weights, a tokenizer, ``generation_config.json``, ``dgls.json``)
is described in :mod:`dgls.model.checkpoint`, which also reads the sampler defaults and layout facts (its
``ModelLoadError`` and ``ModelSpec`` are importable from here too). A
checkpoint is named by a folder path, by the name of a model shipped in the package (``dgls-tiny``), or by a
Hugging Face id already in the local cache.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dgls.model import DEFAULT_MODEL, EXPERTS
from dgls.model.checkpoint import ModelLoadError, ModelSpec, check_generation_config, read_spec
from dgls.model.experts import check_fp8_experts, experts_on_kernel, patch_moe_experts

ARCHITECTURE = "DiffusionGemmaForBlockDiffusion"
MODEL_TYPE = "diffusion_gemma"
CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A resident model with its tokenizer, device and defaults."""

    model: Any  # DiffusionGemmaForBlockDiffusion
    tokenizer: Any  # a transformers tokenizer
    path: Path
    device: torch.device
    dtype: torch.dtype
    spec: ModelSpec
    n_params: int
    experts: str = ""  # which code runs the MoE experts (the dgls kernel on CUDA where usable)


def embedded_models() -> list[str]:
    """Names of the checkpoints shipped inside the package."""
    if not CHECKPOINTS_DIR.is_dir():
        return []
    return sorted(p.name for p in CHECKPOINTS_DIR.iterdir() if (p / "config.json").is_file())


def resolve_checkpoint(name_or_path: str | os.PathLike, allow_download: bool = False) -> Path:
    """Turn a model name, folder or Hugging Face id into a local folder, without network unless allowed."""
    text = str(name_or_path)
    if not text.strip():
        raise ModelLoadError("no model given: expected a folder, an embedded model name or a Hugging Face id")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelLoadError(f"model path {path} is a file: expected a checkpoint folder with config.json")
    embedded = CHECKPOINTS_DIR / text
    if "/" not in text and (embedded / "config.json").is_file():
        return embedded
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return _from_hub_cache(text, allow_download)
    names = ", ".join(embedded_models()) or "none installed"
    raise ModelLoadError(
        f"model not found: {text}: expected a checkpoint folder, an embedded model name ({names}) "
        "or a Hugging Face id (org/name) in the local cache"
    )


def _from_hub_cache(repo_id: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id,
            local_files_only=not allow_download,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"],
        )
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"model {repo_id} is not in the local Hugging Face cache and downloads are off "
            "(allow them explicitly, or pass a local folder)"
        ) from None
    except Exception as exc:  # network, authentication, unknown repository
        raise ModelLoadError(f"model {repo_id} could not be fetched from the Hugging Face hub: {exc}") from None
    return Path(folder)


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """Read and check a safetensors header; a truncated or corrupt file raises ModelLoadError."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"corrupt safetensors file {file}: {size} bytes, too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or 8 + n > size:
            raise ModelLoadError(f"corrupt safetensors file {file}: header of {n} bytes does not fit in {size} bytes")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"corrupt safetensors file {file}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"corrupt safetensors file {file}: header is not a JSON object")
    data_end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + data_end > size:
        raise ModelLoadError(
            f"truncated safetensors file {file}: tensors need {8 + n + data_end} bytes, the file has {size}"
        )
    return header


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"corrupt shard index {index}: {exc}") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelLoadError(
                f"checkpoint {path} is incomplete: shard(s) {', '.join(missing)} listed in {index.name} are missing"
            )
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"checkpoint {path} has only pickle weights ({', '.join(pickles)}): dgls loads "
            "safetensors only (convert it with safetensors' save_file)"
        )
    raise ModelLoadError(
        f"checkpoint {path} has no weights: expected model.safetensors or model.safetensors.index.json"
    )


def check_checkpoint(path: Path) -> tuple[dict[str, Any], int]:
    """Validate a checkpoint folder without loading it; return its config and the bytes of its weights."""
    if not path.is_dir():
        raise ModelLoadError(f"DiffusionGemma checkpoint expected at {path}: no such folder")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"DiffusionGemma checkpoint expected at {path}: no config.json")
    try:
        config = json.loads(cfg_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"corrupt config {cfg_file}: {exc}") from None
    archs = config.get("architectures") or []
    if config.get("model_type") != MODEL_TYPE or (archs and ARCHITECTURE not in archs):
        found = ", ".join(archs) or config.get("model_type") or "nothing"
        raise ModelLoadError(
            f"checkpoint {path} is not a DiffusionGemma model: expected {ARCHITECTURE} "
            f"(model_type {MODEL_TYPE!r}), found {found}"
        )
    return config, count_weights(path)


def count_parameters(path: Path) -> int:
    """Unique parameters of the model a checkpoint folder describes, as ``load_model`` counts them.

    Built on the meta device from ``config.json`` (no weights read, no memory), so that a report made without
    loading says the same number as one made after: the safetensors files also hold buffers (a scalar per
    layer) and the decoder's copy of the tied weights.
    """
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    config = DiffusionGemmaConfig.from_pretrained(str(path))
    with torch.device("meta"):
        model = DiffusionGemmaForBlockDiffusion(config)
    return sum(p.numel() for p in model.parameters())


def count_weights(path: Path, where: Callable[[str], bool] = lambda name: True) -> int:
    """Elements of the checkpoint's tensors whose names pass `where`, from the safetensors headers alone."""
    total = 0
    for f in _weight_files(path):
        for k, v in read_safetensors_header(f).items():
            if k == "__metadata__" or not where(k):
                continue
            numel = 1
            for d in v["shape"]:
                numel *= int(d)
            total += numel
    return total


def pick_device(device: str | None) -> torch.device:
    """Auto device: CUDA when available, else CPU; an explicit choice is checked."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device} requested but CUDA is not available (torch {torch.__version__})")
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unsupported device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev


def cpu_threads(requested: int | None = None) -> int:
    """Intra-op threads for the model on a CPU: `requested`, else ``OMP_NUM_THREADS``, else the cores, at most 4.

    A denoising step of a small model is many small matmuls. On this project's 2-core machine two threads take
    a step in 0.6x the time one does when the machine is quiet; when another process keeps a core busy, two
    threads whose waits spin (OpenMP's default) are 3.4x slower at the median, and two that sleep while they wait
    (``OMP_WAIT_POLICY=PASSIVE``, which the ``dgls`` command sets) 1.3x slower than one thread: so all the cores,
    with passive waits. More than 4 threads are not measured here and split these shapes too finely.
    """
    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, os.cpu_count() or 1))


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Auto dtype: bfloat16 on CUDA, float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: expected auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def available_memory(device: torch.device) -> int:
    """Bytes free for weights on `device` (CUDA free memory, or the system's available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def host_memory_total() -> int:
    """Bytes of RAM plus swap of this machine (MemTotal + SwapTotal)."""
    total = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(("MemTotal:", "SwapTotal:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _is_expert_weight(name: str) -> bool:
    return ".experts." in name


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    allow_download: bool = False,
    experts: str = "auto",
) -> LoadedModel:
    """Load a DiffusionGemma checkpoint and its tokenizer onto a device, ready for inference.

    `experts` (mixture-of-experts checkpoints): ``"auto"`` runs them on the dgls grouped-GEMM kernel in the
    model's dtype on CUDA where the kernel passed its self-check, else on transformers' implementation;
    ``"fp8"`` loads the checkpoint into CPU memory, quantizes each layer's experts to float8_e4m3fn with
    per-output-channel scales on the GPU and keeps only those (about half the memory and the weight bytes per
    step of bf16 experts; accuracy in ``kernels/moe_ref.py``), which needs the kernel and a GPU of compute
    capability 8.9 or newer. A dense checkpoint has no experts: both values load it the same way.
    """
    if experts not in EXPERTS:
        raise ModelLoadError(f"unknown experts setting {experts!r}: expected {' or '.join(EXPERTS)}")
    path = resolve_checkpoint(name_or_path, allow_download)
    config, numel = check_checkpoint(path)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    zero_width = int((config.get("text_config") or {}).get("moe_intermediate_size") or 0) == 0
    fp8 = experts == "fp8" and not zero_width
    if fp8:
        check_fp8_experts(dev)
    _check_memory(path, config, numel, dev, dt, fp8)
    check_generation_config(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ModelLoadError(f"checkpoint {path} has no tokenizer: expected tokenizer.json or tokenizer_config.json")

    implementation = "eager" if (zero_width or dev.type == "cpu") else "grouped_mm"
    tokenizer, model = _from_pretrained(path, dt, implementation)
    n_params = sum(p.numel() for p in model.parameters())
    try:
        if fp8:  # on the CPU until now: the experts go to the GPU as FP8 only, then the rest follows
            patch_moe_experts(model, fp8=True, release=True, device=dev)
        model.to(dev).eval()
    except torch.cuda.OutOfMemoryError:
        del model  # here, not in a helper: this frame must not keep the model alive in the error's traceback
        raise ModelLoadError(
            f"model {path} ran out of memory on {dev} while moving there (another process may hold memory on it)"
        ) from None
    spec = read_spec(path, config, tokenizer)
    if fp8:
        path_name = "dgls moe_experts kernel (FP8 e4m3 weights, per-channel scales)"
    else:
        path_name = experts_on_kernel(model, dev, implementation, zero_width)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=path,
        device=dev,
        dtype=dt,
        spec=spec,
        n_params=n_params,
        experts=path_name,
    )


def _check_memory(
    path: Path, config: dict[str, Any], numel: int, dev: torch.device, dt: torch.dtype, fp8: bool
) -> None:
    """Refuse a model whose weights do not fit `dev` (or, for CUDA, this machine's RAM, which they pass through)."""
    text_cfg = config.get("text_config") or {}
    size = torch.empty((), dtype=dt).element_size()
    expert_numel = count_weights(path, _is_expert_weight) if fp8 else 0
    need = (numel - expert_numel) * size + expert_numel  # FP8 experts: 1 byte each (scales: 1/H of that)
    if fp8:  # quantizing one layer holds its weights in dtype, |w| and an fp32 copy on the GPU for a moment
        need += 4 * size * expert_numel // max(1, int(text_cfg.get("num_hidden_layers") or 1))
    have = available_memory(dev)
    if need > 0.9 * have:
        what = f"{str(dt)[6:]} with FP8 experts" if fp8 else str(dt)[6:]
        raise ModelLoadError(
            f"model {path} needs {need / 2**30:.1f} GiB for its weights in {what} but "
            f"{dev} has {have / 2**30:.1f} GiB free"
        )
    if dev.type == "cuda":  # the checkpoint is read into CPU memory whole before it moves (or its experts shrink)
        host_need, host_have = numel * size, host_memory_total()
        if host_need > host_have:  # the total, not what is free now: memory can be freed, or grow on some VMs
            raise ModelLoadError(
                f"model {path} is loaded through CPU memory: it needs {host_need / 2**30:.1f} GiB of "
                f"RAM in {str(dt)[6:]} but this machine has {host_have / 2**30:.1f} GiB of RAM "
                "and swap"
            )


def _from_pretrained(path: Path, dt: torch.dtype, implementation: str) -> tuple[Any, Any]:
    """Tokenizer and model from the folder through transformers (local files, safetensors, no remote code)."""
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loader's chatter and progress bars go nowhere useful in an editor
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(
            path,
            dtype=dt,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
            experts_implementation=implementation,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types for a bad folder; name the path and the cause
        raise ModelLoadError(f"could not load DiffusionGemma checkpoint {path}: {type(exc).__name__}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return tokenizer, model
