"""Joint fills and seeded canvases (issue #16) on held-out code, through the engine as the server calls it.

Two sections, each on cases cut by this script from the corpus' HELD-OUT files (a package drawn uniformly, then
one of its files, as in ``quality.py``), with a fixed seed, on one :class:`~dgls.engine.Engine` loaded once:

* ``joint``: a Python function (or method) with at least 3 single-line simple statements in its body (tree-sitter
  finds them; not docstrings, not in a nested def or class) has 3 of them, drawn at random, cut: each line becomes
  a hole line holding only ``...`` at its indentation. The holes are filled two ways on that same document, as
  "Fill holes" does (:meth:`dgls.policy.InfillPolicy.edit_spans`): ``joint`` (``Engine.joint_groups`` over the
  three span requests, one ``submit_joint`` per group) and ``one by one`` (one ``Engine.complete`` per hole; each
  sees the other holes as their ``...`` markers), both with ``min_tokens=1``. A fill goes through
  ``make_edits`` as the server's does (its first edit; a hole without one is not filled). Scores per hole: filled,
  exact (the filled line, stripped, equals the cut line, stripped); per case: all 3 exact, and whether the
  document with every fill applied (unfilled holes keep their ``...``) parses.
* ``seeded``: a cursor inside a line of a held-out file (after an identifier, ``(``, ``.`` or ``=``; the rest of
  the line is cut from the document and is the reference, as quality's ``rest_of_line``), kept when
  ``SeedIndex.lookup`` over that document (the file alone, indexed as the editor would see it) finds a seed
  there. Each case runs three ways on the same request: ``noise`` (no seed), ``seeded`` (the lookup's seed) and
  ``wrong seed`` (the seed of another case that differs from this one's seed and reference), as an inline
  completion is run (one candidate; ``min_tokens`` 1 only where the code at the cursor is unfinished). Scores:
  exact (the suggestion, ``make_edits``' first edit, stripped, equals the rest of the line, stripped), raw exact
  (the first line of the model's best middle), seed exact (the seed given, alone, was the reference), follows
  seed (the suggestion is the seed), and the same over the cases whose lookup seed was right and was not.

Every timed run starts with the model's prefix cache emptied, so no method reuses another's encoder work; a
method's own consecutive calls (one by one) reuse it as they would in the server. Times are wall-clock ms of the
model calls of a case (all of a method's calls together), NFE the decoder passes of those calls.

    python benchmarks/diffusion.py --corpus /root/dgls-corpus/corpus             # both sections, appended
    python benchmarks/diffusion.py --section seeded --n-seeded 8 --no-append     # a quick look

Run it on a quiet machine: on the 2-core development machine with other processes busy, 2 torch threads took
1.4 s a decoder pass against 60 ms with ``--threads 1`` (the same fills either way; only the times differ).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share provenance.py and quality.py
from provenance import cpu_name, git_commit, percentile  # noqa: E402
from quality import heldout_texts, parses  # noqa: E402

from dgls.actions import find_holes  # noqa: E402
from dgls.context import InfillRequest, SpanKind  # noqa: E402
from dgls.engine import Completion, Engine, EngineOptions  # noqa: E402
from dgls.model import DEFAULT_MODEL  # noqa: E402
from dgls.policy import span_request  # noqa: E402
from dgls.postprocess import make_edits  # noqa: E402
from dgls.seeds import SeedIndex  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("joint", "seeded")
HOLES = 3  # lines cut from each function
MARKER = "..."
# tree-sitter-python statements that sit on one line of their own; `pass` (a hole marker itself) is left out
SIMPLE_STATEMENTS = frozenset(
    {
        "expression_statement",
        "return_statement",
        "assert_statement",
        "delete_statement",
        "raise_statement",
        "break_statement",
        "continue_statement",
        "global_statement",
        "nonlocal_statement",
        "import_statement",
        "import_from_statement",
        "type_alias_statement",
    }
)
NESTED = frozenset({"function_definition", "class_definition", "decorated_definition"})  # cases of their own
CURSOR_AFTER = "(.="  # besides the end of an identifier


@dataclass
class JointCase:
    """A file with three holes in one function, and the lines they stand for."""

    id: str
    file: str
    text: str  # the file with HOLES of a function's lines replaced by hole lines
    holes: list[tuple[int, int]]  # the markers' spans in `text`, left to right
    references: list[str]  # the cut lines, stripped, in the same order
    requests: list[InfillRequest]  # each hole's request (policy.span_request's), built once


@dataclass
class SeededCase:
    """A cursor inside a line whose rest was cut, and the seeds to start its canvas from."""

    id: str
    file: str
    text: str  # the file with the rest of the cursor's line cut
    offset: int  # the cursor
    reference: str  # the rest of the line
    seed: str  # what SeedIndex.lookup found for the cursor
    wrong: str  # another case's seed, neither this seed nor the reference ('' when there is none)
    request: InfillRequest


# ------------------------------------------------------------------------------------------------ files


class HeldOut:
    """The held-out files, drawn as quality.py draws them: a package uniformly, then one of its files.

    Each file is parsed the first time it is drawn (not all of them up front: the corpus holds 54 MB); a file
    that does not parse is never used, so a parse failure in a result is the fill's doing.
    """

    def __init__(self, texts: dict[str, str], seed: int) -> None:
        packages: dict[str, list[str]] = {}
        for name in sorted(n for n, t in texts.items() if t.strip()):
            packages.setdefault(name.split("/")[0].removesuffix(".py"), []).append(name)
        if not packages:
            raise ValueError("the benchmark needs at least one non-empty held-out file; found none")
        self.texts = texts
        self.groups = [packages[k] for k in sorted(packages)]
        self.rng = random.Random(seed)
        self._trees: dict[str, Any] = {}

    def draw(self) -> tuple[str, Any] | None:
        """A file's name and tree-sitter tree, or None when the drawn file does not parse."""
        name = self.rng.choice(self.rng.choice(self.groups))
        if name not in self._trees:
            tree = _parser().parse(self.texts[name].encode("utf-8"))
            self._trees[name] = None if tree.root_node.has_error else tree
        tree = self._trees[name]
        return None if tree is None else (name, tree)


