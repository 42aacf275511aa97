"""The quality benchmark's case cutter and scorer (benchmarks/quality.py), with stand-in CLIs."""

import importlib.util
import json
import sys
import sysconfig
from pathlib import Path

import pytest

from dgls.model.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
sys.modules["quality"] = quality  # dataclasses look their module up there
spec.loader.exec_module(quality)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FILES = ["textwrap.py", "shlex.py", "heapq.py", "fnmatch.py", "sched.py"]


@pytest.fixture(scope="module")
def texts():
    return {name: (STDLIB / name).read_text() for name in FILES}


@pytest.fixture(scope="module")
def tok(texts, tmp_path_factory):
    return train_tokenizer(list(texts.values()), tmp_path_factory.mktemp("tok"), vocab_size=500)


def test_cases_are_deterministic_well_formed_and_cut_at_lines(texts, tok):
    cases = quality.make_cases(texts, 10, tok, seed=3)
    assert cases == quality.make_cases(texts, 10, tok, seed=3)
    assert cases != quality.make_cases(texts, 10, tok, seed=4)
    assert [c.kind for c in cases].count("multi_line") == 10 and len(cases) == 30
    for c in cases:
        assert c.prefix + c.middle + c.suffix == texts[c.file]
        assert 1 <= len(tok.encode(c.middle, add_special_tokens=False)) <= 64
        assert c.middle.strip()
        assert c.suffix == "" or c.suffix.startswith("\n")  # every kind ends at a line end
        if c.kind == "multi_line":
            assert len([line for line in c.middle.split("\n") if line.strip()]) >= 2, repr(c.middle)
        else:
            assert "\n" not in c.middle
        if c.kind == "single_line":
            assert c.prefix.endswith("\n") or c.prefix.split("\n")[-1].isspace() or c.prefix == ""


def test_score_exact_partial_and_broken(texts, tok):
    case = quality.Case("x", "f.py", "single_line", "def f(x):\n    ", "return x + 1", "\n")
    good = quality.score(case, "return x + 1", tok)
    assert good == {"exact": 1.0, "exact_ws": 1.0, "token_acc": 1.0, "char_sim": 1.0, "parses": 1.0, "len_ratio": 1.0}
    ws = quality.score(case, "return x + 1  ", tok)
    assert ws["exact"] == 0.0 and ws["exact_ws"] == 1.0
    broken = quality.score(case, "return (x +", tok)
    assert broken["parses"] == 0.0 and broken["exact"] == 0.0 and 0 < broken["token_acc"] < 1
    assert quality.token_accuracy([], []) == 1.0 and quality.token_accuracy([1], []) == 0.0
    assert quality.token_accuracy([1, 2, 9], [1, 2, 3, 4]) == 0.5


FAKE_CLI = r"""
import json, sys
truth = json.load(open(sys.argv[1]))
for line in sys.stdin:
    req = json.loads(line)
    mid = truth[req["prefix"][-200:] + "|" + req["suffix"][:200]] if sys.argv[2] == "oracle" else ""
    n = req.get("n_middle")
    print(json.dumps({"middle": mid, "nfe": 3 if n is None else n, "ms": 10.0}), flush=True)
"""


def test_evaluate_through_a_subprocess_cli(texts, tok, tmp_path):
    cases = quality.make_cases(texts, 3, tok, seed=0)
    truth = {c.prefix[-200:] + "|" + c.suffix[:200]: c.middle for c in cases}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "cli.py").write_text(FAKE_CLI)
    perfect = quality.evaluate(
        cases, [sys.executable, str(tmp_path / "cli.py"), str(tmp_path / "truth.json"), "oracle"], tok
    )
    for key in ("variable/all", "oracle/all", "variable/rest_of_line", "oracle/multi_line"):
        assert perfect[key]["exact"] == 1.0 and perfect[key]["parses"] == 1.0, key
    assert perfect["variable/all"]["nfe"] == 3.0
    # the oracle mode sends the reference token count
    n_ref = [len(tok.encode(c.middle, add_special_tokens=False)) for c in cases]
    assert perfect["oracle/all"]["nfe"] == pytest.approx(sum(n_ref) / len(n_ref))
    empty = quality.evaluate(
        cases,
        [sys.executable, str(tmp_path / "cli.py"), str(tmp_path / "truth.json"), "empty"],
        tok,
        modes=("variable",),
    )
    assert empty["variable/all"]["exact"] == 0.0 and empty["variable/all"]["token_acc"] == 0.0
    md = quality.table(perfect)
    assert md.count("\n") == 2 + len(perfect) and "| oracle | all |" in md


def test_cli_errors_are_reported(texts, tok, tmp_path):
    cases = quality.make_cases(texts, 1, tok, seed=0)
    with pytest.raises(RuntimeError, match="expected 3 output lines, found 0"):
        quality.run_cli(cases, [sys.executable, "-c", "import sys; sys.stdin.read()"], tok, oracle=False)
    with pytest.raises(RuntimeError, match="exited with 3"):
        quality.run_cli(cases, [sys.executable, "-c", "import sys; sys.exit(3)"], tok, oracle=False)
    # a failed line (exit status 1, one answer per line) is scored as an error, not a crash
    some_fail = (
        "import sys, json\nfor i, line in enumerate(sys.stdin):\n"
        "    print(json.dumps({'error': 'bad'} if i == 0 else {'middle': '', 'nfe': 1, 'ms': 1.0}))\n"
        "sys.exit(1)"
    )
    res = quality.evaluate(cases, [sys.executable, "-c", some_fail], tok, modes=("variable",))
    assert res["variable/all"]["errors"] == 1 and res["variable/all"]["n"] == 3
