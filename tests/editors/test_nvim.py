"""The Neovim plugin against the real server: tests/editors/nvim_test.lua in headless Neovim (0.11.4 from PyPI)."""

from __future__ import annotations

import os
import subprocess

from .conftest import REPO, tool


def test_nvim_plugin_end_to_end(dgls_server, editor_model):
    nvim = tool("nvim")
    env = {**os.environ, "DGLS_SERVER": dgls_server, "DGLS_MODEL": editor_model}
    script = REPO / "tests" / "editors" / "nvim_test.lua"
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-c", f"luafile {script}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "NVIM OK" in output, f"nvim exited {proc.returncode}:\n{output}"


def test_nvim_first_start_reports_nothing_and_a_missing_server_once(dgls_server):
    """``setup{}`` with no options: no warning or prompt; grey italic ghost text; one message for a missing server."""
    nvim = tool("nvim")
    env = {**os.environ, "DGLS_SERVER": dgls_server}
    script = REPO / "tests" / "editors" / "nvim_first_start.lua"
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-c", f"luafile {script}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "NVIM OK" in output, f"nvim exited {proc.returncode}:\n{output}"
