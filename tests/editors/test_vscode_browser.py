"""The VS Code extension's UI in a real VS Code: code-server in headless Chromium, the packaged .vsix, the real server.

editors/vscode/browser/code-server.sh installs code-server and puppeteer-core once (outside the repository),
packages the extension, installs it into a private profile and starts code-server on loopback;
editors/vscode/browser/ui-test.mjs drives the workbench: ghost text appears as one types and Tab inserts it,
VS Code's accept reaches the server (`dgls.stats` `accepted` + 1, read through dgls: Show Statistics), the status
bar item shows the model and the latency, and dgls: Fill Holes from the command palette fills the hole in a
selection. What it cannot cover: the desktop (Electron) build of VS Code, whose extension host and native
integration differ; code-server is the same workbench and extension host code, served to a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .conftest import REPO, tool

BROWSER = REPO / "editors" / "vscode" / "browser"
TIMEOUT_S = 540  # the first run installs code-server (about 1.5 min here); a run takes about 30 s after that
HOLES = 'def total(xs):\n    """Return the sum of xs.\n\n    ...\n    """\n    return sum(xs)\n'


def _artifacts(tmp_path: Path) -> str:
    """Where to look when the test fails (screenshot, code-server's log, VS Code's logs), and the dgls log's end."""
    found = [tmp_path / "failure.png", tmp_path / "profile" / "code-server.log", tmp_path / "result.json"]
    channel = sorted((tmp_path / "profile" / "user" / "logs").glob("*/exthost*/dgls.dgls/dgls.log"))
    report = "\n".join(f"  {p}" for p in found + channel if p.exists())
    if channel:  # CI keeps no files: the end of the dgls output channel (the server's stderr is in it)
        lines = [line for line in channel[-1].read_text().splitlines() if "pygls.feature_manager" not in line]
        report += "\nthe dgls output channel ends:\n" + "\n".join(lines[-20:])
    return report


def test_vscode_ui_in_a_browser(tmp_path, dgls_server, editor_model):
    for name in ("node", "npm", "chromium", "rg", "curl"):
        tool(name)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    shutil.copy(REPO / "examples" / "fib.py", workspace / "fib.py")
    (workspace / "holes.py").write_text(HOLES)
    env = {
        **os.environ,
        "DGLS": dgls_server,
        "DGLS_MODEL": editor_model,
        "ARTIFACTS": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    # its own process group, so a timeout stops the driver and Chromium too (the script then stops code-server)
    proc = subprocess.Popen(
        [str(BROWSER / "code-server.sh"), str(BROWSER / "ui-test.mjs"), str(workspace), str(tmp_path / "profile")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        output += f"\n(stopped after {TIMEOUT_S} s)"
    assert proc.returncode == 0, (
        f"the VS Code browser test exited {proc.returncode}:\n{output[-6000:]}\nlook at:\n{_artifacts(tmp_path)}"
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result.get("passed") and result["statsAfter"]["accepted"] == result["statsBefore"]["accepted"] + 1, result
