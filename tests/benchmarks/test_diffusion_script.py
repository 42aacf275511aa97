"""The joint-fill and seeded-canvas benchmark (benchmarks/diffusion.py), end to end on a tiny random model."""

import hashlib
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from dgls.model.data import SourceFile, write_manifest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("diffusion_bench", ROOT / "benchmarks" / "diffusion.py")
assert spec is not None and spec.loader is not None
diffusion = importlib.util.module_from_spec(spec)
sys.modules["diffusion_bench"] = diffusion  # dataclasses look their module up there
spec.loader.exec_module(diffusion)

# held-out files: functions with several one-line statements, and lines that repeat (seeds to find)
ACCOUNTS = '''"""Accounts."""


class Account:
    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount):
        self.history.append(amount)
        self.balance = self.balance + amount
        return self.balance

    def withdraw(self, amount):
        self.history.append(-amount)
        self.balance = self.balance - amount
        return self.balance


def total(accounts):
    result = 0
    for account in accounts:
        result = result + account.balance
    print(result)
    return result
'''

SHAPES = '''"""Shapes."""


def area(width, height):
    size = width * height
    print(size)
    assert size >= 0
    return size


def scaled(width, height, factor):
    width = width * factor
    height = height * factor
    size = area(width, height)
    return size


def report(shapes):
    sizes = [area(w, h) for w, h in shapes]
    print(sizes)
    total = sum(sizes)
    return total
'''

N = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for name, text in (("accounts.py", ACCOUNTS), ("shapes.py", SHAPES)):
        path = folder / name
        path.write_text(text)
        data = text.encode()
        files.append(
            SourceFile(
                path=str(path),
                relpath=name,
                origin="stdlib",
                package=name[:-3],
                distribution="test",
                license="MIT",
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                split="heldout",
            )
        )
    write_manifest(files, folder / "manifest.jsonl")
    return folder


def test_both_sections_measure_every_case(corpus, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # main sets it: undone after the test
    threads = torch.get_num_threads()
    results = tmp_path / "RESULTS.md"
    argv = ["--model", str(tiny_checkpoint), "--corpus", str(corpus), "--n-joint", str(N), "--n-seeded", str(N)]
    argv += ["--threads", "1", "--no-append", "--results", str(results), "--json-out", str(tmp_path / "out.json")]
    try:
        assert diffusion.main(argv) == 0
        out = capsys.readouterr().out
        first = json.loads((tmp_path / "out.json").read_text())
        assert diffusion.main(argv) == 0  # a fixed seed: the same cases, the same fills
    finally:
        torch.set_num_threads(threads)
    assert not results.exists()  # --no-append

    report = json.loads((tmp_path / "out.json").read_text())
    assert report["joint"]["cases"] == first["joint"]["cases"]
    assert report["seeded"]["cases"] == first["seeded"]["cases"]
    joint = report["joint"]["summary"]
    assert set(joint) == {"joint", "one by one"}
    for method, row in joint.items():
        assert row["n"] == N, method
        assert row["nfe"] > 0 and row["ms_p50"] > 0, method
        assert 0 <= row["exact"] <= row["filled"] <= 1, method
    assert joint["one by one"]["calls"] == 3
    assert joint["joint"]["calls"] < joint["one by one"]["calls"]  # the three holes share a canvas
    for case in report["joint"]["cases"]:
        assert len(case["references"]) == 3 and len(case["joint"]["raw"]) == 3 and len(case["one by one"]["raw"]) == 3

    seeded = report["seeded"]["summary"]
    assert set(seeded) == {"noise", "seeded", "wrong seed"}
    assert seeded["noise"]["all"]["n"] == seeded["seeded"]["all"]["n"] == N
    assert seeded["wrong seed"]["all"]["n"] >= 1
    assert seeded["noise"]["all"]["seed_exact"] == 0 and seeded["wrong seed"]["all"]["seed_exact"] == 0
    for method, subsets in seeded.items():
        assert subsets["all"]["nfe"] > 0, method

    assert out.count("| joint | ") == 1 and out.count("| one by one | ") == 1
    assert all(f"| {method} | all | " in out for method in ("noise", "seeded", "wrong seed"))
    assert "## diffusion" in out and "commit " in out and "- command: `python benchmarks/diffusion.py" in out
    assert out.splitlines()[-1].startswith("RESULT {")


def test_cases_are_cut_deterministically_and_well_formed(corpus, tiny_checkpoint):
    from dgls.engine import Engine, EngineOptions

    texts = {"accounts.py": ACCOUNTS, "shapes.py": SHAPES}
    engine = Engine(EngineOptions(model=str(tiny_checkpoint), device="cpu", cache_size=0))
    try:
        engine.wait_ready()
        joint = diffusion.make_joint_cases(texts, N, engine, seed=5)
        assert [asdict(c) for c in joint] == [asdict(c) for c in diffusion.make_joint_cases(texts, N, engine, seed=5)]
        seeded = diffusion.make_seeded_cases(texts, N, engine, seed=5)
        assert len(joint) == len(seeded) == N
    finally:
        engine.shutdown()
    for case in joint:
        original = texts[case.file].split("\n")
        holed = case.text.split("\n")
        cut = [i for i, (a, b) in enumerate(zip(original, holed, strict=True)) if a != b]
        assert [holed[i].strip() for i in cut] == ["..."] * 3
        assert [original[i].strip() for i in cut] == case.references
        assert [case.text[a:b] for a, b in case.holes] == ["..."] * 3
    for case in seeded:
        source = texts[case.file]
        assert case.text[: case.offset] + case.reference + case.text[case.offset :] == source
        assert "\n" not in case.reference and case.reference.strip()
        assert case.seed.strip() and case.wrong.strip() not in (case.seed.strip(), case.reference.strip())
    assert any(case.wrong for case in seeded)
