"""Each head's attention from the selected token over the prompt: a heatmap of
heads by source tokens in ·░▒▓█, each head's top source token, and its role
(previous-token, duplicate-token, induction) when the prompt makes it clear."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widget import Widget

from lenstop.models.head_scores import HeadScores
from lenstop.tui.format import clip, shade, visible


class HeadsView(Widget, can_focus=True):
    BINDINGS = [
        Binding("j,down", "move(1)", "next head", show=False, id="heads.down"),
        Binding("k,up", "move(-1)", "previous head", show=False, id="heads.up"),
    ]
    DEFAULT_CSS = """
    HeadsView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pattern: np.ndarray | None = None  # (heads, query, key) at this layer
        self.tokens: list[str] = []
        self.position = 0
        self.scores: list[HeadScores] = []
        self.knocked: set[int] = set()
        self.head = 0

    def show(
        self,
        pattern: np.ndarray | None,
        tokens: Sequence[str],
        position: int,
        scores: list[HeadScores],
        knocked: set[int],
        head: int,
    ) -> None:
        self.pattern, self.tokens, self.position = pattern, list(tokens), position
        self.scores, self.knocked = scores, knocked
        self.head = min(head, (pattern.shape[0] - 1) if pattern is not None else 0)
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.pattern is None:
            return
        self.head = (self.head + step) % self.pattern.shape[0]
        self.refresh()
        self.post_message(self.HeadSelected(self.head))

    @dataclass
    class HeadSelected(Message):
        head: int

    def render(self) -> Text:
        if self.pattern is None:
            return Text("no attention pattern yet", style="dim")
        heads = self.pattern.shape[0]
        width = self.size.width
        fixed = 3 + 3 + 2 + 10 + 4 + 16  # head, mark, gap, top token, weight, role
        n_src = self.position + 1
        cells = max(4, width - fixed)
        # Every source position stays on screen: one or two cells each, or bins (the max of each) when long.
        per = 2 if 2 * n_src <= cells else 1
        bins = np.array_split(np.arange(n_src), min(n_src, cells // per))
        out = Text()
        binned = "" if len(bins) == n_src else f", {n_src / len(bins):.1f} tokens a cell"
        note = f"from {self.position} {clip(visible(self.tokens[self.position]), 12)!r} over tokens 0..{self.position}{binned}"
        out.append(clip(note, width) + "\n", style="dim")
        for h in range(heads):
            row = self.pattern[h, self.position, : self.position + 1]
            label = Text(
                f"H{h:<2}",
                style="reverse bold" if h == self.head and self.has_focus else ("bold" if h == self.head else ""),
            )
            out.append_text(label)
            out.append(" ✗ " if h in self.knocked else "   ", style="bold")
            for group in bins:
                out.append(shade(float(row[group].max())) * per)
            src = int(np.argmax(self.pattern[h, self.position, : self.position + 1]))
            weight = float(self.pattern[h, self.position, src])
            out.append(f"  {clip(visible(self.tokens[src]), 10):<10} {weight:.2f}".replace("0.", " ."))
            role = self.scores[h].role() if h < len(self.scores) else None
            if role:
                out.append(f"  {role[0]} {role[1]:.2f}".replace("0.", "."), style="italic")
            if h < heads - 1:
                out.append("\n")
        return out
