"""Infill quality of a checkpoint on held-out code, through the real ``dgls infill --jsonl`` CLI.

Cases are cut by this script from the corpus' HELD-OUT files (packages the model never saw; a package is drawn
uniformly, then one of its files), with a fixed seed, in three kinds that editors ask for:

* ``rest_of_line``: the cursor sits inside a line (after a word or operator); the middle is the rest of it;
* ``single_line``: the cursor sits at a line's indentation; the middle is the line's code;
* ``multi_line``: the cursor sits at the indentation of a line; the middle is 2-6 lines (a block body when the
  previous line opens one).

Each case is sent twice: ``variable`` (the engine picks the length; the model ends the middle with filler) and
``oracle`` (``"n_middle": k`` forces a canvas of exactly the reference's k tokens). Scores: exact match, exact
match ignoring trailing whitespace, token accuracy (position-wise over the reference tokens), character
similarity (difflib ratio), the share of results whose whole file (prefix + middle + suffix) parses with
tree-sitter-python, and the mean NFE and latency the CLI reports. These score the model's own best middle
(``raw_middle``); ``offered`` is the share of cases where the CLI offers a suggestion at all (``middle`` is what
an editor would get: shaped and parse-checked) and ``offered exact`` the share where that suggestion is exact.

    python benchmarks/quality.py --n-per-kind 40            # prints a table, appends it to RESULTS.md
    python benchmarks/quality.py --dry-run --cases-out c.jsonl   # only cut the cases
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py
from provenance import cpu_name, git_commit  # noqa: E402

from dgls.model import DEFAULT_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "model" / "checkpoints" / DEFAULT_MODEL
KINDS = ("rest_of_line", "single_line", "multi_line")


@dataclass
class Case:
    id: str
    file: str
    kind: str
    prefix: str
    middle: str
    suffix: str


# ------------------------------------------------------------------------------------------------ cases


def _lines(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for i, ch in enumerate(text):
        if ch == "\n":
            spans.append((start, i))
            start = i + 1
    spans.append((start, len(text)))
    return spans


def _cut(text: str, kind: str, rng: random.Random) -> tuple[int, int] | None:
    """Char span ``(a, b)`` of a middle of ``kind`` in ``text``, or None when this draw does not fit."""
    lines = _lines(text)
    li = rng.randrange(len(lines))
    s, e = lines[li]
    line = text[s:e]
    code = line.strip()
    if not code or code.startswith("#"):
        return None
    indent = s + len(line) - len(line.lstrip())
    if kind == "rest_of_line":
        # cursor right after a non-word char (operator, paren, dot, space), leaving at least 2 chars
        cands = [i for i in range(indent + 1, e - 1) if not (text[i - 1].isalnum() or text[i - 1] == "_")]
        return (rng.choice(cands), e) if cands else None
    if kind == "single_line":
        return indent, e
    # multi_line: a block body when the previous line opens one, else 2-6 consecutive lines
    if li > 0 and text[lines[li - 1][0] : lines[li - 1][1]].rstrip().endswith(":"):
        depth = indent - s
        last = li
        for j in range(li + 1, min(len(lines), li + 6)):
            body = text[lines[j][0] : lines[j][1]]
            if body.strip() and len(body) - len(body.lstrip()) < depth:
                break
            if body.strip():  # a trailing blank line is not part of the body
                last = j
        if last > li:
            return indent, lines[last][1]
    last = min(len(lines) - 1, li + rng.randint(1, 5))
    while last > li and not text[lines[last][0] : lines[last][1]].strip():
        last -= 1
    return (indent, lines[last][1]) if last > li else None


def make_cases(texts: dict[str, str], n_per_kind: int, tok, seed: int = 0, max_tokens: int = 64) -> list[Case]:
    """Cut ``n_per_kind`` cases of each kind from ``texts`` (``{name: source}``), deterministically.

    A middle must have 1..``max_tokens`` tokens under ``tok`` (the largest canvas), contain code (not only
    whitespace or a comment), and the original file must parse, so that a failed parse is the model's doing.
    """
    import tree_sitter_python  # noqa: F401  (fail early with a clear import error)

    names = sorted(n for n, t in texts.items() if t.strip() and parses(t))
    if not names:
        raise ValueError("make_cases needs at least one non-empty, parsable held-out file; found none")
    # a package first, then one of its files: a package with many files (distutils) must not dominate
    packages: dict[str, list[str]] = {}
    for n in names:
        packages.setdefault(n.split("/")[0].removesuffix(".py"), []).append(n)
    groups = [packages[k] for k in sorted(packages)]
    rng = random.Random(seed)
    cases: list[Case] = []
    for kind in KINDS:
        got, tries = 0, 0
        seen: set[tuple[str, int, int]] = set()
        while got < n_per_kind and tries < 200 * n_per_kind:
            tries += 1
            name = rng.choice(rng.choice(groups))
            text = texts[name]
            span = _cut(text, kind, rng)
            if span is None or (name, *span) in seen:
                continue
            a, b = span
            middle = text[a:b]
            n = len(tok.encode(middle, add_special_tokens=False))
            if not middle.strip() or not 1 <= n <= max_tokens:
                continue
            seen.add((name, a, b))
            cases.append(Case(f"{kind}-{got:03d}", name, kind, text[:a], middle, text[b:]))
            got += 1
    return cases


def heldout_texts(corpus: Path | None = None) -> dict[str, str]:
    """``{relpath: text}`` of the held-out split (from a manifest folder, else built from this stdlib)."""
    from dgls.model.data import build_corpus, load_manifest, read_source, split_files

    files = load_manifest(corpus) if corpus else build_corpus(None)
    return {f.relpath: read_source(f) for f in split_files(files)[1]}


# ---------------------------------------------------------------------------------------------- scoring

_PARSER = None


def parses(source: str) -> bool:
    """Whether tree-sitter-python parses ``source`` without an error node."""
    global _PARSER
    if _PARSER is None:
        import tree_sitter
        import tree_sitter_python

        _PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))
    return not _PARSER.parse(source.encode("utf-8")).root_node.has_error


def token_accuracy(pred_ids: list[int], ref_ids: list[int]) -> float:
    """Share of reference positions whose token the prediction has at the same position."""
    if not ref_ids:
        return float(not pred_ids)
    return sum(p == r for p, r in zip(pred_ids, ref_ids, strict=False)) / len(ref_ids)


def score(case: Case, pred: str, tok) -> dict[str, float]:
    """Per-case scores of a predicted middle against the reference."""
    ref_ids = tok.encode(case.middle, add_special_tokens=False)
    pred_ids = tok.encode(pred, add_special_tokens=False)
    return {
        "exact": float(pred == case.middle),
        "exact_ws": float(pred.rstrip() == case.middle.rstrip()),
        "token_acc": token_accuracy(pred_ids, ref_ids),
        "char_sim": difflib.SequenceMatcher(None, pred, case.middle, autojunk=False).ratio(),
        "parses": float(parses(case.prefix + pred + case.suffix)),
        "len_ratio": len(pred_ids) / max(1, len(ref_ids)),
    }


def aggregate(rows: list[dict]) -> dict[str, float]:
    """Means of the scores plus NFE and latency statistics over ``rows`` (``score`` dicts with nfe/ms)."""
    if not rows:
        raise ValueError("aggregate needs at least one scored row, found none")
    out = {
        k: statistics.fmean(r[k] for r in rows)
        for k in ("exact", "exact_ws", "token_acc", "char_sim", "parses", "len_ratio", "offered", "offered_exact")
        if all(k in r for r in rows)
    }
    nfe = [r["nfe"] for r in rows if r.get("nfe") is not None]
    ms = sorted(r["ms"] for r in rows if r.get("ms") is not None)
    out["syntax_renoised"] = statistics.fmean(r.get("syntax_renoised", 0) for r in rows)
    out["n"] = len(rows)
    out["errors"] = sum(r.get("error", 0.0) for r in rows)
    out["nfe"] = statistics.fmean(nfe) if nfe else float("nan")
    out["ms"] = statistics.fmean(ms) if ms else float("nan")
    out["ms_p50"] = ms[len(ms) // 2] if ms else float("nan")
    out["ms_p95"] = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else float("nan")
    return out


# ------------------------------------------------------------------------------------------------ CLI


def run_cli(
    cases: list[Case], cmd: list[str], tok, oracle: bool, timeout: float = 3600, extra: dict | None = None
) -> list[dict]:
    """Send every case through ``cmd`` (``dgls infill --jsonl``) in one process; return its output objects.

    With ``oracle`` each request carries ``"n_middle"``: the reference middle's token count.
    """
    lines = []
    for c in cases:
        req = {"prefix": c.prefix, "suffix": c.suffix, "language": "python", "id": c.id, **(extra or {})}
        if oracle:
            req["n_middle"] = len(tok.encode(c.middle, add_special_tokens=False))
        lines.append(json.dumps(req))
    proc = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    outs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    # exit status 1 with one answer per line means some lines failed: they are scored as errors
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and len(outs) != len(cases)):
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    if len(outs) != len(cases):
        raise RuntimeError(
            f"{shlex.join(cmd)}: expected {len(cases)} output lines, found {len(outs)}; stderr: {proc.stderr[-2000:]}"
        )
    for o in outs:
        if "middle" not in o and "error" not in o:
            raise RuntimeError(f"{shlex.join(cmd)}: output line without 'middle' or 'error': {str(o)[:300]}")
    return outs


def evaluate(
    cases: list[Case], cmd: list[str], tok, modes=("variable", "oracle"), extra: dict | None = None
) -> dict[str, dict]:
    """Scores per ``mode/kind`` and ``mode/all`` (`extra`: fields added to every request)."""
    results: dict[str, dict] = {}
    for mode in modes:
        outs = run_cli(cases, cmd, tok, oracle=(mode == "oracle"), extra=extra)
        rows = []
        for c, o in zip(cases, outs, strict=True):
            # the model's own best (raw_middle; older CLIs and other tools give only middle), and the suggestion
            # an editor would get (middle: shaped and parse-checked, null when nothing survives)
            r = score(c, o.get("raw_middle", o.get("middle")) or "", tok)
            r.update(offered=float(o.get("middle") is not None), offered_exact=float(o.get("middle") == c.middle))
            r.update(kind=c.kind, nfe=o.get("nfe"), ms=o.get("ms"), error=float("error" in o))
            r.update(syntax_renoised=o.get("syntax_renoised", 0))
            rows.append(r)
        for kind in KINDS:
            sel = [r for r in rows if r["kind"] == kind]
            if sel:
                results[f"{mode}/{kind}"] = aggregate(sel)
        results[f"{mode}/all"] = aggregate(rows)
    return results


def table(results: dict[str, dict]) -> str:
    """Markdown table of :func:`evaluate`'s results."""
    head = (
        "| mode | kind | n | errors | exact | exact (ws) | token acc | char sim | parses | len ratio | mean NFE "
        "| ms mean | ms p50 | ms p95 | offered | offered exact | syntax renoised |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for key, r in results.items():
        mode, kind = key.split("/")
        rows.append(
            f"| {mode} | {kind} | {r['n']} | {r['errors']:.0f} | {r['exact']:.1%} | {r['exact_ws']:.1%} "
            f"| {r['token_acc']:.1%} "
            f"| {r['char_sim']:.2f} | {r['parses']:.1%} | {r['len_ratio']:.2f} | {r['nfe']:.1f} "
            f"| {r['ms']:.0f} | {r['ms_p50']:.0f} | {r['ms_p95']:.0f} "
            f"| {r.get('offered', float('nan')):.1%} | {r.get('offered_exact', float('nan')):.1%} "
            f"| {r['syntax_renoised']:.1f} |"
        )
    return head + "\n".join(rows) + "\n"


def machine_header(checkpoint: Path, cmd: list[str], argv: list[str]) -> str:
    """Machine, versions, commit and date for a results entry."""
    import tokenizers
    import torch
    import transformers

    commit, cpu = git_commit(), cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"## quality, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}\n\n"
        f"- machine: {cpu}, {os.cpu_count()} CPUs visible, GPU: {gpu}; {platform.platform()}\n"
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, tokenizers {tokenizers.__version__}\n"
        f"- checkpoint: {checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint}\n"
        f"- command: `python benchmarks/quality.py {shlex.join(argv)}` -> `{shlex.join(cmd)}`\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="tokenizer for case cutting and scoring")
    ap.add_argument("--corpus", type=Path, default=None, help="manifest folder (default: build from this stdlib)")
    ap.add_argument("--n-per-kind", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cmd",
        default=f"{shlex.quote(sys.executable)} -m dgls.cli infill --jsonl",
        help="infill command reading JSON lines on stdin",
    )
    ap.add_argument("--modes", default="variable,oracle")
    ap.add_argument(
        "--request",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="fields added to every request, e.g. '{\"syntax_guided\": false}'",
    )
    ap.add_argument("--cases-out", type=Path, default=None, help="also write the cases as JSON lines")
    ap.add_argument("--dry-run", action="store_true", help="cut the cases only; run nothing")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true", help="print, but do not append to RESULTS.md")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.checkpoint))
    t0 = time.perf_counter()
    cases = make_cases(heldout_texts(args.corpus), args.n_per_kind, tok, args.seed)
    print(f"{len(cases)} cases from held-out files in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.cases_out:
        args.cases_out.write_text("".join(json.dumps(asdict(c)) + "\n" for c in cases))
    if args.dry_run:
        return 0
    cmd = shlex.split(args.cmd)
    results = evaluate(cases, cmd, tok, tuple(args.modes.split(",")), extra=args.request)
    md = table(results)
    print(md)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    if not args.no_append:
        with args.results.open("a") as f:
            f.write("\n" + machine_header(args.checkpoint, cmd, argv) + "\n" + md)
    print(
        "RESULT "
        + json.dumps({k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items() if k.endswith("/all")})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
