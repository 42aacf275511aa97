"""Reproducible training corpus for the embedded model: permissively licensed Python source on this machine.

Sources:

* the CPython standard library of the running interpreter (``sysconfig.get_paths()["stdlib"]``, PSF license),
  without its test suites (``test/``, ``tests/``, ``idle_test/``, ...);
* optionally (``include_site_packages=True``) the ``.py`` files of installed distributions whose metadata
  declares a permissive license (MIT, BSD, Apache, PSF, ISC). Unknown or copyleft licenses are skipped, and
  so is anything that looks like an evaluation data set (HumanEval, MBPP, ...);
* optionally (``packages_dir``) the pinned PyPI distributions of ``corpus_packages.txt``, each installed
  (``--no-deps``, wheels only) into its own folder of a throwaway directory by
  ``benchmarks/corpus_install.py`` (pip runs there, never in the package), with
  the same license rule and at most ``max_dist_bytes`` of source per distribution, so that one large
  (often generated) package cannot dominate.

Any file whose *text* names an evaluation set is dropped too, whatever its package.

Every file gets a manifest record (path, package, license family, sha256, size, split). Exact duplicates
(same bytes) and normalized-text duplicates (same text after normalizing line endings and trailing
whitespace) are dropped, keeping the first path in sorted order. The train / held-out split is *by package*:
a whole top-level package or module (``json``, ``asyncio``, ``os``) is held out when a salted hash of its name
falls below ``heldout_fraction``, so held-out code is never seen in training, not even a sibling module.

Run ``python -m dgls.model.data --out data/corpus`` to write ``manifest.jsonl``; with
``--packages-dir DIR`` the packages installed there by ``benchmarks/corpus_install.py DIR`` are added.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"
SPLIT_SALT = "dgls-split-v1"
DEFAULT_HELDOUT_FRACTION = 0.09
DEFAULT_MAX_BYTES = 400_000  # larger files are generated tables (pydoc_data/topics.py), not code to learn
DEFAULT_MAX_DIST_BYTES = 20_000_000  # per PyPI distribution: transformers alone has 54 MB of source
PACKAGES_FILE = Path(__file__).with_name("corpus_packages.txt")  # pinned ``name==version`` lines
# The held-out packages of the shipped model's corpus, one name a line: quality is measured on them, so a model
# trained from another machine's installed packages must not see them (``--exclude-packages``).
HELDOUT_FILE = Path(__file__).with_name("corpus_heldout.txt")

# Path components that mark test suites and other non-library code inside a source tree.
SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "testing", "__pycache__", "site-packages", "dist-packages", "__phello__"}
)
# Names of distributions / packages that hold evaluation data: never train on these.
EVAL_NAME_RE = re.compile(
    r"human[-_]?eval|mbpp|evalplus|bigcodebench|livecodebench|ds[-_]?1000|codecontests|apps[-_]?eval|"
    r"crosscodeeval|repobench|santacoder[-_]?fim|safim",
    re.IGNORECASE,
)

PERMISSIVE_FAMILIES = ("MIT", "BSD", "Apache", "PSF", "ISC")
_COPYLEFT_RE = re.compile(r"\b(A?GPL|LGPL|GNU|MPL|Mozilla|EUPL|CDDL|EPL|Eclipse|copyleft)", re.IGNORECASE)
_FAMILY_PATTERNS = (
    ("Apache", re.compile(r"apache", re.IGNORECASE)),
    ("MIT", re.compile(r"\bMIT\b|expat", re.IGNORECASE)),
    ("BSD", re.compile(r"\bBSD\b|0BSD", re.IGNORECASE)),
    ("PSF", re.compile(r"\bPSF\b|Python Software Foundation", re.IGNORECASE)),
    ("ISC", re.compile(r"\bISC\b", re.IGNORECASE)),
)


@dataclass(frozen=True)
class SourceFile:
    """One corpus file as recorded in the manifest."""

    path: str  # absolute path on the machine that built the manifest
    relpath: str  # path relative to its source root (stdlib folder or site-packages)
    origin: str  # "stdlib" or "site-packages"
    package: str  # top-level package or module name: the unit of the train/held-out split
    distribution: str  # "cpython" or the installed distribution's name
    license: str  # license family: one of PERMISSIVE_FAMILIES
    sha256: str
    size: int
    split: str  # "train" or "heldout"


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library (the base interpreter's inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def site_packages_root() -> Path:
    """Folder of the running environment's site-packages (``purelib``)."""
    return Path(sysconfig.get_paths()["purelib"])


