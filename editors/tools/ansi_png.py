"""Render terminal text with ANSI SGR escapes (e.g. `tmux capture-pane -e -p -N`) to a PNG with Pillow.

A dev tool for the editor READMEs' screen captures; Pillow is not a dependency of dgls (only of its `test`
extra, for tests/editors/test_ansi_png.py). Understands SGR: reset, bold, dim, italic, underline, reverse, the
8/16 colors, 256 colors (`38;5;n`) and truecolor (`38;2;r;g;b`, also with colons), for foreground and
background. Other escape sequences (CSI, OSC) are skipped. East Asian wide characters take two cells.

    python editors/tools/ansi_png.py capture.ans out.png --cols 100 --rows 30
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {  # (bold, italic) -> file
    (False, False): "DejaVuSansMono.ttf",
    (True, False): "DejaVuSansMono-Bold.ttf",
    (False, True): "DejaVuSansMono-Oblique.ttf",
    (True, True): "DejaVuSansMono-BoldOblique.ttf",
}

RGB = tuple[int, int, int]

# the 16 base colors (xterm's defaults)
BASE16: list[RGB] = [
    (0, 0, 0),
    (205, 0, 0),
    (0, 205, 0),
    (205, 205, 0),
    (0, 0, 238),
    (205, 0, 205),
    (0, 205, 205),
    (229, 229, 229),
    (127, 127, 127),
    (255, 0, 0),
    (0, 255, 0),
    (255, 255, 0),
    (92, 92, 255),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 255),
]
DEFAULT_FG: RGB = (208, 208, 208)
DEFAULT_BG: RGB = (24, 24, 24)


def xterm256(n: int) -> RGB:
    """The RGB value of xterm 256-color palette entry `n`."""
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        levels = [0, 95, 135, 175, 215, 255]
        return levels[n // 36], levels[(n // 6) % 6], levels[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


@dataclass(frozen=True)
class Style:
    """SGR state of a cell; a color of None is the terminal default."""

    fg: RGB | None = None
    bg: RGB | None = None
    bold: bool = False
    dim: bool = False
    italic: bool = False
    underline: bool = False
    reverse: bool = False


@dataclass(frozen=True)
class Cell:
    """One character cell; `wide` cells span two columns (the next column holds no cell of its own)."""

    char: str
    style: Style
    wide: bool = False


_ESCAPE = re.compile(r"\x1b(?:\[([0-9;:?<>=]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _extended_color(params: list[list[str]], i: int) -> tuple[RGB | None, int]:
    """Parse `38;5;n` / `38;2;r;g;b` (or the colon forms) starting at params[i]; return (color, next index)."""
    sub = params[i]
    if len(sub) > 1:  # colon form: 38:5:n, 38:2:r:g:b or 38:2::r:g:b (with a color-space id)
        nums = [int(s) if s else 0 for s in sub[1:]]
        if nums and nums[0] == 5 and len(nums) >= 2:
            return xterm256(nums[1] & 255), i + 1
        if nums and nums[0] == 2 and len(nums) >= 4:
            r, g, b = nums[-3:]
            return (r & 255, g & 255, b & 255), i + 1
        return None, i + 1
    flat = [int(p[0]) if p[0] else 0 for p in params[i + 1 : i + 5]]
    if flat and flat[0] == 5 and len(flat) >= 2:
        return xterm256(flat[1] & 255), i + 3
    if flat and flat[0] == 2 and len(flat) >= 4:
        return (flat[1] & 255, flat[2] & 255, flat[3] & 255), i + 5
    return None, i + 1 + len(flat)


# SGR codes that set or clear text attributes (4, underline, has sub-parameters: handled in apply_sgr)
_ATTRIBUTES: dict[int, dict[str, bool]] = {
    1: {"bold": True},
    2: {"dim": True},
    3: {"italic": True},
    7: {"reverse": True},
    22: {"bold": False, "dim": False},
    23: {"italic": False},
    24: {"underline": False},
    27: {"reverse": False},
}


def apply_sgr(style: Style, param_text: str) -> Style:
    """The style after the SGR sequence `ESC [ param_text m`."""
    params = [p.split(":") for p in (param_text.split(";") if param_text else ["0"])]
    i = 0
    while i < len(params):
        head = params[i][0]
        code = int(head) if head.isdigit() else 0
        if code in (38, 48):
            color, i = _extended_color(params, i)
            if color is not None:
                style = replace(style, fg=color) if code == 38 else replace(style, bg=color)
            continue
        if code == 0:
            style = Style()
        elif code == 4:
            style = replace(style, underline=params[i][1:] != ["0"])
        elif code in _ATTRIBUTES:
            style = replace(style, **_ATTRIBUTES[code])
        elif 30 <= code <= 37:
            style = replace(style, fg=BASE16[code - 30])
        elif code == 39:
            style = replace(style, fg=None)
        elif 40 <= code <= 47:
            style = replace(style, bg=BASE16[code - 40])
        elif code == 49:
            style = replace(style, bg=None)
        elif 90 <= code <= 97:
            style = replace(style, fg=BASE16[code - 90 + 8])
        elif 100 <= code <= 107:
            style = replace(style, bg=BASE16[code - 100 + 8])
        i += 1
    return style


def char_width(ch: str) -> int:
    """Cells taken by `ch`: 2 for East Asian wide/fullwidth, 0 for combining marks, else 1."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def parse(text: str, cols: int, rows: int) -> list[list[Cell | None]]:
    """The `rows` x `cols` grid of cells of `text`; the SGR state carries across lines, as tmux writes it.

    A missing cell (past a line's end, or the right half of a wide character) is None.
    """
    grid: list[list[Cell | None]] = []
    style = Style()
    for line in text.split("\n")[:rows]:
        row: list[Cell | None] = []
        pos = 0
        for m in _ESCAPE.finditer(line + "\x1b[?0h"):  # a sentinel escape so the tail is handled in the loop
            for ch in line[pos : m.start()]:
                if ch == "\r":
                    continue
                if ch == "\t":
                    row.extend(Cell(" ", style) for _ in range(8 - len(row) % 8))
                    continue
                w = char_width(ch)
                if w == 0 and row and row[-1] is not None:  # combine with the previous cell
                    row[-1] = replace(row[-1], char=row[-1].char + ch)
                elif w == 2:
                    row.extend([Cell(ch, style, wide=True), None])
                elif w == 1:
                    row.append(Cell(ch, style))
            pos = m.end()
            if m.group(2) == "m":
                style = apply_sgr(style, m.group(1))
        grid.append((row + [None] * cols)[:cols])
    while len(grid) < rows:
        grid.append([None] * cols)
    return grid


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def render(
    text: str,
    cols: int,
    rows: int,
    *,
    font_size: int = 14,
    default_fg: RGB = DEFAULT_FG,
    default_bg: RGB = DEFAULT_BG,
    padding: int = 6,
    font_dir: Path = FONT_DIR,
    cursor: tuple[int, int] | None = None,
    cursor_shape: str = "bar",
):
    """A PIL image of the terminal text (cols x rows cells), `padding` px of default background around it.

    `cursor` (column, row), 0-based, draws the terminal cursor there (a capture has no cursor of its own):
    `cursor_shape` "bar" (a 2 px line at the cell's left, as in Insert mode), "block" or "underline".
    """
    from PIL import Image, ImageDraw, ImageFont

    if (font_dir / FONTS[(False, False)]).exists():
        fonts = {k: ImageFont.truetype(str(font_dir / v), font_size) for k, v in FONTS.items()}
    else:  # no DejaVu (fonts-dejavu-core): Pillow's own font, one glyph per cell all the same
        fonts = dict.fromkeys(FONTS, ImageFont.load_default(font_size))
    regular = fonts[(False, False)]
    ascent, descent = regular.getmetrics()
    cw = round(regular.getlength("M"))
    ch = ascent + descent
    img = Image.new("RGB", (cols * cw + 2 * padding, rows * ch + 2 * padding), default_bg)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(parse(text, cols, rows)):
        for x, cell in enumerate(row):
            if cell is None:
                continue
            s = cell.style
            fg, bg = s.fg or default_fg, s.bg or default_bg
            if s.reverse:
                fg, bg = bg, fg
            if s.dim:
                fg = _mix(fg, bg, 0.5)
            left, top = padding + x * cw, padding + y * ch
            width = cw * (2 if cell.wide else 1)
            draw.rectangle([left, top, left + width - 1, top + ch - 1], fill=bg)
            if cell.char.strip():
                draw.text((left, top), cell.char, font=fonts[(s.bold, s.italic)], fill=fg)
            if s.underline:
                draw.line([left, top + ascent + 1, left + width - 1, top + ascent + 1], fill=fg)
    if cursor is not None:
        left, top = padding + cursor[0] * cw, padding + cursor[1] * ch
        box = {
            "bar": [left, top, left + 1, top + ch - 1],
            "underline": [left, top + ch - 2, left + cw - 1, top + ch - 1],
        }.get(cursor_shape)
        if box is None:  # block: the cell in reverse video
            draw.rectangle([left, top, left + cw - 1, top + ch - 1], outline=default_fg)
        else:
            draw.rectangle(box, fill=default_fg)
    return img


def save_png(img, path: str | Path, colors: int = 128) -> None:
    """Save `img` as a palette PNG (`colors` entries) to keep the file small."""
    from PIL import Image

    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: render an ANSI text file to a PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="text with ANSI escapes ('-' for stdin)")
    ap.add_argument("output", help="PNG file to write")
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--font-size", type=int, default=14)
    args = ap.parse_args(argv)
    if args.input == "-":
        import sys

        text = sys.stdin.read()
    else:
        text = Path(args.input).read_text(encoding="utf-8", errors="replace")
    save_png(render(text, args.cols, args.rows, font_size=args.font_size), args.output)


if __name__ == "__main__":
    main()
