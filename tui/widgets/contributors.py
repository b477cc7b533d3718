"""The circuit view's contributors: each node that feeds the metric (or the node followed), ranked by its
predicted effect, with its token, its real effect once measured, its activation and its label."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding

from lenstop.models.circuits.results import NodeScore
from lenstop.models.safe_text import printable
from lenstop.models.tokens import visible
from lenstop.tui.format import clip, plain
from lenstop.tui.views import node_text
from lenstop.tui.widgets.marked import MarkedTable


def contributor_line(score: NodeScore, tokens: Sequence[str], width: int = 200) -> Text:
    """`› L1.H5@23  ·range   +2.431  +6.120  label`: followable mark, node, its token, predicted, real, label,
    the label cut to what `width` leaves it."""
    line = Text(" ")  # where the selected row's mark goes
    line.append("›" if score.node.followable else " ", style="bold")
    line.append(f" {node_text(score.node):<14}")
    pos = score.node.position
    line.append(f" {clip(visible(tokens[pos]), 9) if pos is not None else 'all':<9}", style="dim")
    line.append(f" {score.attribution:+8.3f}", style="bold" if abs(score.attribution) >= 0.5 else "")
    line.append(f" {'' if score.real is None else format(score.real, '+8.3f'):>8}")
    if score.activation is not None:
        line.append(f" {score.activation:6.2f}", style="dim")
        if score.corrupt_activation is not None:  # on the corrupted run: 0 on the clean one is not the whole story
            line.append(f"→{score.corrupt_activation:<5.2f}", style="dim")
    if score.label:
        line.append(f"  {clip(printable(score.label), max(1, width - len(line) - 2))}", style="italic")
    return line


class ContributorTable(MarkedTable):
    BINDINGS = [
        Binding("j", "cursor_down", "next node", show=False, id="circuit.down"),
        Binding("k", "cursor_up", "previous node", show=False, id="circuit.up"),
    ]
    DEFAULT_CSS = """
    ContributorTable { height: 1fr; overflow-x: hidden; }
    """

    def __init__(self) -> None:
        super().__init__(id="contributors", cursor_type="row", show_header=True, cell_padding=0)
        self.scores: list[NodeScore] = []
        self.corrupted = False  # whether the header names the corrupted run's activations
        self.tokens: Sequence[str] = ()
        self.empty = ""

    def on_mount(self) -> None:
        self._add_header(corrupted=False)

    def _add_header(self, corrupted: bool) -> None:
        """The columns' names; with a corrupted baseline, a feature's activation on both runs."""
        self.corrupted = corrupted
        act = f"{'act':>6}→corrupt" if corrupted else f"{'act':>6}"
        header = Text(f"   {'node':<14} {'token':<9} {'predicted':>8} {'real':>8} {act}  label", style="bold")
        self.add_column(header, key="row", width=200)

    def on_resize(self) -> None:
        if self.scores:  # the labels' room has changed
            self.show(self.scores, self.tokens, self.empty)

    def show(self, scores: Sequence[NodeScore], tokens: Sequence[str], empty: str) -> None:
        row = self.cursor_row
        corrupted = any(s.corrupt_activation is not None for s in scores)
        self.clear(columns=corrupted != self.corrupted)
        if not self.columns:
            self._add_header(corrupted)
        self.scores, self.tokens, self.empty = list(scores), tokens, empty
        width = self.scrollable_content_region.width or 200
        for i, s in enumerate(self.scores):
            self.add_row(contributor_line(s, tokens, width), key=str(i))
        if not self.scores:
            self.add_row(plain("   " + empty, style="dim"), key="empty")  # an error's words, maybe
        elif 0 <= row < len(self.scores):
            self.move_cursor(row=row, animate=False)
        self.mark_cursor()

    def marked_rows(self) -> int:
        return len(self.scores)

    @property
    def selected(self) -> NodeScore | None:
        return self.scores[self.cursor_row] if 0 <= self.cursor_row < len(self.scores) else None
