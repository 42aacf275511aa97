"""Build every dgls Triton kernel for a CUDA GPU ahead of time, on any machine: what a GPU would compile, no GPU.

The CPU tests run the kernels on Triton's interpreter, which executes the Python body of each kernel and
skips the compiler: a kernel can pass every interpreter test and still fail to compile for a GPU (a global that
is not a constexpr, an op without a lowering, a tile that needs more shared memory than the chip has). This
script closes that gap without a GPU. It calls the kernels' own wrappers (``row_stats``, ``topk_soft_embedding``,
``moe_experts``) and each module's ``self_check`` on CPU tensors with every Triton launch intercepted, so it
records the launches (block sizes, options, argument types) that the wrappers make for the workloads below, with
the SM counts of the target's GPUs (the sampler splits the vocabulary by them). Each distinct launch is then
specialized the way Triton's runtime does it (its own binder: 16-byte alignment and divisibility hints, the
runtime's debug and instrumentation options) and compiled with Triton's real compiler for the target: Triton
IR, GPU IR, LLVM, PTX, and a cubin from the ptxas that ships in the triton wheel. From the cubin it reports
registers, spill (local) bytes, stack and shared memory per program, and from the PTX which matrix instruction
the dots became (``wgmma`` on Hopper, ``mma.sync``, or none). A launch whose build fails, or which needs more
shared memory than the target has per block, fails the run.

Workloads, per target (sizes of the real 26B-A4B model, reference/diffusiongemma.md §7):

* every kernel's ``self_check`` (the launches the registry makes before a kernel may replace the torch path);
* the sampler statistics (``row_stats``) over the real vocabulary (262,144) for 16 to 768 canvas rows (canvases
  of 16, 32, 64 and 256 slots, 1 or 3 candidates), float32 and bfloat16 logits, soft-capped or not, and over
  the shipped tiny model's vocabulary;
* the top-k soft embedding at the real sizes (k = 64, plain and with the tail correction), as gpu_speed.py runs it;
* the MoE experts at the real sizes (hidden 2816, 128 experts x 704, top 8) for 16 to 4,096 tokens (canvases,
  and prefixes: the encoder's forward goes through the same kernel once it is patched), so every BLOCK_M (16,
  32, 64) is built, with bf16, fp32 and FP8 weights (FP8 only for targets 8.9 and newer, where
  ``fp8_supported`` is true).

Not covered: shapes other than these (another model's hidden size or vocabulary gets its own specialization on
the GPU, though the block sizes come from the same few rules).

What it cannot say: whether the compiled code gives the right numbers (the interpreter tests and the GPU
self-check cover that) or how fast it runs (benchmarks/gpu_speed.py, on a GPU).

    python benchmarks/kernel_build.py [--arch 90,80] [--json] [--write]

``--write`` appends the table to benchmarks/RESULTS.md with the versions and commit. The compiled kernels go to
Triton's cache directory (``TRITON_CACHE_DIR``, a temporary one unless set).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the real compiler: read when the kernel modules are imported

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_speed import REAL_TEXT  # noqa: E402
from provenance import git_commit  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# SM counts of the GPUs of each target (A100; A10, RTX 3090; L4, L40S; H100 PCIe, H100 SXM and H200)
SMS = {80: (108,), 86: (72, 82), 89: (58, 142), 90: (114, 132)}
# Most shared memory one block may use (opt-in), bytes, per compute capability (CUDA C programming guide,
# "Technical Specifications per Compute Capability").
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
GPU_NAMES = {80: "A100", 86: "RTX 30xx / A10", 89: "L4 / L40S / RTX 40xx", 90: "H100 / H200"}


class Launch:
    """One intercepted kernel launch: the JIT function, its grid, its arguments, and what asked for it."""

    def __init__(self, fn, grid, args, kwargs, label):
        self.fn, self.grid, self.args, self.kwargs, self.label = fn, grid, args, dict(kwargs), label


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel in its module: ``kernel[grid](...)`` records instead of launching."""

    def __init__(self, fn, sink: list[Launch], label: list[str]):
        self.fn, self.sink, self.label = fn, sink, label

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.sink.append(Launch(self.fn, grid, args, kwargs, self.label[0]))