def is_heldout(package: str, fraction: float = DEFAULT_HELDOUT_FRACTION, salt: str = SPLIT_SALT) -> bool:
    """Whether a whole top-level package is held out: a salted sha256 of its name, compared to ``fraction``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1], found {fraction}")
    h = int.from_bytes(hashlib.sha256(f"{salt}:{package}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def top_level_package(relpath: str) -> str:
    """Top-level package or module of a path relative to a source root: ``json/decoder.py`` -> ``json``."""
    first = Path(relpath).parts[0]
    return first[:-3] if first.endswith(".py") else first


def normalized_text_hash(data: bytes) -> str:
    """sha256 of the text with CRLF/CR turned into LF, trailing whitespace and outer blank lines removed."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    norm = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
    return hashlib.sha256(norm.encode()).hexdigest()


def license_family(metadata_text: str) -> str | None:
    """License family (MIT, BSD, Apache, PSF, ISC) declared by a dist-info METADATA file, else None.

    Reads ``License-Expression``, ``License`` (first line only: some packages paste the whole license text)
    and ``Classifier: License ::``. Returns None when nothing is declared, when the declarations disagree on the
    family, or when anything copyleft (GPL, LGPL, MPL, ...) is mentioned, so that unknown means skipped.
    """
    msg = HeaderParser().parsestr(metadata_text)
    declared = [v for v in msg.get_all("License-Expression") or []]
    lic = msg.get("License")
    if lic:
        declared.append(lic.strip().splitlines()[0] if lic.strip() else "")
    declared += [c for c in msg.get_all("Classifier") or [] if c.startswith("License ::")]
    declared = [d for d in declared if d and d.strip().upper() not in ("UNKNOWN", "")]
    if not declared:
        return None
    families = set()
    for d in declared:
        if _COPYLEFT_RE.search(d):
            return None
        if d.startswith("License ::") and d.rstrip().endswith("OSI Approved"):
            continue  # the parent classifier says nothing about the family
        fam = next((name for name, pat in _FAMILY_PATTERNS if pat.search(d)), None)
        if fam is None:
            return None
        families.add(fam)
    if len(families) != 1:
        return None
    return families.pop()


def _skip_path(relpath: str) -> bool:
    parts = Path(relpath).parts
    if any(p in SKIP_DIRS for p in parts[:-1]):
        return True
    name = parts[-1]
    return name.startswith("test_") or name == "conftest.py"


def iter_stdlib(root: Path | None = None) -> Iterator[tuple[Path, str, str, str, str]]:
    """Yield ``(path, relpath, package, distribution, license)`` for the stdlib's library ``.py`` files."""
    root = root or stdlib_root()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if _skip_path(rel):
            continue
        yield path, rel, top_level_package(rel), "cpython", "PSF"


def iter_site_packages(root: Path | None = None) -> Iterator[tuple[Path, str, str, str, str]]:
    """Yield ``(path, relpath, package, distribution, license)`` for permissively licensed installed code.

    Only files listed in a distribution's RECORD are taken, so each file is attributed to the distribution that
    installed it; distributions without a readable METADATA, with an unknown or copyleft license, or named like
    an evaluation data set are skipped entirely.
    """
    root = root or site_packages_root()
    for dist_info in sorted(root.glob("*.dist-info")):
        meta, record = dist_info / "METADATA", dist_info / "RECORD"
        if not meta.is_file() or not record.is_file():
            continue
        text = meta.read_text(encoding="utf-8", errors="replace")
        name = HeaderParser().parsestr(text).get("Name") or dist_info.name.split("-")[0]
        if EVAL_NAME_RE.search(name):
            continue
        fam = license_family(text)
        if fam is None:
            continue
        for line in record.read_text(encoding="utf-8", errors="replace").splitlines():
            rel = line.split(",")[0]
            if not rel.endswith(".py") or rel.startswith("..") or _skip_path(rel):
                continue
            pkg = top_level_package(rel)
            if EVAL_NAME_RE.search(pkg):
                continue
            path = root / rel
            if path.is_file():
                yield path, rel, pkg, name, fam


