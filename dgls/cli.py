"""`dgls`: the language server (default), a headless infill, a doctor, and the trainer."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from dgls import __version__
from dgls.context import MAX_CANVAS
from dgls.model import DEFAULT_MODEL
from dgls.settings import EXPERTS, Settings, parse_settings

log = logging.getLogger("dgls")

# `dgls infill`'s exit status: 0 a suggestion was printed, 1 nothing to offer at that position (the reason on stderr;
# --json still prints its object), 2 a usage error; --jsonl: 0 every line answered (a line with nothing to offer
# has "middle": null and says why), 1 some line was an error
NOTHING_TO_OFFER = 1


class UsageError(Exception):
    """A user mistake: reported in one line, no traceback."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder, embedded name or cached HF id")
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--dtype", default=None, help="auto (default: bfloat16 on CUDA, float32 on CPU), float32, ...")
    g.add_argument(
        "--experts",
        choices=EXPERTS,
        default="auto",
        help="MoE checkpoints: auto (default: the experts in --dtype) or fp8 (float8 experts on the dgls "
        "kernel, about half the GPU memory; CUDA compute capability 8.9+)",
    )
    g.add_argument("--allow-download", action="store_true", help="let a Hugging Face id download if not cached")
    g.add_argument("--steps", type=int, default=None, help="max denoising steps per block")
    g.add_argument("--entropy-bound", type=float, default=None, help="entropy bound of the acceptance rule")
    g.add_argument("--blocks", type=int, default=1, help="max canvases for one middle (block by block)")
    g.add_argument("--max-canvas", type=int, default=MAX_CANVAS, help="largest canvas in tokens")


def _add_backend_args(p: argparse.ArgumentParser, sub: bool = False) -> None:
    """Where the model runs (also on the main parser, for the server; a subcommand keeps the main's values)."""
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {"default": None}
    g = p.add_argument_group("backend (a vLLM server instead of the in-process model; README: Serving a team)")
    g.add_argument("--backend", choices=("local", "vllm"), help="where denoising runs (default local)", **keep)
    g.add_argument("--backend-url", metavar="URL", help="the vLLM server, e.g. http://gpu-box:8000", **keep)
    g.add_argument("--backend-model", metavar="NAME", help="the served model name (default: the server's)", **keep)
    g.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="the served checkpoint's tokenizer: folder, embedded name or "
        "cached HF id (default: the model setting, --model for dgls infill)",
        **keep,
    )
    g.add_argument("--backend-api-key-env", metavar="VAR", help="environment variable holding the API key", **keep)
    g.add_argument("--backend-timeout-ms", type=int, metavar="MS", help="limit per request (default 10000)", **keep)


