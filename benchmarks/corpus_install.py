"""Install the pinned PyPI distributions of the training corpus into a throwaway folder (one folder each).

``model/corpus_packages.txt`` pins ``name==version`` lines; each is installed with pip as a wheel, without its
dependencies, into ``TARGET/<name>``, outside any environment (nothing is imported from it). A folder that
already holds the pinned version is kept, so a second run installs nothing. Then
``python -m dgls.model.data --out CORPUS --packages-dir TARGET`` reads them (licenses checked per wheel). pip runs
here, in this script, because the dgls package itself runs no commands.

    python benchmarks/corpus_install.py /tmp/dgls-corpus/site
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dgls.model.data import PACKAGES_FILE, read_pinned


def install_packages(target: Path, pinned: Path = PACKAGES_FILE, log: Callable[[str], None] = print) -> list[str]:
    """Install each pinned distribution into ``target/<name>``; returns those that failed."""
    failed = []
    for name, version in read_pinned(pinned):
        dest = target / name
        if any(dest.glob(f"*-{version}.dist-info")):
            continue
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--no-compile",
            "--disable-pip-version-check",
            "--target",
            str(dest),
            f"{name}=={version}",
        ]
        if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
            failed.append(f"{name}=={version}")
            log(f"could not install {name}=={version}; skipped")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=Path, help="a throwaway folder for the packages")
    ap.add_argument("--packages", type=Path, default=PACKAGES_FILE, help="pinned name==version list")
    args = ap.parse_args(argv)
    failed = install_packages(args.target, args.packages, log=lambda m: print(m, file=sys.stderr))
    if failed:
        print(f"error: {len(failed)} pinned packages could not be installed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
