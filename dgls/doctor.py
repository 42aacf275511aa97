"""`dgls doctor`: versions, the device, the model and whether the kernels are in use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dgls import __version__
from dgls.cli import load_engine


def cmd_doctor(args) -> int:
    """`dgls doctor`: what runs where."""
    import platform

    import torch
    import transformers

    from dgls.kernels import availability
    from dgls.model.loading import ModelLoadError, check_checkpoint, count_parameters, resolve_checkpoint

    report: dict[str, Any] = {
        "dgls": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for mod in ("pygls", "lsprotocol", "tree_sitter", "tree_sitter_python", "triton"):
        try:
            from importlib.metadata import version

            report[mod] = version(mod.replace("_", "-"))
        except Exception:
            report[mod] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["device"] = f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        report["device"] = "cpu (CUDA not available)"
    ok, why = availability()
    report["kernels"] = {"active": ok, "why": why}
    status = 0
    try:
        path = resolve_checkpoint(args.model, args.allow_download)
        check_checkpoint(path)
        report["model"] = {"name": args.model, "path": str(path), "params": count_parameters(path)}
    except ModelLoadError as exc:
        report["model"] = {"name": args.model, "error": str(exc)}
        status = 1
    if args.load and status == 0:
        engine = load_engine(args)
        done = engine.complete(engine.build_request("def add(a, b):\n    return \n", 26, language="python"))
        report["model"].update(engine.info)
        report["model"]["smoke_infill"] = {"text": done.text, "nfe": done.nfe, "ms": round(done.ms, 1)}
        engine.shutdown()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_report_lines(report)))
    return status


def _report_lines(report: Mapping[str, Any], indent: int = 0) -> list[str]:
    """``key: value`` lines of a nested report, nested objects indented under their key (no Python reprs)."""
    lines = []
    for k, v in report.items():
        if isinstance(v, Mapping):
            lines.append(f"{' ' * indent}{k}:")
            lines += _report_lines(v, indent + 2)
        else:
            shown = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else v
            lines.append(f"{' ' * indent}{k}: {shown}")
    return lines