def backend_settings(args, model: str | None = None) -> Settings:
    """The command line's backend as settings (validated as a client's would be; UsageError if invalid)."""
    raw: dict[str, Any] = {
        "backend": {
            key: value
            for key, value in (
                ("kind", getattr(args, "backend", None)),
                ("url", getattr(args, "backend_url", None)),
                ("model", getattr(args, "backend_model", None)),
                ("tokenizer", getattr(args, "tokenizer", None)),
                ("apiKeyEnv", getattr(args, "backend_api_key_env", None)),
                ("timeoutMs", getattr(args, "backend_timeout_ms", None)),
            )
            if value is not None
        }
    }
    if model is not None:
        raw["model"] = model
    settings, problems = parse_settings(raw)
    if problems:
        raise UsageError("; ".join(problems))
    if settings.backend.kind == "local" and raw["backend"].keys() - {"kind"}:
        raise UsageError(
            "--backend-url, --backend-model, --tokenizer and the other --backend-* options need --backend vllm"
        )
    return settings


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="dgls", description=__doc__)
    p.add_argument("--version", action="version", version=f"dgls {__version__}")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--stdio", action="store_true", help="serve LSP over stdin/stdout (the default)")
    t.add_argument("--tcp", action="store_true", help="serve LSP over TCP")
    p.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1, loopback only)")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host that is not loopback")
    p.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    p.add_argument(
        "--token-file",
        default=None,
        help="TCP: require the token in this file (or in $DGLS_TOKEN) as initializationOptions.token",
    )
    p.add_argument("--log-file", default=None, help="log here instead of stderr")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    _add_backend_args(p)
    sub = p.add_subparsers(dest="command", metavar="{infill,doctor,train}")

    i = sub.add_parser(
        "infill",
        help="fill the middle at a position of a file (or JSON lines on stdin)",
        description="Print the suggestion at a position: the model's best candidate that survives the checks an "
        "editor's suggestion gets (shaped to the span, no new syntax error), the same one the server offers.",
        epilog="exit status: 0 a suggestion was printed; 1 nothing to offer there (the reason on stderr; --json "
        'still prints its object, with "middle": null); 2 a usage error. With --jsonl: 0 when every line was '
        'answered (a line with nothing to offer has "middle": null and a "nothing" reason), 1 when a line was an '
        "error.",
    )
    i.add_argument("file", nargs="?", help="source file (not with --jsonl)")
    i.add_argument("--line", type=int, help="1-based line of the cursor")
    i.add_argument("--col", type=int, help="1-based column of the cursor, in characters")
    i.add_argument("--select-to", metavar="LINE:COL", help="regenerate from the cursor to this position")
    i.add_argument("--language", default=None, help="language id (default: from the file name)")
    i.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object: middle (the suggestion), raw_middle, edits, candidates, nfe, ms",
    )
    i.add_argument(
        "--raw",
        action="store_true",
        help="print the model's best middle as it is (default: the best "
        "candidate that keeps the file parsing, shaped as an editor would get it)",
    )
    i.add_argument(
        "--jsonl",
        action="store_true",
        help='read {"prefix", "suffix", "language"} JSON lines on stdin (optional n_middle, candidates, seed, '
        'min_tokens, syntax_guided, max_steps, trigger: "invoked" or "automatic" (the ghost-text budget), id), '
        "write one JSON line each",
    )
    i.add_argument("--candidates", type=int, default=1, help="candidates to return (one batched pass)")
    i.add_argument("--seed", type=int, default=0, help="sampler seed")
    i.add_argument(
        "--min-tokens",
        type=int,
        default=1,
        help="the middle is at least this many tokens (default 1: an explicit request wants something)",
    )
    _add_model_args(i)
    _add_backend_args(i, sub=True)

    d = sub.add_parser("doctor", help="versions, device, model and kernels")
    d.add_argument("--load", action="store_true", help="also load the model and run one infill")
    d.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(d)
    sub.add_parser("train", help="train a DiffusionGemma infill model (see `dgls train --help`)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dgls` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from dgls.model.train import main as train_main

        return train_main(argv[1:])
    # OpenMP threads that wait for work sleep instead of spinning: on a machine whose cores are shared with an
    # editor or a build, spinning threads fight the other process (2 threads: 3.4x slower at the median, 1.3x
    # with this; 15 % slower on a quiet machine). Read when torch loads, which happens later, on first use.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parser().parse_args(argv)
    where = {"filename": args.log_file} if args.log_file else {"stream": sys.stderr}
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        **where,
    )
    try:
        if args.command == "infill":
            return cmd_jsonl(args) if args.jsonl else cmd_infill(args)
        if args.command == "doctor":
            from dgls.doctor import cmd_doctor

            return cmd_doctor(args)
        return cmd_serve(args)
    except UsageError as exc:
        print(f"dgls: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def load_engine(args):
    """The engine the command line asks for, loaded (a UsageError when it cannot load)."""
    from dgls.engine import Engine, EngineOptions

    if args.blocks < 1 or args.max_canvas < 16:
        raise UsageError(f"--blocks must be >= 1 and --max-canvas >= 16, got {args.blocks} and {args.max_canvas}")
    settings = replace(
        backend_settings(args, model=args.model),
        device=args.device,
        dtype=args.dtype,
        experts=args.experts,
        steps=args.steps,
        entropy_bound=args.entropy_bound,
        max_canvas=args.max_canvas,
    )
    engine = Engine(EngineOptions.from_settings(settings, allow_download=args.allow_download, max_blocks=args.blocks))
    from dgls.engine import EngineError

    try:
        engine.wait_ready()
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    return engine


def read_source(path: str) -> str:
    """A text file as it is on disk (newlines kept); binary or non-UTF-8 files are a UsageError."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    data = p.read_bytes()
    if b"\x00" in data[:8192]:
        raise UsageError(f"{path}: looks binary (NUL bytes), expected a text file")
    try:
        return data.decode("utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _candidates(completion) -> list[dict[str, Any]]:
    return [
        {"text": s.text, "score": round(s.score, 4), "confidence": round(s.confidence, 4)}
        for s in completion.candidates
    ]


def cmd_infill(args) -> int:
    """`dgls infill FILE --line N --col M`: print the suggestion (the middle an editor would be offered)."""
    from dgls.context import ContextError
    from dgls.engine import EngineError
    from dgls.languages import language_for_path
    from dgls.postprocess import make_edits
    from dgls.text import PositionError, offset_from_line_col, position_at

    if not args.file or args.line is None or args.col is None:
        raise UsageError("infill needs FILE --line N --col M (or --jsonl with requests on stdin)")
    text = read_source(args.file)
    try:
        offset = offset_from_line_col(text, args.line, args.col)
        selection = None
        if args.select_to:
            line, _, col = args.select_to.partition(":")
            if not (line.isdigit() and col.isdigit()):
                raise UsageError(f"--select-to expects LINE:COL, got {args.select_to!r}")
            selection = (offset, offset_from_line_col(text, int(line), int(col)))
        language = args.language or language_for_path(args.file)
        engine = load_engine(args)
        request = engine.build_request(text, offset, language=language, selection=selection)
    except (PositionError, ContextError) as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    if args.candidates < 1:
        raise UsageError(f"--candidates must be >= 1, got {args.candidates}")
    try:
        done = engine.complete(
            request, n_candidates=args.candidates, seed=args.seed, min_tokens=args.min_tokens, document=text
        )
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    finally:
        engine.shutdown()
    edits = make_edits(text, request, done.candidates)  # the suggestion: what an editor would be offered
    if not args.json:
        shown = done.text if args.raw else edits[0].new_text if edits else ""
        if shown:
            sys.stdout.write(shown + "\n")
            return 0
        print(f"dgls: {_nothing(done, raw=args.raw)}", file=sys.stderr)
        return NOTHING_TO_OFFER

    def lc(offset: int) -> list[int]:  # 1-based [line, column], as --line/--col take them
        line, col = position_at(text, offset)
        return [line + 1, col + 1]

    out = {
        "middle": edits[0].new_text if edits else None,
        "raw_middle": done.text,
        "edits": [
            {"text": e.new_text, "range": {"start": lc(e.start), "end": lc(e.end)}, **_edit_fields(e)} for e in edits
        ],
        "candidates": _candidates(done),
        "confidence": round(edits[0].confidence, 4) if edits else None,  # the suggestion's
        "nfe": done.nfe,
        "ms": round(done.ms, 1),
        "span": request.span.value,
        "range": {"start": lc(request.start), "end": lc(request.end)},
        "prefix_cache": done.prefix_cache,
    }
    if not edits:
        out["nothing"] = _nothing(done)
    print(json.dumps(out, ensure_ascii=False))
    return 0 if edits else NOTHING_TO_OFFER


def _edit_fields(edit) -> dict[str, Any]:
    """How the suggestion was rated and what the parse check found (None: the language has no grammar)."""
    return {
        "score": round(edit.score, 4),
        "confidence": round(edit.confidence, 4),
        "no_new_syntax_errors": edit.no_new_syntax_errors,
        "parses": edit.parses,
    }


def _nothing(done, raw: bool = False) -> str:
    """Why there is no suggestion, in words."""
    if raw or not done.text.strip():
        return "the model's best middle is empty: nothing to offer here"
    n = len(done.candidates)
    return (
        f"none of the model's {n} candidate(s) survives the checks an editor's suggestion gets (it must not add a "
        f"syntax error and must leave code after shaping), so nothing is offered here; more with --candidates, "
        f"--raw prints the model's best as it is"
    )


def as_middle(text: str, cursor: int, edit) -> str | None:
    """The suggestion `edit` as the text between ``text[:cursor]`` and ``text[cursor:]`` (None if it is not one).

    The same document as applying the edit: a suggestion that replaces closers after the cursor (``print(|)`` +
    ``"hi")``) becomes the middle without them (``"hi"``).
    """
    after = text[: edit.start] + edit.new_text + text[edit.end :]
    tail = len(text) - cursor
    if after.startswith(text[:cursor]) and after.endswith(text[cursor:]) and len(after) >= len(text):
        return after[cursor : len(after) - tail]
    return None


def _jsonl_request(raw: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"expected a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("prefix"), str):
        raise UsageError('"prefix" (a string) is required')
    obj.setdefault("suffix", "")
    if not isinstance(obj["suffix"], str):
        raise UsageError('"suffix" must be a string')
    if obj.get("language") is not None and not isinstance(obj["language"], str):
        raise UsageError('"language" must be a string')
    if obj.get("syntax_guided") is not None and not isinstance(obj["syntax_guided"], bool):
        raise UsageError('"syntax_guided" must be true or false')
    if obj.get("trigger", "invoked") not in ("invoked", "automatic"):
        raise UsageError('"trigger" must be "invoked" or "automatic"')
    for key, low in (("n_middle", 1), ("candidates", 1), ("seed", 0), ("min_tokens", 0), ("max_steps", 1)):
        v = obj.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise UsageError(f'"{key}" must be an integer >= {low}, got {v!r}')
    return obj


def cmd_jsonl(args) -> int:
    """`dgls infill --jsonl`: one request per input line, one JSON line out per request, model loaded once."""
    from dgls.context import ContextError
    from dgls.engine import EngineError
    from dgls.postprocess import make_edits

    if args.file:
        raise UsageError("--jsonl reads requests from stdin; do not pass a FILE")
    engine = load_engine(args)
    failures = 0
    for n, raw in enumerate(sys.stdin, 1):
        if not raw.strip():
            continue
        req: dict[str, Any] | None = None
        try:
            req = _jsonl_request(raw)
            text = req["prefix"] + req["suffix"]
            request = engine.build_request(text, len(req["prefix"]), language=req.get("language"))
            lengths = (req["n_middle"],) if req.get("n_middle") else None
            done = engine.complete(
                request,
                n_candidates=req.get("candidates") or 1,
                lengths=lengths,
                seed=req.get("seed", args.seed),
                min_tokens=req.get("min_tokens", args.min_tokens),
                syntax_guided=req.get("syntax_guided"),
                document=text,
                automatic=req.get("trigger") == "automatic",
                max_steps=req.get("max_steps"),
            )
            edits = make_edits(text, request, done.candidates)
            middle = as_middle(text, len(req["prefix"]), edits[0]) if edits else None
            out: dict[str, Any] = {
                "middle": middle,
                "raw_middle": done.text,
                **(_edit_fields(edits[0]) if edits else {"nothing": _nothing(done)}),
                "nfe": done.nfe,
                "ms": round(done.ms, 2),
                "blocks": done.blocks,
                "span": request.span.value,
                "prefix_cache": done.prefix_cache,
                "syntax_renoised": done.syntax_renoised,
                "candidates": _candidates(done),
            }
        except (UsageError, ContextError, EngineError) as exc:
            failures += 1
            print(f"dgls: line {n}: {exc}", file=sys.stderr)
            out = {"error": str(exc), "line": n}
        if req is not None and "id" in req:
            out["id"] = req["id"]
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    engine.shutdown()
    return 1 if failures else 0


def cmd_serve(args) -> int:
    """Run the language server (stdio by default)."""
    try:
        from dgls.server import serve
    except ImportError as exc:
        raise UsageError(f"the language server is not available in this build ({exc})") from None
    return serve(
        transport="tcp" if args.tcp else "stdio",
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        token=_token(args),
        defaults=backend_settings(args),
    )


def _token(args) -> str | None:
    """The TCP shared secret: --token-file's first line, else $DGLS_TOKEN, else None (no token)."""
    import os

    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--token-file {args.token_file}: cannot read it ({exc})") from None
        if not token:
            raise UsageError(f"--token-file {args.token_file}: the file is empty, expected a token")
        return token
    return os.environ.get("DGLS_TOKEN") or None


if __name__ == "__main__":
    sys.exit(main())
