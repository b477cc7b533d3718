"""The prompt as the model tokenises it, with a cursor, each token shaded by a value
(the selected feature's activation, or the dictionary's reconstruction error).
Tokens flow over as many rows as the pane allows; a strip of ▁▂▃▄▅▆▇█ under each
row carries the shading, so it reads without colour."""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import var

from lenstop.models.tokens import visible
from lenstop.tui.format import block, clip, wrap_tokens
from lenstop.tui.safe import SafeWidget
from lenstop.tui.views import Shown, token_shading

MAX_TOKEN_WIDTH = 14


def token_window(cells: Sequence[str], width: int, max_rows: int, cursor: int) -> list[list[int]]:
    """The rows of token indices to show: all of them if they fit, else `max_rows` around the cursor."""
    rows = wrap_tokens(list(cells), max(8, width))
    if len(rows) <= max_rows:
        return rows
    at = next((r for r, row in enumerate(rows) if cursor in row), 0)
    start = min(max(0, at - max_rows // 2), len(rows) - max_rows)
    return rows[start : start + max_rows]


def token_strip_text(cells: Sequence[str], values: Sequence[float], cursor: int, rows: list[list[int]]) -> Text:
    """Each row of tokens over its strip of blocks; the cursor's token in reverse video."""
    top = max((v for v in values if v == v), default=0.0)
    out = Text()
    for r, row in enumerate(rows):
        line, strip = Text(), Text()
        for i in row:
            value = values[i] if i < len(values) else 0.0
            intensity = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
            line.append(cells[i], style=Style(reverse=True, bold=True) if i == cursor else _heat(intensity))
            line.append(" ")
            strip.append(block(value, top).center(len(cells[i])), style="bold" if i == cursor else "")
            strip.append(" ")
        if r:
            out.append("\n")
        out.append_text(line)
        out.append("\n")
        out.append_text(strip)
    return out


def _heat(intensity: float) -> Style:
    """A warm background for strong values; the strip below says the same without colour."""
    if intensity < 0.15:
        return Style()
    if intensity < 0.4:
        return Style(bgcolor="color(58)")
    if intensity < 0.7:
        return Style(bgcolor="color(94)")
    return Style(bgcolor="color(130)", bold=True)


class TokenStrip(SafeWidget):
    DEFAULT_CSS = """
    TokenStrip { height: auto; }
    """
    shown: var[Shown | None] = var(None, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cells: list[str] = []
        self.values: list[float] = []
        self.cursor = 0
        self.max_rows = 3

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and s.analysis is not None:
            values, _ = token_shading(s.features(), s.feature, len(s.analysis.tokens))
            self.show(s.analysis.tokens, values, s.position)

    def show(self, tokens: Sequence[str], values: Sequence[float], cursor: int) -> None:
        self.cells = [clip(visible(t), MAX_TOKEN_WIDTH) for t in tokens]
        self.values = list(values)
        self.cursor = cursor
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(2, 2 * len(token_window(self.cells, width, self.max_rows, self.cursor)))

    def draw(self) -> Text:
        if not self.cells:
            return Text("(no tokens yet)", style="dim")
        rows = token_window(self.cells, self.size.width, self.max_rows, self.cursor)
        return token_strip_text(self.cells, self.values, self.cursor, rows)
