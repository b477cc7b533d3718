"""The prompt as the model tokenises it, with a cursor, each token shaded by a value
(the selected feature's activation, or the dictionary's reconstruction error).
Tokens flow over as many rows as the pane allows; a strip of ▁▂▃▄▅▆▇█ under each
row carries the shading, so it reads without colour."""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from lenstop.tui.format import block, clip, visible, wrap_tokens

MAX_TOKEN_WIDTH = 14


class TokenStrip(Widget):
    DEFAULT_CSS = """
    TokenStrip { height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokens: list[str] = []
        self.values: list[float] = []
        self.cursor = 0
        self.max_rows = 3

    def show(self, tokens: Sequence[str], values: Sequence[float], cursor: int) -> None:
        self.tokens = [clip(visible(t), MAX_TOKEN_WIDTH) for t in tokens]
        self.values = list(values)
        self.cursor = cursor
        self.refresh(layout=True)

    def _window(self, width: int) -> list[list[int]]:
        rows = wrap_tokens(self.tokens, max(8, width))
        if len(rows) <= self.max_rows:
            return rows
        at = next((r for r, row in enumerate(rows) if self.cursor in row), 0)
        start = min(max(0, at - self.max_rows // 2), len(rows) - self.max_rows)
        return rows[start : start + self.max_rows]

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(2, 2 * len(self._window(width)))

    def render(self) -> Text:
        if not self.tokens:
            return Text("(no tokens yet)", style="dim")
        top = max((v for v in self.values if v == v), default=0.0)
        out = Text()
        for r, row in enumerate(self._window(self.size.width)):
            line, strip = Text(), Text()
            for i in row:
                tok = self.tokens[i]
                value = self.values[i] if i < len(self.values) else 0.0
                intensity = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
                style = Style(reverse=True, bold=True) if i == self.cursor else _heat(intensity)
                line.append(tok, style=style)
                line.append(" ")
                mark = block(value, top)
                strip.append(mark.center(len(tok)), style="bold" if i == self.cursor else "")
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
