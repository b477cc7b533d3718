"""The active interventions, and what they do at the selected position: each top
token's probability clean and intervened, the change in log-probability, the KL
divergence; and, on demand, a clean and an intervened greedy continuation."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import var

from lenstop.models.results import Analysis, Generation
from lenstop.models.tokens import visible
from lenstop.tui.format import clip, percent, wrapped
from lenstop.tui.safe import SafeWidget
from lenstop.tui.session import Entry
from lenstop.tui.views import Shown, intervention_mark
from lenstop.tui.widgets.marked import MarkedTable

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
    then the continuations, each wrapped over its share of the rows left (one line each when there is
    no more room, so that both stay on screen; a zoomed pane shows them whole)."""
    out = Text()
    used = 0
    a = analysis
    if a is not None and a.shifts is not None and a.kl is not None:
        out.append(f"KL(clean‖intervened) {float(a.kl[position]):.3f} nats at pos {position}\n", style="bold")
        room = max(2, height - 2 - (2 if generation is not None or busy else 1))
        shifts = sorted(a.shifts[position], key=lambda s: -max(s.prob, s.clean_prob))[: min(6, room)]
        for s in shifts:
            out.append(f"{clip(visible(s.token), 10):<10} {percent(s.clean_prob)} → {percent(s.prob)}  ")
            delta = s.delta_logprob
            out.append(f"{delta:+6.2f}\n", style="bold" if abs(delta) >= 0.5 else "")
        used = 1 + len(shifts)
    elif a is not None:
        out.append("no interventions active: predictions are clean\n", style="dim")
        used = 1
    if busy:
        out.append(busy + "\n", style="italic")
        used += 1
    if generation is not None:
        texts = [("clean", generation.clean.text)]
        if generation.intervened is not None:
            texts.append(("intervened", generation.intervened.text))
        rows = max(1, (height - used) // len(texts))
        for name, text in texts:
            out.append(f"{name:<11}", style="bold")
            out.append(("\n" + " " * 11).join(wrapped(visible(text), max(8, width - 11), rows)) + "\n")
    elif not busy:
        out.append(GENERATE_HINT, style="dim")
    return out


class InterventionTable(MarkedTable):
    BINDINGS = [
        Binding("j", "cursor_down", "next intervention", show=False, id="effects.down"),
        Binding("k", "cursor_up", "previous intervention", show=False, id="effects.up"),
        Binding("left", "screen.token(-1)", "previous token", show=False, id="effects.token.previous"),
        Binding("right", "screen.token(1)", "next token", show=False, id="effects.token.next"),
        Binding("home", "screen.token_at(0)", "first token", show=False, id="effects.token.first"),
        Binding("end", "screen.token_at(-1)", "last token", show=False, id="effects.token.last"),
        Binding("space", "screen.toggle_entry", "on/off", id="effects.toggle"),
        Binding("d,delete", "screen.remove_entry", "remove", id="effects.remove"),
        Binding("e", "screen.edit_entry", "edit", id="effects.edit"),
        Binding("C", "screen.clear_entries", "clear all", id="effects.clear"),
    ]
    DEFAULT_CSS = """
    InterventionTable { height: auto; max-height: 6; overflow-x: hidden; }
    """
    shown: var[Shown | None] = var(None, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", show_header=False)
        self.entries = 0
        self.listed: Sequence[Entry] | None = None  # what it lists

    def on_mount(self) -> None:
        self.add_column("on", key="on", width=3)  # the selection mark, the kind's glyph
        self.add_column("intervention", key="what")
        if self.shown is not None:
            self.show(self.shown.entries)

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and self.columns and s.entries != self.listed:
            self.show(s.entries)

    def show(self, entries: Sequence[Entry]) -> None:
        row = self.cursor_row
        self.clear()
        self.entries, self.listed = len(entries), entries
        for i, e in enumerate(entries):
            self.add_row(
                Text(
                    " " + (intervention_mark(e.intervention) if e.enabled else "○"),
                    style="bold" if e.enabled else "dim",
                ),
                Text(e.intervention.describe() + ("" if e.enabled else "  (off)"), style="" if e.enabled else "dim"),
                key=str(i),
            )
        if not entries:
            self.add_row(Text(""), Text("none yet: a ablate · s steer · c clamp · x head", style="dim"), key="none")
        elif 0 <= row < len(entries):
            self.move_cursor(row=row, animate=False)
        self.mark_cursor()

    def marked_rows(self) -> int:
        return self.entries


class ShiftView(SafeWidget):
    DEFAULT_CSS = """
    ShiftView { height: 1fr; }
    """
    shown: var[Shown | None] = var(None, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.analysis: Analysis | None = None
        self.position = 0
        self.generation: Generation | None = None
        self.busy = ""

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and s.analysis is not None:
            self.show(s.analysis, s.position)

    def show(self, analysis: Analysis | None, position: int) -> None:
        self.analysis, self.position = analysis, position
        self.refresh()

    def show_generation(self, generation: Generation | None, busy: str = "") -> None:
        self.generation, self.busy = generation, busy
        self.refresh()

    def draw(self) -> Text:
        return shifts_text(self.analysis, self.position, self.generation, self.busy, self.size.width, self.size.height)


class EffectsPane(Vertical):
    DEFAULT_CSS = """
    EffectsPane { height: 1fr; }
    """
    shown: var[Shown | None] = var(None, init=False)  # passed on to the list and the shifts

    def compose(self) -> ComposeResult:
        yield InterventionTable(id="interventions").data_bind(EffectsPane.shown)
        yield ShiftView(id="shifts").data_bind(EffectsPane.shown)
