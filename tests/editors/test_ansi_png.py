"""editors/tools/ansi_png.py: the ANSI -> PNG renderer of the editor READMEs' screen captures."""

from __future__ import annotations

import importlib.util
import sys

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("ansi_png", REPO / "editors" / "tools" / "ansi_png.py")
ansi_png = importlib.util.module_from_spec(_spec)
sys.modules["ansi_png"] = ansi_png  # dataclasses look their module up there
_spec.loader.exec_module(ansi_png)


def test_sgr_parsing():
    grid = ansi_png.parse("a\x1b[1;38;5;196mb\x1b[0m\x1b[48;2;1;2;3mc\n\x1b[2;3m\u4f60d", cols=5, rows=3)
    assert [c.char if c else None for c in grid[0]] == ["a", "b", "c", None, None]
    assert grid[0][0].style == ansi_png.Style()
    assert grid[0][1].style == ansi_png.Style(fg=(255, 0, 0), bold=True)
    assert grid[0][2].style == ansi_png.Style(bg=(1, 2, 3))
    # the background carries to the next line (as tmux writes it); a wide character takes two cells
    assert grid[1][0].wide and grid[1][1] is None and grid[1][2].char == "d"
    assert grid[1][2].style == ansi_png.Style(bg=(1, 2, 3), dim=True, italic=True)
    assert grid[2] == [None] * 5
    assert ansi_png.apply_sgr(ansi_png.Style(), "38:2::10:20:30").fg == (10, 20, 30)
    assert ansi_png.xterm256(16) == (0, 0, 0) and ansi_png.xterm256(231) == (255, 255, 255)
    assert ansi_png.xterm256(244) == (128, 128, 128)


def test_render_size_and_colors(tmp_path):
    text = "ab\x1b[48;2;200;10;30m  \x1b[0m\n\x1b[7m \x1b[0m"
    img = ansi_png.render(text, cols=10, rows=2, font_size=14, padding=4)
    w, h = img.width - 8, img.height - 8  # 10 x 2 cells
    assert w % 10 == 0 and h % 2 == 0 and w // 10 >= 6 and h // 2 >= 12
    cw, ch = w // 10, h // 2
    if (ansi_png.FONT_DIR / "DejaVuSansMono.ttf").exists():
        assert (cw, ch) == (8, 17)  # DejaVu Sans Mono at 14 px
    # the middle of column 2, row 0: the truecolor background
    assert img.getpixel((4 + 2 * cw + cw // 2, 4 + ch // 2)) == (200, 10, 30)
    # an empty cell: the default background; a reversed space: the default foreground
    assert img.getpixel((4 + 8 * cw + cw // 2, 4 + ch // 2)) == ansi_png.DEFAULT_BG
    assert img.getpixel((4 + cw // 2, 4 + ch + ch // 2)) == ansi_png.DEFAULT_FG
    # a glyph in the default foreground draws pixels brighter than the background
    glyph = img.crop((4, 4, 4 + cw, 4 + ch)).convert("L")
    assert glyph.getextrema()[1] > 150
    out = tmp_path / "t.png"
    ansi_png.save_png(img, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