@contextlib.contextmanager
def recording(modules, sink: list[Launch], label: list[str], sms: int):
    """Replace every JIT kernel of `modules` by a recorder while the block runs; the sampler splits for `sms` SMs."""
    from triton.runtime.jit import JITFunction

    from dgls.kernels import canvas_sampler

    saved = []
    for m in modules:
        if getattr(m, "INTERPRET", False):
            raise RuntimeError(
                f"{m.__name__} was imported under TRITON_INTERPRET=1: its launches would be the "
                f"interpreter's; run this script in a fresh process"
            )
        for name, obj in vars(m).items():
            if isinstance(obj, JITFunction) and name.endswith("_kernel"):
                saved.append((m, name, obj))
                setattr(m, name, _Recorder(obj, sink, label))
    splits = canvas_sampler._default_splits
    canvas_sampler._default_splits = lambda n_rows, n_blocks, device: canvas_sampler.splits_for(n_rows, n_blocks, sms)
    try:
        yield
    finally:
        canvas_sampler._default_splits = splits
        for m, name, obj in saved:
            setattr(m, name, obj)


def _shared_weights(shape, dtype):
    """A weight tensor of `shape` that takes one row of memory: only shapes and strides reach the recorder.

    Its leading strides are 0; Triton gives 0 the same divisible-by-16 hint as the real contiguous strides,
    provided those are multiples of 16, which is checked here.
    """
    stride, strides = 1, []
    for n in reversed(shape[1:]):
        strides.append(stride)
        stride *= n
    strides.append(stride)
    assert all(st % 16 == 0 for st in strides[1:]), f"real strides {strides[::-1]} of {shape}: other hints"
    return torch.zeros(1, *shape[1:], dtype=dtype).expand(*shape)


def workloads(fp8: bool):
    """(label, thunk) for every launch set listed in the module docstring."""
    from dgls.kernels import canvas_sampler, moe, soft_embedding
    from dgls.kernels.moe_ref import FP8Experts

    V, H = REAL_TEXT["vocab_size"], REAL_TEXT["hidden_size"]
    E, I, K = REAL_TEXT["num_experts"], REAL_TEXT["moe_intermediate_size"], REAL_TEXT["top_k_experts"]  # noqa: E741
    tiny_v = json.loads((ROOT / "model" / "checkpoints" / DEFAULT_MODEL / "config.json").read_text())
    tiny_v = tiny_v["text_config"]["vocab_size"]
    g = torch.Generator().manual_seed(0)

    yield "sampler self-check", lambda: canvas_sampler.self_check("cpu")
    yield "soft embedding self-check", lambda: soft_embedding.self_check("cpu")
    yield "MoE self-check", lambda: _moe_self_check(fp8)
    for rows in (16, 32, 48, 64, 96, 192, 256, 768):  # canvases of 16..256 slots x 1 or 3 candidates
        for dtype in (torch.float32, torch.bfloat16):
            logits = torch.zeros(1, V, dtype=dtype).expand(rows, V)  # one row of memory; the row stride is not
            for cap in (None, 30.0):  # specialized (do_not_specialize)
                yield (
                    f"sampler {rows} rows V={V} {_short(dtype)}{' capped' if cap else ''}",
                    lambda x=logits, cap=cap: canvas_sampler.row_stats(x, 0.5, cap=cap, seed=1),
                )
    yield (
        f"sampler 64 rows V={tiny_v} (dgls-tiny)",
        lambda: canvas_sampler.row_stats(torch.randn(64, tiny_v, generator=g), 0.5, seed=1),
    )
    emb = _shared_weights((V, H), torch.bfloat16)
    e_sum = torch.zeros(H)
    for C in (64, 256):
        logits = torch.randn(C, V, generator=g).to(torch.bfloat16)
        yield f"soft embedding C={C} k=64", lambda x=logits: soft_embedding.topk_soft_embedding(x, emb, 64)
        yield (
            f"soft embedding C={C} k=64 tail",
            lambda x=logits: soft_embedding.topk_soft_embedding(x, emb, 64, e_sum=e_sum),
        )
    weights = {
        dtype: (_shared_weights((E, 2 * I, H), dtype), _shared_weights((E, H, I), dtype))
        for dtype in (torch.bfloat16, torch.float32)
    }
    q = FP8Experts(
        _shared_weights((E, 2 * I, H), torch.float8_e4m3fn),
        _shared_weights((E, 2 * I), torch.float32),
        _shared_weights((E, H, I), torch.float8_e4m3fn),
        _shared_weights((E, H), torch.float32),
    )
    for T in (16, 64, 256, 512, 1024, 4096):  # BLOCK_M 16, 16, 16, 32, 64, 64
        ids = torch.rand(T, E, generator=g).topk(K, dim=-1).indices  # K distinct experts per token
        w = torch.rand(T, K, generator=g)
        for dtype, (w_gu, w_d) in weights.items():
            x = torch.randn(T, H, generator=g).to(dtype)
            yield (
                f"MoE T={T} {_short(dtype)}",
                lambda x=x, ids=ids, w=w, w_gu=w_gu, w_d=w_d: moe.moe_experts(x, ids, w, w_gu, w_d),
            )
        if fp8:
            x = torch.randn(T, H, generator=g).to(torch.bfloat16)
            yield f"MoE T={T} fp8", lambda x=x, ids=ids, w=w: moe.moe_experts(x, ids, w, q)


