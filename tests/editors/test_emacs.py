"""The generic-client check: Emacs's eglot (Emacs 28.2 + elpa-eglot 1.9 from Debian) against the real server.

tests/editors/emacs_eglot_test.el runs in `emacs --batch -Q`: it connects eglot to `dgls --stdio`, completes at
``return a|`` through ``completion-at-point`` (the item must survive Emacs's filtering by the word before point),
applies "Fill holes" through ``eglot-code-actions`` and shuts the server down, which must exit with 0.
"""

from __future__ import annotations

import os
import subprocess

from .conftest import REPO, tool


def test_eglot_completes_fills_and_shuts_down(dgls_server, editor_model, tmp_path):
    emacs = tool("emacs")
    env = {**os.environ, "DGLS_SERVER": dgls_server, "DGLS_MODEL": editor_model, "DGLS_WORKSPACE": str(tmp_path)}
    script = REPO / "tests" / "editors" / "emacs_eglot_test.el"
    proc = subprocess.run(
        [emacs, "--batch", "-Q", "-l", str(script)],
        stdin=subprocess.DEVNULL,  # a prompt (y-or-n-p, completing-read) fails at once instead of waiting
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "EMACS OK" in output, f"emacs exited {proc.returncode}:\n{output}"