def read_pinned(path: str | os.PathLike = PACKAGES_FILE) -> list[tuple[str, str]]:
    """``(name, version)`` pairs of a pinned list (``name==version`` per line; ``#`` comments)."""
    out = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path}: expected 'name==version', found {raw!r}")
        if EVAL_NAME_RE.search(name):
            raise ValueError(f"{path}: {name!r} looks like an evaluation data set; it must not be in the corpus")
        out.append((name.strip(), version.strip()))
    return out


def iter_packages_dir(target: str | os.PathLike) -> Iterator[tuple[Path, str, str, str, str]]:
    """Yield the permissive ``.py`` files of every distribution folder ``benchmarks/corpus_install.py`` made."""
    for dest in sorted(p for p in Path(target).iterdir() if p.is_dir()):
        yield from iter_site_packages(dest)


def build_manifest(
    sources: Iterable[tuple[Path, str, str, str, str]],
    origin: str,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    max_bytes: int = DEFAULT_MAX_BYTES,
    seen: set[str] | None = None,
    max_dist_bytes: int | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[SourceFile]:
    """Hash, dedupe and split source files; ``seen`` carries dedupe keys across several calls.

    Files are taken in the order given until a distribution reaches ``max_dist_bytes`` (None: no cap); a file
    whose text names an evaluation data set, or whose top-level package is in ``exclude``, is dropped.
    """
    seen = set() if seen is None else seen
    out = []
    dist_bytes: dict[str, int] = {}
    for path, rel, pkg, dist, fam in sources:
        if pkg in exclude:
            continue
        data = path.read_bytes()
        if not data.strip() or len(data) > max_bytes:
            continue
        if max_dist_bytes is not None and dist_bytes.get(dist, 0) + len(data) > max_dist_bytes:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a few legacy-encoded files: skip rather than guess
        if EVAL_NAME_RE.search(text):
            continue  # mentions an evaluation set: it may carry its problems; never train on them
        digest = hashlib.sha256(data).hexdigest()
        norm = normalized_text_hash(data)
        if digest in seen or norm in seen:
            continue
        seen.update((digest, norm))
        dist_bytes[dist] = dist_bytes.get(dist, 0) + len(data)
        # site-packages packages are split under their own namespace so "json" (stdlib) and a third-party
        # "json" cannot share a fate by accident.
        key = pkg if origin == "stdlib" else f"{origin}:{pkg}"
        split = "heldout" if is_heldout(key, heldout_fraction) else "train"
        out.append(SourceFile(str(path), rel, origin, pkg, dist, fam, digest, len(data), split))
    return out


def build_corpus(
    out_dir: str | os.PathLike | None = None,
    include_site_packages: bool = False,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    max_bytes: int = DEFAULT_MAX_BYTES,
    stdlib: Path | None = None,
    site_packages: Path | None = None,
    packages_dir: Path | None = None,
    max_dist_bytes: int = DEFAULT_MAX_DIST_BYTES,
    exclude: frozenset[str] = frozenset(),
) -> list[SourceFile]:
    """Collect, dedupe and split the corpus; write ``manifest.jsonl`` into ``out_dir`` when given.

    ``packages_dir`` is a folder ``benchmarks/corpus_install.py`` filled (its files are split under the ``pypi``
    origin). Packages named in ``exclude`` are left out of both splits (another corpus' held-out packages,
    when a model is trained elsewhere on what that machine has installed: :data:`HELDOUT_FILE`).
    """
    seen: set[str] = set()
    files = build_manifest(iter_stdlib(stdlib), "stdlib", heldout_fraction, max_bytes, seen, exclude=exclude)
    if include_site_packages:
        files += build_manifest(
            iter_site_packages(site_packages),
            "site-packages",
            heldout_fraction,
            max_bytes,
            seen,
            max_dist_bytes,
            exclude,
        )
    if packages_dir is not None:
        files += build_manifest(
            iter_packages_dir(packages_dir), "pypi", heldout_fraction, max_bytes, seen, max_dist_bytes, exclude
        )
    if out_dir is not None:
        write_manifest(files, Path(out_dir) / MANIFEST_NAME)
    return files


def write_manifest(files: Iterable[SourceFile], path: str | os.PathLike) -> None:
    """Write one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for sf in files:
            f.write(json.dumps(asdict(sf), sort_keys=True) + "\n")


def load_manifest(path: str | os.PathLike) -> list[SourceFile]:
    """Read a manifest written by :func:`write_manifest` (a folder holding ``manifest.jsonl`` also works)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"corpus manifest expected at {path}: no such file (build it with build_corpus)")
    with path.open(encoding="utf-8") as f:
        return [SourceFile(**json.loads(line)) for line in f if line.strip()]