def _moe_self_check(fp8: bool) -> None:
    """The MoE self-check with ``fp8_supported`` answering for the target, not for the CPU tensors' device."""
    from dgls.kernels import moe

    saved = moe.fp8_supported
    moe.fp8_supported = lambda device: fp8
    try:
        moe.self_check("cpu")
    finally:
        moe.fp8_supported = saved


def _short(dtype: torch.dtype) -> str:
    return (
        str(dtype)
        .removeprefix("torch.")
        .replace("bfloat16", "bf16")
        .replace("float32", "fp32")
        .replace("float16", "fp16")
        .replace("float8_e4m3fn", "fp8e4m3")
    )


def record(arch: int) -> list[Launch]:
    """Every launch of :func:`workloads` for target `arch`, once per SM count of its GPUs."""
    from dgls.kernels import canvas_sampler, moe, soft_embedding

    sink: list[Launch] = []
    label = [""]
    for sms in SMS[arch]:
        with recording((canvas_sampler, moe, soft_embedding), sink, label, sms):
            for name, thunk in workloads(fp8=arch >= 89):
                label[0] = name
                thunk()
    return sink


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the kernel in `cubin`, from the cuobjdump that ships with triton."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    line = next(ln for ln in out.splitlines() if "REG:" in ln)
    return {k: int(v) for k, v in (field.split(":") for field in line.split() if field.split(":")[-1].isdigit())}


def specialize(launch: Launch, arch: int):
    """`launch` as Triton's runtime specializes it for compute capability `arch`: its build inputs and its row."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug  # as JITFunction.run sets them
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    const = {fn.arg_names[path[0]]: value for path, value in constexprs.items() if len(path) == 1}
    row = {
        "kernel": fn.__name__.strip("_"),
        "arch": arch,
        "labels": [launch.label],
        "constexprs": {k: v for k, v in const.items() if k.isupper()},
        "num_warps": options.num_warps,
        "num_stages": options.num_stages,
        "signature": {k: v for k, v in signature.items() if v != "constexpr"},
        "attrs": str(attrs),
        "all_constexprs": str(sorted(const.items())),
    }
    return ASTSource(fn, signature, constexprs, attrs), target, options, row


def build(src, target, options, row: dict) -> dict:
    """Compile one specialized launch to a cubin; fill in `row` with its resources, or the error."""
    import triton

    arch = target.arch
    t0 = time.perf_counter()
    try:
        compiled = triton.compile(src, target=target, options=options.__dict__)
    except Exception as exc:  # the finding this script exists for: report it, keep building the rest
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip()[-1500:]}")
        return row
    ptx = compiled.asm["ptx"]
    usage = resource_usage(compiled.asm["cubin"])
    shared = int(compiled.metadata.shared)
    row.update(
        ok=shared <= SHARED_LIMIT[arch],
        seconds=round(time.perf_counter() - t0, 2),
        regs=usage["REG"],
        local=usage["LOCAL"],
        stack=usage["STACK"],
        shared=shared,
        shared_limit=SHARED_LIMIT[arch],
        mma="wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "none",
    )
    if not row["ok"]:
        row["error"] = f"needs {shared} bytes of shared memory per block, the target has {SHARED_LIMIT[arch]}"
    return row


def run(archs: list[int]) -> list[dict]:
    """One row per distinct build (kernel, types, hints, constexprs, options) per target, with every launch's label."""
    import triton  # noqa: F401 - fail here, with a clear message, when it is missing

    rows: dict[str, dict] = {}
    for arch in archs:
        for launch in record(arch):
            src, target, options, row = specialize(launch, arch)
            key = json.dumps(
                [row[k] for k in ("kernel", "arch", "signature", "attrs", "all_constexprs", "num_warps", "num_stages")],
                default=str,
            )
            if key in rows:
                rows[key]["labels"].append(launch.label)
            else:
                rows[key] = build(src, target, options, row)
    return list(rows.values())


