"""The active interventions, and what they do at the selected position: each top
token's probability clean and intervened, the change in log-probability, the KL
divergence; and, on demand, a clean and an intervened greedy continuation."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable

from lenstop.models.results import Analysis, Generation
from lenstop.tui.format import clip, percent, visible
from lenstop.tui.session import Entry


class InterventionTable(DataTable):
    BINDINGS = [
        Binding("j", "cursor_down", "next intervention", show=False, id="effects.down"),
        Binding("k", "cursor_up", "previous intervention", show=False, id="effects.up"),
        Binding("left", "app.token(-1)", "previous token", show=False, id="effects.token.previous"),
        Binding("right", "app.token(1)", "next token", show=False, id="effects.token.next"),
        Binding("space", "app.toggle_entry", "on/off", id="effects.toggle"),
        Binding("d,delete", "app.remove_entry", "remove", id="effects.remove"),
        Binding("e", "app.edit_entry", "edit", id="effects.edit"),
        Binding("C", "app.clear_entries", "clear all", id="effects.clear"),
    ]
    DEFAULT_CSS = """
    InterventionTable { height: auto; max-height: 6; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", show_header=False)

    def on_mount(self) -> None:
        self.add_column("on", key="on", width=2)
        self.add_column("intervention", key="what")

    def show(self, entries: list[Entry]) -> None:
        row = self.cursor_row
        self.clear()
        for i, e in enumerate(entries):
            mark = {"ablate": "✗", "steer": "⇢", "clamp": "=", "knockout": "✗"}[e.intervention.kind]
            self.add_row(
                Text(mark if e.enabled else "○", style="bold" if e.enabled else "dim"),
                Text(e.intervention.describe() + ("" if e.enabled else "  (off)"), style="" if e.enabled else "dim"),
                key=str(i),
            )
        if not entries:
            self.add_row("", Text("none yet: a ablate · s steer · c clamp · x head", style="dim"), key="none")
        elif row is not None and 0 <= row < len(entries):
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
        out = Text()
        a = self.analysis
        if a is not None and a.shifts is not None and a.kl is not None:
            out.append(
                f"KL(clean‖intervened) {float(a.kl[self.position]):.3f} nats at pos {self.position}\n", style="bold"
            )
            room = max(2, self.size.height - 2 - (2 if self.generation is not None or self.busy else 1))
            shifts = sorted(a.shifts[self.position], key=lambda s: -max(s.prob, s.clean_prob))[: min(6, room)]
            for s in shifts:
                out.append(f"{clip(visible(s.token), 10):<10} {percent(s.clean_prob)} → {percent(s.prob)}  ")
                delta = s.delta_logprob
                out.append(f"{delta:+6.2f}\n", style="bold" if abs(delta) >= 0.5 else "")
        elif a is not None:
            out.append("no interventions active: predictions are clean\n", style="dim")
        if self.busy:
            out.append(self.busy + "\n", style="italic")
        g = self.generation
        if g is not None:  # one line each, clipped, so both stay on screen
            text_width = max(8, self.size.width - 11)
            out.append("clean      ", style="bold")
            out.append(clip(visible(g.clean.text), text_width) + "\n")
            if g.intervened is not None:
                out.append("intervened ", style="bold")
                out.append(clip(visible(g.intervened.text), text_width) + "\n")
        elif not self.busy:
            out.append("g: continue the prompt, clean and intervened", style="dim")
        return out


class EffectsPane(Vertical):
    DEFAULT_CSS = """
    EffectsPane { height: 1fr; }
    """

    def compose(self):
        yield InterventionTable(id="interventions")
        yield ShiftView(id="shifts")
