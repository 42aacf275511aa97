"""benchmarks/corpus_install.py: the pinned corpus packages, installed once each, failures reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("corpus_install", ROOT / "benchmarks" / "corpus_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_skips_a_folder_that_holds_the_pinned_version(tmp_path, monkeypatch):
    ci = _load()
    pinned = tmp_path / "p.txt"
    pinned.write_text("goodlib==1.0\nnewlib==2.0\n")
    (tmp_path / "site" / "goodlib" / "goodlib-1.0.dist-info").mkdir(parents=True)
    calls = []

    class Done:
        returncode = 1

    monkeypatch.setattr(ci.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    failed = ci.install_packages(tmp_path / "site", pinned, log=lambda m: None)
    assert failed == ["newlib==2.0"]  # the installed one is not asked for again; a failure is reported
    assert len(calls) == 1 and calls[0][-1] == "newlib==2.0" and "--no-deps" in calls[0]
    assert calls[0][calls[0].index("--target") + 1] == str(tmp_path / "site" / "newlib")