def _config(row: dict) -> str:
    """The first pointer's element type (the data the kernel streams), the constexprs and the warps."""
    data = next(v for v in row["signature"].values() if v.startswith("*")).lstrip("*")
    return f"{data}; " + ", ".join(f"{k}={v}" for k, v in row["constexprs"].items()) + f"; {row['num_warps']} warps"


def table(rows: list[dict]) -> str:
    lines = [
        "| target | kernel | data; constexprs; warps | launches (what asks for it) | regs | spill B | shared B | "
        "dots on | build |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        names = list(dict.fromkeys(r["labels"]))
        labels = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
        if "regs" in r:
            lines.append(
                f"| sm_{r['arch']} | {r['kernel']} | {_config(r)} | {labels} | {r['regs']} | "
                f"{r['local']} | {r['shared']:,} | {r['mma']} | {'ok' if r['ok'] else r['error']} |"
            )
        else:
            lines.append(
                f"| sm_{r['arch']} | {r['kernel']} | {_config(r)} | {labels} | | | | | "
                f"FAILED: {r['error'].splitlines()[-1][:200]} |"
            )
    return "\n".join(lines)


def summary(rows: list[dict], archs: list[int]) -> str:
    """One line per target: builds ok, the largest register count, spills, the most shared memory against the limit."""
    lines = [
        "| target | builds ok | max regs | spill bytes | max shared B / limit | MoE dots on |",
        "|---|---|---|---|---|---|",
    ]
    for arch in archs:
        rs = [r for r in rows if r["arch"] == arch]
        built = [r for r in rs if "regs" in r]
        mma = sorted({r["mma"] for r in built if r["kernel"].startswith("moe_") and r["mma"] != "none"})
        lines.append(
            f"| sm_{arch} ({GPU_NAMES[arch]}) | {sum(r['ok'] for r in rs)} of {len(rs)} | "
            f"{max((r['regs'] for r in built), default=0)} | {sum(r['local'] for r in built)} | "
            f"{max((r['shared'] for r in built), default=0):,} / {SHARED_LIMIT[arch]:,} | "
            f"{', '.join(mma) or '-'} |"
        )
    return "\n".join(lines)


def section(rows: list[dict], archs: list[int]) -> str:
    import triton

    last = max(archs)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "",
            f"## Kernels built for GPUs ahead of time, no GPU ({when})",
            "",
            f"`python benchmarks/kernel_build.py --arch {','.join(map(str, archs))} --write` on a machine without a "
            f"GPU: the launches the kernel wrappers and self-checks make for the real model's sizes (the workloads are "
            f"in the script's docstring), with each target's SM counts, specialized as Triton's runtime would and "
            f"compiled to "
            f"a cubin by Triton's own compiler and ptxas. Triton {triton.__version__}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, commit {git_commit()}. This shows that the kernels compile and fit "
            f"(registers, spills, shared memory within the target's limit), not that they are right or fast on the "
            f"GPU: "
            f"only a GPU run can show that.",
            "",
            summary(rows, archs),
            "",
            f"Every build for sm_{last} ({GPU_NAMES[last]}); the data type is the first pointer's:",
            "",
            table([r for r in rows if r["arch"] == last]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="90", help="compute capabilities, comma-separated: 80, 86, 89, 90")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON line after the table")
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = p.parse_args(argv)
    try:
        archs = [int(x) for x in a.arch.split(",")]
    except ValueError:
        archs = []
    if not archs or any(x not in SHARED_LIMIT for x in archs):
        print(
            f"kernel_build: --arch takes compute capabilities from {sorted(SHARED_LIMIT)}, got {a.arch!r}",
            file=sys.stderr,
        )
        return 2
    with contextlib.ExitStack() as stack:
        if "TRITON_CACHE_DIR" not in os.environ:
            os.environ["TRITON_CACHE_DIR"] = stack.enter_context(tempfile.TemporaryDirectory())
        rows = run(archs)
    print(table(rows))
    print()
    print(summary(rows, archs))
    if a.json:
        print(json.dumps({"bench": "kernel_build", "rows": rows}, default=str))
    if a.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(section(rows, archs))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
