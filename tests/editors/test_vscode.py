"""The VS Code extension: type check, lint, node tests against the real server, and the packaged .vsix."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from dgls.settings import Settings

from .conftest import REPO, tool

EXT = REPO / "editors" / "vscode"


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 240) -> str:
    proc = subprocess.run(
        cmd, cwd=EXT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output}"
    return output


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, with the extension's dependencies installed (npm ci from the lock file when node_modules is missing)."""
    tool("node")
    npm = tool("npm")
    if not (EXT / "node_modules" / ".package-lock.json").exists():
        run([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
    return npm


def test_typecheck_and_lint(npm):
    run([npm, "run", "--silent", "typecheck"])
    run([npm, "run", "--silent", "lint"])


def test_node_client_against_server(npm, dgls_server, editor_model):
    out = run([npm, "test"], env={"DGLS_SERVER": dgls_server, "DGLS_MODEL": editor_model})
    assert "# fail 0" in out, out


def test_vsix_contents(npm):
    run([npm, "run", "--silent", "package"])
    with zipfile.ZipFile(EXT / "dist" / "dgls.vsix") as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
    assert {"extension/package.json", "extension/dist/extension.js", "extension/readme.md"} <= names, names
    assert not any("node_modules" in n or n.endswith(".ts") or "/test/" in n for n in names), names
    assert manifest["main"] == "./dist/extension.js"
    assert manifest["engines"]["vscode"] == "^1.91.0"


def test_settings_defaults_match_the_server():
    """package.json's dgls.* defaults are the server's defaults (so sending them changes nothing)."""
    props = json.loads((EXT / "package.json").read_text())["contributes"]["configuration"]["properties"]
    client = {
        k.removeprefix("dgls."): v["default"]
        for k, v in props.items()
        if not k.startswith(("dgls.server.", "dgls.trace."))
    }
    assert client == Settings().to_json()


def test_types_vscode_pinned_to_engine():
    pkg = json.loads((EXT / "package.json").read_text())
    assert pkg["devDependencies"]["@types/vscode"] == pkg["engines"]["vscode"].lstrip("^")
    assert Path(EXT / "package-lock.json").exists()