_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        import tree_sitter

        from dgls.languages import grammar

        _PARSER = tree_sitter.Parser(grammar("python"))
    return _PARSER


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line, the end before its ``\\r\\n`` or ``\\n``."""
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line.rstrip("\r"))))
        start += len(line) + 1
    return spans


# ------------------------------------------------------------------------------------------ joint cases


def function_bodies(tree: Any, text: str) -> list[list[int]]:
    """For each function with at least HOLES simple one-line statements in its body: their line numbers."""
    lines = text.split("\n")
    out, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "function_definition":
            continue
        body = node.child_by_field_name("body")
        rows = sorted(_simple_lines(body, lines)) if body is not None else []
        if len(rows) >= HOLES:
            out.append(rows)
    return sorted(out)


def _simple_lines(body: Any, lines: list[str]) -> Iterator[int]:
    """Rows of `body` that hold one simple statement and nothing else (no comment, no ``;``), nested defs aside."""
    stack = list(body.children)
    while stack:
        node = stack.pop()
        if node.type in NESTED:
            continue
        if node.type not in SIMPLE_STATEMENTS:
            stack.extend(node.children)
            continue
        row = node.start_point[0]
        code = lines[row].strip()
        kinds = [n.type for n in node.named_children]
        docstring = node.type == "expression_statement" and kinds in (["string"], ["concatenated_string"])
        if row == node.end_point[0] and not docstring and code != MARKER and code == node.text.decode("utf-8"):
            yield row


def make_joint_cases(texts: dict[str, str], n: int, engine: Engine, seed: int = 0) -> list[JointCase]:
    """Cut `n` joint cases (at most one per function), deterministically for a seed.

    A cut line must fit the canvas its hole gets (:meth:`Engine.lengths_for` of its request), so that an exact
    fill is possible.
    """
    files = HeldOut(texts, seed)
    rng = files.rng
    bodies: dict[str, list[list[int]]] = {}
    cases: list[JointCase] = []
    seen: set[tuple[str, int]] = set()
    tries = 0
    while len(cases) < n and tries < 200 * n:
        tries += 1
        drawn = files.draw()
        if drawn is None:
            continue
        name, tree = drawn
        source = texts[name]
        if name not in bodies:
            bodies[name] = function_bodies(tree, source)
        if not bodies[name]:
            continue
        rows = rng.choice(bodies[name])
        if (name, rows[0]) in seen:
            continue
        cut = sorted(rng.sample(rows, HOLES))
        lines = source.split("\n")
        references = [lines[r].strip() for r in cut]
        for r in cut:
            indent = lines[r][: len(lines[r]) - len(lines[r].lstrip())]
            lines[r] = indent + MARKER + ("\r" if lines[r].endswith("\r") else "")
        text = "\n".join(lines)
        spans = _line_spans(text)
        holes = [h for r in cut for h in find_holes(text, (MARKER,), *spans[r])]
        assert len(holes) == HOLES, f"expected {HOLES} holes on lines {cut} of {name}, found {holes}"
        requests = [span_request(engine, text, "python", a, b) for a, b in holes]
        room = [max(engine.lengths_for(r)) for r in requests]  # each hole's canvas
        if any(engine.count_tokens(ref) > n for ref, n in zip(references, room, strict=True)):
            continue
        seen.add((name, rows[0]))
        cases.append(JointCase(f"joint-{len(cases):03d}", name, text, holes, references, requests))
    return cases


# ----------------------------------------------------------------------------------------- seeded cases


def _cursors(text: str, start: int, end: int) -> list[int]:
    """Cursor offsets in the line ``text[start:end]``: after an identifier or ``(.=``, code left after them."""
    code = text[start:end]
    if not code.strip() or code.lstrip().startswith("#"):
        return []
    indent = start + len(code) - len(code.lstrip())
    out = []
    for i in range(indent + 1, end):
        before, after = text[i - 1], text[i]
        word_end = (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")
        if (word_end or before in CURSOR_AFTER) and text[i:end].strip():
            out.append(i)
    return out


def make_seeded_cases(texts: dict[str, str], n: int, engine: Engine, seed: int = 0) -> list[SeededCase]:
    """Cut `n` seeded cases, deterministically for a seed: only cursors for which the file holds a seed.

    The rest of the line must fit the request's canvas and the cursor must be where the server completes
    automatically (a rest-of-line span, not in a string or comment).
    """
    files = HeldOut(texts, seed + 1)  # not the joint section's draws
    rng = files.rng
    indexes: dict[str, SeedIndex] = {}  # one per file: a seed comes from the file itself
    spans: dict[str, list[tuple[int, int]]] = {}
    found: list[tuple[str, str, int, str, str, InfillRequest]] = []
    seen: set[tuple[str, int]] = set()
    tries = 0
    while len(found) < n and tries < 200 * n:
        tries += 1
        drawn = files.draw()
        if drawn is None:
            continue
        name = drawn[0]
        source = texts[name]
        if name not in spans:
            spans[name] = _line_spans(source)
        start, end = rng.choice(spans[name])
        cursors = _cursors(source, start, end)
        if not cursors:
            continue
        offset = rng.choice(cursors)
        if (name, offset) in seen:
            continue
        seen.add((name, offset))
        text, reference = source[:offset] + source[end:], source[offset:end]
        index = indexes.setdefault(name, SeedIndex())
        index.update(name, text)  # the document as the editor has it: the rest of the line not typed yet
        hit = index.lookup(text[:offset], exclude_at=(name, offset))
        if hit is None:
            continue
        request = engine.build_request(text, offset, language="python")
        if request.span is not SpanKind.REST_OF_LINE or request.in_string or request.in_comment:
            continue
        if engine.count_tokens(reference) > max(engine.lengths_for(request)):
            continue
        found.append((name, text, offset, reference, hit.text, request))
    cases = []
    for k, (name, text, offset, reference, seed_text, request) in enumerate(found):
        others = (found[(k + j) % len(found)][4] for j in range(1, len(found)))
        wrong = next((s for s in others if s.strip() not in (seed_text.strip(), reference.strip())), "")
        cases.append(SeededCase(f"seeded-{k:03d}", name, text, offset, reference, seed_text, wrong, request))
    return cases


# ---------------------------------------------------------------------------------------------- running


def warm_up(engine: Engine) -> None:
    """One untimed plain call and one untimed joint fill: what runs once per process is not any case's cost."""
    text = "def f(x):\n    ...\n    y = x + 1\n    ...\n"
    holes = [span_request(engine, text, "python", a, b) for a, b in find_holes(text, (MARKER,))]
    engine.complete(holes[0], min_tokens=1)
    for group in engine.joint_groups(text, holes):
        engine.submit_joint(group, min_tokens=1).result()


def _cold(engine: Engine) -> None:
    """Empty the model's prefix cache, so that a run does not reuse the encoder work of the one before it."""
    cache = getattr(engine._infiller, "prefix_cache", None)  # the in-process model's (dgls.model.backend)
    if cache is not None:
        cache.clear()


def _timed(submit: Callable[[], Future]) -> tuple[Completion, float]:
    """A model call's completion and its wall time in ms, from submit to result."""
    t0 = time.perf_counter()
    done = submit().result()
    assert not done.cached, "the result cache answered: the benchmark needs EngineOptions(cache_size=0)"
    return done, (time.perf_counter() - t0) * 1e3


def run_joint_case(engine: Engine, case: JointCase, joint: bool, seed: int) -> dict[str, Any]:
    """Fill a case's holes jointly or one by one; the per-case scores."""
    _cold(engine)
    calls, nfe, ms = 0, 0, 0.0
    fills: list[list[Any]] = []  # per hole: make_edits' edits
    raw: list[str] = []  # per hole: the model's best middle
    if joint:
        for group in engine.joint_groups(case.text, case.requests):
            done, t = _timed(partial(engine.submit_joint, group, seed=seed, min_tokens=1))
            calls, nfe, ms = calls + 1, nfe + done.nfe, ms + t
            assert done.holes is not None, f"a joint fill came back without holes: {done}"
            fills += [make_edits(case.text, r, [c]) for r, c in zip(group.holes, done.holes, strict=True)]
            raw += [c.text for c in done.holes]
    else:
        for request in case.requests:
            done, t = _timed(partial(engine.submit, request, seed=seed, min_tokens=1))
            calls, nfe, ms = calls + 1, nfe + done.nfe, ms + t
            fills.append(make_edits(case.text, request, done.candidates))
            raw.append(done.text)
    edits = [found[0] if found else None for found in fills]
    exact = [e is not None and e.new_text.strip() == ref for e, ref in zip(edits, case.references, strict=True)]
    text = case.text
    for e in sorted((e for e in edits if e is not None), key=lambda e: e.start, reverse=True):
        text = text[: e.start] + e.new_text + text[e.end :]
    return {
        "filled": sum(e is not None for e in edits) / HOLES,
        "exact": sum(exact) / HOLES,
        "raw_exact": sum(m.strip() == ref for m, ref in zip(raw, case.references, strict=True)) / HOLES,
        "all_exact": float(all(exact)),
        "parses": float(parses(text)),
        "calls": calls,
        "nfe": nfe,
        "ms": ms,
        "fills": [None if e is None else e.new_text for e in edits],
        "raw": raw,
    }


SEEDED_METHODS = ("noise", "seeded", "wrong seed")


def run_seeded_case(engine: Engine, case: SeededCase, method: str, seed: int) -> dict[str, Any] | None:
    """One way of completing a seeded case (None for ``wrong seed`` when the case has no wrong seed)."""
    seed_text = {"noise": "", "seeded": case.seed, "wrong seed": case.wrong}[method]
    if method == "wrong seed" and not seed_text:
        return None
    _cold(engine)
    request = case.request
    min_tokens = 1 if request.incomplete else 0
    done, ms = _timed(partial(engine.submit, request, seed=seed, min_tokens=min_tokens, seed_text=seed_text))
    found = make_edits(case.text, request, done.candidates)
    suggestion = found[0].new_text if found else None
    ref = case.reference.strip()
    return {
        "offered": float(suggestion is not None),
        "exact": float(suggestion is not None and suggestion.strip() == ref),
        "raw_exact": float(done.text.split("\n", 1)[0].strip() == ref),
        "seed_exact": float(bool(seed_text) and seed_text.strip() == ref),
        "follows_seed": float(bool(seed_text) and suggestion is not None and suggestion.strip() == seed_text.strip()),
        "seed_right": case.seed.strip() == ref,  # the lookup's seed, whatever this run was given
        "nfe": done.nfe,
        "ms": ms,
        "suggestion": suggestion,
    }


# ------------------------------------------------------------------------------------------- aggregates


def _summary(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Means of `keys` over `rows`, their count, and the p50 / p95 of their ms."""
    ms = [r["ms"] for r in rows]
    out: dict[str, Any] = {"n": len(rows), **{k: statistics.fmean(r[k] for r in rows) for k in keys}}
    out.update(ms_p50=percentile(ms, 50), ms_p95=percentile(ms, 95))
    return out


def joint_section(engine: Engine, cases: list[JointCase], seed: int) -> dict[str, Any]:
    """Both methods on every case: per-method means, and the per-case rows."""
    rows: dict[str, list[dict[str, Any]]] = {"joint": [], "one by one": []}
    for k, case in enumerate(cases):
        for method in sorted(rows, reverse=k % 2 == 1):  # which goes first alternates: drift hits both alike
            rows[method].append(run_joint_case(engine, case, method == "joint", seed))
        j, o = rows["joint"][-1], rows["one by one"][-1]
        print(
            f"joint {k + 1}/{len(cases)} {case.file}: joint {j['exact']:.2f} exact, {j['calls']} call(s), "
            f"{j['ms']:.0f} ms; one by one {o['exact']:.2f} exact, {o['ms']:.0f} ms",
            file=sys.stderr,
        )
    keys = ("filled", "exact", "raw_exact", "all_exact", "parses", "calls", "nfe", "ms")
    summary = {method: _summary(r, keys) for method, r in rows.items()}
    cases_out = [
        {
            "id": c.id,
            "file": c.file,
            "references": c.references,
            **{m: {"fills": rows[m][k]["fills"], "raw": rows[m][k]["raw"]} for m in rows},
        }
        for k, c in enumerate(cases)
    ]
    return {"summary": summary, "cases": cases_out}


def seeded_section(engine: Engine, cases: list[SeededCase], seed: int) -> dict[str, Any]:
    """The three ways on every case: means per way over all cases and over those whose seed was right / wrong."""
    rows: dict[str, list[dict[str, Any] | None]] = {m: [] for m in SEEDED_METHODS}  # per case; None: not run
    for k, case in enumerate(cases):
        shift = k % len(SEEDED_METHODS)  # which goes first rotates: drift hits all alike
        for method in SEEDED_METHODS[shift:] + SEEDED_METHODS[:shift]:
            rows[method].append(run_seeded_case(engine, case, method, seed))
        print(
            f"seeded {k + 1}/{len(cases)} {case.file}: seed {case.seed.strip()[:30]!r} for "
            f"{case.reference.strip()[:30]!r}; "
            + ", ".join(f"{m} nfe {last['nfe']}" for m, r in rows.items() if (last := r[-1]) is not None),
            file=sys.stderr,
        )
    keys = ("offered", "exact", "raw_exact", "seed_exact", "follows_seed", "nfe", "ms")
    summary: dict[str, dict[str, Any]] = {}
    for method, per_case in rows.items():
        ran = [r for r in per_case if r is not None]
        summary[method] = {}
        for subset, sel in (
            ("all", ran),
            ("seed right", [r for r in ran if r["seed_right"]]),
            ("seed not right", [r for r in ran if not r["seed_right"]]),
        ):
            if sel:
                summary[method][subset] = _summary(sel, keys)
    cases_out = [
        {
            "id": c.id,
            "file": c.file,
            "reference": c.reference,
            "seed": c.seed,
            "wrong": c.wrong,
            **{m: None if (row := r[k]) is None else row["suggestion"] for m, r in rows.items()},
        }
        for k, c in enumerate(cases)
    ]
    return {"summary": summary, "cases": cases_out}


# --------------------------------------------------------------------------------------------- reporting


def _pct(x: float) -> str:
    return f"{x:.1%}"


def joint_table(summary: dict[str, dict[str, float]]) -> str:
    """Markdown table of the joint section."""
    head = (
        "| method | cases | holes filled | exact / hole | raw exact / hole | all 3 exact | parses | model calls / case "
        "| NFE / case | ms / case p50 | ms / case p95 |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [
        f"| {m} | {r['n']} | {_pct(r['filled'])} | {_pct(r['exact'])} | {_pct(r['raw_exact'])} "
        f"| {_pct(r['all_exact'])} | {_pct(r['parses'])} | {r['calls']:.2f} | {r['nfe']:.1f} "
        f"| {r['ms_p50']:.0f} | {r['ms_p95']:.0f} |"
        for m, r in summary.items()
    ]
    return head + "\n".join(rows) + "\n"


def seeded_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table of the seeded section."""
    head = (
        "| canvas | cases | n | offered | exact | raw exact | seed exact | follows seed | mean NFE | ms p50 "
        "| ms p95 |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for m, subsets in summary.items():
        for subset, r in subsets.items():
            rows.append(
                f"| {m} | {subset} | {r['n']} | {_pct(r['offered'])} | {_pct(r['exact'])} | {_pct(r['raw_exact'])} "
                f"| {_pct(r['seed_exact'])} | {_pct(r['follows_seed'])} | {r['nfe']:.1f} | {r['ms_p50']:.0f} "
                f"| {r['ms_p95']:.0f} |"
            )
    return head + "\n".join(rows) + "\n"


def machine_header(checkpoint: str, argv: list[str], threads: int) -> str:
    """Machine, versions, commit, checkpoint and command for a results entry."""
    import tokenizers
    import torch
    import transformers

    path = Path(checkpoint)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return (
        f"## diffusion (joint fills, seeded canvases), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {git_commit()}\n\n"
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs visible, {threads} torch thread(s), CPU inference; "
        f"{platform.platform()}\n"
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, tokenizers {tokenizers.__version__}\n"
        f"- checkpoint: {shown}\n"
        f"- command: `python benchmarks/diffusion.py {shlex.join(argv)}`\n"
    )


JOINT_NOTE = (
    "{n} functions from held-out files, {holes} one-line statements of each cut to `...` hole lines; the same "
    "holes filled jointly (one canvas per group of holes) and one by one (one call per hole), min_tokens=1, "
    "fills through make_edits. exact / hole: the filled line equals the cut one (stripped); raw exact / hole: the "
    "model's middle for the hole equals it, before make_edits; parses: the file with every fill applied (an unfilled "
    "hole keeps its `...`); ms: wall time of a case's model calls.\n"
)
SEEDED_NOTE = (
    "{n} cursors inside lines of held-out files (after an identifier, `(`, `.` or `=`; the rest of the line cut) "
    "where SeedIndex.lookup finds a seed in the same file; each run with no seed (noise), with that seed, and with "
    "another case's seed ({wrong} cases have one). exact: the suggestion (make_edits' first edit) equals the rest of "
    "the line (stripped); raw exact: the model's best middle's first line; seed exact: the seed given was the rest "
    "of the line; follows seed: the suggestion is the seed given. Rows by whether the lookup's seed was right.\n"
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint name or folder")
    ap.add_argument("--corpus", type=Path, default=None, help="manifest folder (default: build from this stdlib)")
    ap.add_argument("--section", choices=("joint", "seeded", "both"), default="both")
    ap.add_argument("--n-joint", type=int, default=40, help="functions for the joint section")
    ap.add_argument("--n-seeded", type=int, default=40, help="cursors for the seeded section")
    ap.add_argument("--seed", type=int, default=0, help="case cutting and the sampler")
    ap.add_argument("--threads", type=int, default=2, help="torch (and OpenMP) threads")
    ap.add_argument(
        "--seed-confidence", type=float, default=None, help="the sampler's seed_confidence (default: the model's)"
    )
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--no-append", action="store_true", help="print, but do not append to RESULTS.md")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    sections = SECTIONS if args.section == "both" else (args.section,)

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is first imported (the engine's load)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sampler = {"seed_confidence": args.seed_confidence} if args.seed_confidence is not None else {}
    engine = Engine(EngineOptions(model=args.model, device="cpu", cache_size=0, sampler=sampler, threads=args.threads))
    try:
        engine.wait_ready()
        warm_up(engine)
        texts = heldout_texts(args.corpus)
        print(f"model and {len(texts)} held-out files in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        results: dict[str, Any] = {}
        md = ""
        if "joint" in sections:
            t0 = time.perf_counter()
            joint = make_joint_cases(texts, args.n_joint, engine, args.seed)
            print(f"{len(joint)} joint cases in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            if not joint:
                raise SystemExit("diffusion.py: no joint case could be cut from the held-out files")
            results["joint"] = joint_section(engine, joint, args.seed)
            md += (
                "\n### joint: three holes of a function, one canvas vs one call each\n\n"
                + JOINT_NOTE.format(n=len(joint), holes=HOLES)
                + "\n"
                + joint_table(results["joint"]["summary"])
            )
        if "seeded" in sections:
            t0 = time.perf_counter()
            seeded = make_seeded_cases(texts, args.n_seeded, engine, args.seed)
            print(f"{len(seeded)} seeded cases in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            if not seeded:
                raise SystemExit("diffusion.py: no seeded case could be cut from the held-out files")
            results["seeded"] = seeded_section(engine, seeded, args.seed)
            md += (
                "\n### seeded: canvases started from a workspace seed vs noise\n\n"
                + SEEDED_NOTE.format(n=len(seeded), wrong=sum(bool(c.wrong) for c in seeded))
                + "\n"
                + seeded_table(results["seeded"]["summary"])
            )
        header = machine_header(engine.info["model"], argv, args.threads)
    finally:
        engine.shutdown()
    print(header + md)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    if not args.no_append:
        with args.results.open("a") as f:
            f.write("\n" + header + md)
    print("RESULT " + json.dumps({name: section["summary"] for name, section in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