def read_source(sf: SourceFile, verify: bool = True) -> str:
    """Text of a manifest file; with ``verify`` the sha256 must still match what the manifest recorded."""
    data = Path(sf.path).read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != sf.sha256:
        raise ValueError(f"{sf.path}: content changed since the manifest was built (sha256 differs)")
    return data.decode("utf-8")


def split_files(files: Iterable[SourceFile]) -> tuple[list[SourceFile], list[SourceFile]]:
    """``(train, heldout)`` lists of a manifest."""
    files = list(files)
    return [f for f in files if f.split == "train"], [f for f in files if f.split == "heldout"]


def summarize(files: Iterable[SourceFile], tokenizer=None) -> dict:
    """Counts and bytes per split, the held-out packages, files per license; tokens when given a tokenizer."""
    files = list(files)
    train, held = split_files(files)
    out = {
        "files": {"train": len(train), "heldout": len(held)},
        "bytes": {"train": sum(f.size for f in train), "heldout": sum(f.size for f in held)},
        "packages": {"train": len({f.package for f in train}), "heldout": len({f.package for f in held})},
        "distributions": len({f.distribution for f in files}),
        "heldout_packages": sorted({f"{f.origin}:{f.package}" for f in held}),
        "train_packages": sorted({f"{f.origin}:{f.package}" for f in train}),
        "licenses": {lic: sum(f.license == lic for f in files) for lic in sorted({f.license for f in files})},
    }
    if tokenizer is not None:
        enc = tokenizer.backend_tokenizer
        out["tokens"] = {
            name: sum(len(e.ids) for e in enc.encode_batch([read_source(f) for f in part], add_special_tokens=False))
            for name, part in (("train", train), ("heldout", held))
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build the corpus manifest and print a summary."""
    ap = argparse.ArgumentParser(prog="python -m dgls.model.data", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write manifest.jsonl into")
    ap.add_argument("--site-packages", action="store_true", help="also take permissively licensed packages")
    ap.add_argument("--heldout-fraction", type=float, default=DEFAULT_HELDOUT_FRACTION)
    ap.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    ap.add_argument(
        "--packages-dir",
        type=Path,
        default=None,
        help="add the PyPI packages benchmarks/corpus_install.py installed into this folder",
    )
    ap.add_argument("--max-dist-bytes", type=int, default=DEFAULT_MAX_DIST_BYTES)
    ap.add_argument("--count-tokens", metavar="TOKENIZER", default=None, help="also count tokens with this tokenizer")
    ap.add_argument(
        "--exclude-packages",
        type=Path,
        default=None,
        help=f"leave out the top-level packages listed in this file (e.g. {HELDOUT_FILE.name})",
    )
    args = ap.parse_args(argv)
    exclude: frozenset[str] = frozenset()
    if args.exclude_packages is not None:
        exclude = frozenset(x.split("#")[0].strip() for x in args.exclude_packages.read_text().splitlines()) - {""}
    if args.packages_dir is not None and not args.packages_dir.is_dir():
        print(
            f"error: --packages-dir {args.packages_dir}: no such folder (fill it with "
            "benchmarks/corpus_install.py first)",
            file=sys.stderr,
        )
        return 2
    files = build_corpus(
        args.out,
        args.site_packages,
        args.heldout_fraction,
        args.max_bytes,
        packages_dir=args.packages_dir,
        max_dist_bytes=args.max_dist_bytes,
        exclude=exclude,
    )
    tok = None
    if args.count_tokens:
        from .tokenizer import load_tokenizer

        tok = load_tokenizer(args.count_tokens)
    summary = summarize(files, tok)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
