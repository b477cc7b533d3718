"""Glyphs and fixed-width numbers shared by the panes and the CLI: bars and shades
that read without colour, percentages that keep their width while values change.
(A token's visible whitespace is `lenstop.models.tokens.visible`.)

Text from outside lenstop becomes Rich text through `plain`, never through markup."""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text

from lenstop.models.safe_text import printable

BLOCKS = " ▁▂▃▄▅▆▇█"  # 0..8 eighths, for a strip under tokens
SHADES = "·░▒▓█"  # attention heatmaps
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"


def plain(text: str, style: str | Style = "") -> Text:
    """Data (a label, a prompt, a path, an error) as Rich text: never read as markup, and its control
    characters shown, not sent (`printable`)."""
    return Text(printable(text), style=style)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 intervention`, `3 interventions`: a count and its noun, singular for one."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def wrapped(text: str, width: int, rows: int) -> list[str]:
    """`text` in lines of `width`, at most `rows` of them, the last cut with … if the text goes on."""
    width, rows = max(1, width), max(1, rows)
    lines = [text[i : i + width] for i in range(0, max(1, len(text)), width)]
    if len(lines) > rows:
        lines = lines[:rows]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def block(value: float, top: float) -> str:
    """One character from ' ' to '█' for value / top."""
    if top <= 0 or value <= 0 or math.isnan(value):
        return BLOCKS[0]
    return BLOCKS[max(1, min(8, round(8 * value / top)))]


def shade(weight: float) -> str:
    """Attention weight 0..1 as one of ·░▒▓█."""
    if weight < 0.05:
        return SHADES[0]
    return SHADES[min(4, 1 + int(weight * 4))]


def bar(value: float, top: float, width: int) -> str:
    """A horizontal bar of `width` cells in eighths, padded to width."""
    if top <= 0 or value <= 0:
        return " " * width
    eighths = round(8 * width * min(1.0, value / top))
    full, rest = divmod(eighths, 8)
    text = "█" * full + (BAR_EIGHTHS[rest] if rest else "")
    return text.ljust(width)


def percent(prob: float) -> str:
    """Four characters wide: ' 31%', '4.2%', '.05%', '<.01'."""
    if prob >= 0.995:
        return "100%"
    if prob >= 0.095:
        return f"{prob * 100:3.0f}%"
    if prob >= 0.00995:
        return f"{prob * 100:3.1f}%"
    if prob >= 0.0001:
        return f"{prob * 100:.2f}%".lstrip("0")
    return "<.01"


def wrap_tokens(cells: list[str], width: int) -> list[list[int]]:
    """Indices of `cells` laid out in rows of at most `width` columns, one space between cells."""
    rows: list[list[int]] = [[]]
    used = 0
    for i, cell in enumerate(cells):
        if rows[-1] and used + len(cell) + 1 > width:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += len(cell) + 1
    return rows
