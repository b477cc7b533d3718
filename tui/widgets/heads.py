"""Each head's attention from the selected token over the prompt: a heatmap of
heads by source tokens in ·░▒▓█, each head's top source token, and its role
(previous-token, duplicate-token, induction) when the prompt makes it clear.
The scores arrive with the analysis; this pane only draws them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var

from lenstop.models.head_scores import HeadScores
from lenstop.models.results import LayerAttention
from lenstop.models.tokens import visible
from lenstop.tui.format import clip, plain, shade
from lenstop.tui.safe import SafeWidget
from lenstop.tui.views import Shown, knocked_heads

FIXED = 1 + 3 + 3 + 17 + 17  # selection mark, head, knockout mark, top source and weight, role ("  prev-token 1.00")


def heads_text(
    attention: LayerAttention,
    tokens: Sequence[str],
    position: int,
    knocked: frozenset[int],
    head: int,
    focused: bool,
    width: int,
    task: Sequence[HeadScores] = (),
) -> Text:
    """One line a head: its attention from `position` over every earlier token, binned when the prompt
    is longer than the pane is wide (a bin shows its strongest weight), then its top source and its role on
    this prompt; then the roles the heads of this layer play on the standard task, where clear."""
    n_src = position + 1
    cells = max(4, width - FIXED)
    per = 2 if 2 * n_src <= cells else 1  # two cells a token when there is room
    bins = np.array_split(np.arange(n_src), min(n_src, cells // per))
    binned = "" if len(bins) == n_src else f", {n_src / len(bins):.1f} tokens a cell"
    out = Text()
    note = f"from {position} {clip(visible(tokens[position]), 12)!r} over tokens 0..{position}{binned}"
    out.append(clip(note, width) + "\n", style="dim")
    heads = attention.n_heads
    for h in range(heads):
        row = attention.row(h, position)
        selected = "reverse bold" if focused else "bold"
        out.append("▶" if h == head else " ", style="bold")  # reads without colour, as the shading does not
        out.append(Text(f"H{h:<2}", style=selected if h == head else ""))
        out.append(" ✗ " if h in knocked else "   ", style="bold")
        for group in bins:
            out.append(shade(float(row[group].max())) * per)
        src = int(np.argmax(row))
        out.append(f"  {clip(visible(tokens[src]), 10):<10} {float(row[src]):.2f}".replace("0.", " ."))
        role = attention.scores[h].role() if h < len(attention.scores) else None
        if role:
            out.append(f"  {role[0]} {role[1]:.2f}".replace("0.", "."), style="italic")
        if h < heads - 1:
            out.append("\n")
    known = [(h, r) for h, s in enumerate(task) if (r := s.role()) is not None]
    if known:
        roles = " · ".join(f"H{h} {name} {score:.2f}".replace("0.", ".") for h, (name, score) in known)
        out.append(clip(f"\nstandard task: {roles}", width + 1), style="dim")
    return out


class HeadsView(SafeWidget, can_focus=True):
    BINDINGS = [
        Binding("j,down", "move(1)", "next head", show=False, id="heads.down"),
        Binding("k,up", "move(-1)", "previous head", show=False, id="heads.up"),
    ]
    DEFAULT_CSS = """
    HeadsView { height: 1fr; }
    """
    shown: var[Shown | None] = var(None, init=False)

    @dataclass
    class HeadSelected(Message):
        head: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.attention: LayerAttention | None = None
        self.tokens: Sequence[str] = ()
        self.position = 0
        self.knocked: frozenset[int] = frozenset()
        self.head = 0
        self.task_roles: Sequence[HeadScores] = ()  # (`task` is taken by the message pump)
        self.empty = "no attention pattern yet"  # said while there is none to draw

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and s.analysis is not None:
            knocked = knocked_heads(s.entries, s.layer)
            tokens, empty = s.analysis.tokens, s.attention_empty()
            self.show(s.attention(), tokens, s.position, knocked, s.head, s.task_roles(), empty)

    def show(
        self,
        attention: LayerAttention | None,
        tokens: Sequence[str],
        position: int,
        knocked: frozenset[int],
        head: int,
        task: Sequence[HeadScores] = (),
        empty: str = "no attention pattern yet",
    ) -> None:
        self.attention, self.tokens, self.position, self.knocked = attention, tokens, position, knocked
        self.task_roles, self.empty = task, empty
        self.head = min(head, attention.n_heads - 1) if attention is not None else 0
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.attention is None:
            return
        self.head = (self.head + step) % self.attention.n_heads
        self.refresh()
        self.post_message(self.HeadSelected(self.head))

    def draw(self) -> Text:
        if self.attention is None:
            return plain(self.empty, style="dim")  # an error's words, maybe
        return heads_text(
            self.attention,
            self.tokens,
            self.position,
            self.knocked,
            self.head,
            self.has_focus,
            self.size.width,
            self.task_roles,
        )
