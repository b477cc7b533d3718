"""The active interventions, and what they do at the selected position: each top
token's probability clean and intervened, the change in log-probability, the KL
divergence; and, on demand, a clean and an intervened greedy continuation."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from lenstop.models.results import Analysis, Generation
from lenstop.models.tokens import visible
from lenstop.tui.format import clip, percent
from lenstop.tui.safe import SafeTable
from lenstop.tui.session import Entry
from lenstop.tui.views import intervention_mark

GENERATE_HINT = "g: continue the prompt, clean and intervened"


def shifts_text(
    analysis: Analysis | None,
    position: int,
    generation: Generation | None,
    busy: str,
    width: int,
    height: int,
) -> Text:
    """The KL divergence and the biggest tokens' clean → intervened probabilities at `position`,
    then the continuations (one line each, clipped, so both stay on screen)."""
    out = Text()
    a = analysis
    if a is not None and a.shifts is not None and a.kl is not None:
        out.append(f"KL(clean‖intervened) {float(a.kl[position]):.3f} nats at pos {position}\n", style="bold")
        room = max(2, height - 2 - (2 if generation is not None or busy else 1))
        shifts = sorted(a.shifts[position], key=lambda s: -max(s.prob, s.clean_prob))[: min(6, room)]
        for s in shifts:
            out.append(f"{clip(visible(s.token), 10):<10} {percent(s.clean_prob)} → {percent(s.prob)}  ")
            delta = s.delta_logprob
            out.append(f"{delta:+6.2f}\n", style="bold" if abs(delta) >= 0.5 else "")
    elif a is not None:
        out.append("no interventions active: predictions are clean\n", style="dim")
    if busy:
        out.append(busy + "\n", style="italic")
    if generation is not None:
        text_width = max(8, width - 11)
        out.append("clean      ", style="bold")
        out.append(clip(visible(generation.clean.text), text_width) + "\n")
        if generation.intervened is not None:
            out.append("intervened ", style="bold")
            out.append(clip(visible(generation.intervened.text), text_width) + "\n")
    elif not busy:
        out.append(GENERATE_HINT, style="dim")
    return out


class InterventionTable(SafeTable):
    BINDINGS = [
        Binding("j", "cursor_down", "next intervention", show=False, id="effects.down"),
        Binding("k", "cursor_up", "previous intervention", show=False, id="effects.up"),
        Binding("left", "screen.token(-1)", "previous token", show=False, id="effects.token.previous"),
        Binding("right", "screen.token(1)", "next token", show=False, id="effects.token.next"),
        Binding("space", "screen.toggle_entry", "on/off", id="effects.toggle"),
        Binding("d,delete", "screen.remove_entry", "remove", id="effects.remove"),
        Binding("e", "screen.edit_entry", "edit", id="effects.edit"),
        Binding("C", "screen.clear_entries", "clear all", id="effects.clear"),
    ]
    DEFAULT_CSS = """
    InterventionTable { height: auto; max-height: 6; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", show_header=False)

    def on_mount(self) -> None:
        self.add_column("on", key="on", width=2)
        self.add_column("intervention", key="what")

    def show(self, entries: Sequence[Entry]) -> None:
        row = self.cursor_row
        self.clear()
        for i, e in enumerate(entries):
            self.add_row(
                Text(intervention_mark(e.intervention) if e.enabled else "○", style="bold" if e.enabled else "dim"),
                Text(e.intervention.describe() + ("" if e.enabled else "  (off)"), style="" if e.enabled else "dim"),
                key=str(i),
            )
        if not entries:
            self.add_row(Text(""), Text("none yet: a ablate · s steer · c clamp · x head", style="dim"), key="none")
        elif 0 <= row < len(entries):
            self.move_cursor(row=row, animate=False)


class ShiftView(Widget):
    DEFAULT_CSS = """
    ShiftView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.analysis: Analysis | None = None
        self.position = 0
        self.generation: Generation | None = None
        self.busy = ""

    def show(self, analysis: Analysis | None, position: int) -> None:
        self.analysis, self.position = analysis, position
        self.refresh()

    def show_generation(self, generation: Generation | None, busy: str = "") -> None:
        self.generation, self.busy = generation, busy
        self.refresh()

    def render(self) -> Text:
        return shifts_text(self.analysis, self.position, self.generation, self.busy, self.size.width, self.size.height)


class EffectsPane(Vertical):
    DEFAULT_CSS = """
    EffectsPane { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield InterventionTable(id="interventions")
        yield ShiftView(id="shifts")
