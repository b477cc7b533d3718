"""The circuit view: why did the model predict this token?

It explains one metric at one position (the inspector's selected token): the top
prediction there, or a target typed with `t`, against a wrong token typed with `w`.
The left pane ranks the contributors (features with their labels, heads, MLPs,
error nodes, inputs) by their predicted effect; `r` measures the real effect of
each beside it. Enter on a node follows it upstream ("why does this fire?"), and
the breadcrumb is the way back. The right pane draws the circuit by layer and
position and, once a corrupted prompt is set with `p`, the patching heatmaps
(layer × position, layer × head), which read without colour.

Every number comes from the engine in a worker; this screen only draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, VerticalScroll
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from lenstop.models.circuits.export import graph_json
from lenstop.models.circuits.results import Attribution, Circuit, NodeScore, Patching
from lenstop.models.circuits.spec import KINDS, Direction, Metric, Node, NodeKind
from lenstop.models.errors import LengthMismatchError, LenstopError
from lenstop.models.files import write_json
from lenstop.models.prompts import escape, unescape
from lenstop.models.protocol import EngineProtocol
from lenstop.models.safe_text import printable
from lenstop.models.tokens import visible
from lenstop.tui.format import clip, counted, percent, plain
from lenstop.tui.keymap import Keymap
from lenstop.tui.messages import (
    AttributionFinished,
    CircuitFailed,
    CircuitFinished,
    EffectsMeasured,
    PatchFinished,
    PatchProgressed,
    failure_text,
)
from lenstop.tui.safe import SafeStatic, title
from lenstop.tui.screens.feature_card import CardScreen
from lenstop.tui.screens.help import HelpScreen, help_rows
from lenstop.tui.screens.value import TextScreen
from lenstop.tui.views import card_text, circuit_text, grid_text, node_text
from lenstop.tui.widgets.footer import FooterKey, KeyFooter
from lenstop.tui.widgets.marked import MarkedTable

TOP = 40  # rows in the contributors list
FINDING = "circuit · finding…"  # the drawing pane's title while a circuit is on its way
REAL = 12  # nodes whose real effect `r` measures
IG_STEPS = 8
FILTERS: tuple[tuple[str, tuple[NodeKind, ...]], ...] = (
    ("all", KINDS),
    ("features", ("feature", "error")),
    ("heads", ("head",)),
    ("heads and features", ("feature", "error", "head")),
)


def crumbs_text(path: Sequence[Node], tokens: Sequence[str]) -> str:
    """`metric › L1.H5@23 › L0.H0@12`: the way back."""
    return " › ".join(["metric", *(node_text(n, tokens) for n in path)])


def settings_text(
    attribution: Attribution | None, corrupt: str | None, steps: int, kinds: str, ignored: int = 0
) -> str:
    """How the attribution was made; `ignored` counts the inspector's interventions it does not apply."""
    clean = f"clean model ({counted(ignored, 'intervention')} not applied) · " if ignored else ""
    baseline = f"corrupted {clip(printable(escape(corrupt)), 30)!r}" if corrupt else "zero"
    method = f"integrated gradients ({steps})" if steps else "gradient"
    measured = attribution.correlation if attribution is not None else None
    r = f" · predicted vs real r {measured:.2f}" if measured is not None else ""
    return f"{clean}baseline {baseline} · {method} · showing {kinds}{r}"


def metric_text(attribution: Attribution) -> str:
    m = attribution.metric
    line = f"{m.describe()} = {m.clean:.3f}"
    if attribution.target is not None:
        line += f" · explaining {node_text(attribution.target, attribution.tokens)} = {attribution.target_value:+.3f}"
    return line


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


def patching_text(patching: Patching) -> Text:
    """The two grids, with the positions' tokens as a legend, the strongest heads, and the strongest features
    with their activation on both runs. Each cell is the share restored (clean->corrupt), or the share of the
    damage done (corrupt->clean), as the first line says."""
    out = Text()
    out.append(f"patching {patching.direction}: ", style="bold")
    out.append(f"clean {patching.clean_metric:.2f} · corrupted {patching.corrupt_metric:.2f}\n")
    carries = "restored to the corrupted run" if patching.measure == "restored" else "damage done to the clean run"
    out.append(f"each cell: the share of the difference {carries}\n", style="dim")
    layers = [f"L{layer}" for layer in range(patching.resid.shape[0])]
    out.append("residual stream, layer × position\n", style="bold")
    out.append_text(grid_text(patching.resid, layers, [str(i % 10) for i in range(patching.resid.shape[1])]))
    out.append("heads, layer × head\n", style="bold")
    out.append_text(grid_text(patching.heads, layers, [str(h % 10) for h in range(patching.heads.shape[1])]))
    ranked = sorted(
        (
            (float(patching.heads[lay, h]), lay, h)
            for lay in range(patching.heads.shape[0])
            for h in range(patching.heads.shape[1])
        ),
        reverse=True,
    )[:4]
    out.append(f"strongest ({patching.measure})  " + "  ".join(f"L{lay}.H{h} {v:.2f}" for v, lay, h in ranked) + "\n")
    if patching.features:
        out.append(f"features ({patching.measure}, act clean→corrupted)\n", style="bold")
        for f in sorted(patching.features, key=lambda f: -abs(f.restored))[:4]:
            acts = "" if f.clean_act is None or f.corrupt_act is None else f"  {f.clean_act:.2f}→{f.corrupt_act:.2f}"
            out.append(f"  L{f.layer} #{f.feature}@{f.position} {f.restored:+.2f}{acts}")
            out.append(f"  {clip(printable(f.label), 30)}\n" if f.label else "\n", style="italic")
    agreement = ", ".join(f"{k} {v:.2f}" for k, v in patching.agreement().items() if v is not None)
    out.append(f"estimate agrees: {agreement}\n", style="dim")
    out.append(" ".join(f"{i}:{clip(visible(t), 8)}" for i, t in enumerate(patching.tokens)), style="dim")
    return out


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


# The footer's keys, most used first (tui/widgets/footer.py); enter is the table's own, which follows.
FOOTER = (
    FooterKey((), "follow", "⏎"),
    FooterKey(("circuit.back",), "back"),
    FooterKey(("circuit.leave",), "close"),
    FooterKey(("circuit.target",), "target"),
    FooterKey(("circuit.wrong",), "wrong"),
    FooterKey(("circuit.corrupt",), "corrupt"),
    FooterKey(("circuit.real",), "real effects"),
    FooterKey(("circuit.integrated",), "integrated"),
    FooterKey(("circuit.direction",), "direction"),
    FooterKey(("circuit.filter",), "filter"),
    FooterKey(("circuit.card",), "card"),
    FooterKey(("circuit.export",), "export"),
    FooterKey(("circuit.cancel",), "cancel"),
)
GUIDE = (
    "Why does the model predict this token? The contributors are ranked by their predicted effect on the metric; "
    "enter follows one upstream and backspace comes back. t and w set a target and a wrong token, p a corrupted "
    "prompt (which adds the patching heatmaps), i integrated gradients."
)


class CircuitScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "follow", "follow the node upstream", id="circuit.follow"),
        Binding("backspace", "back", "back along the breadcrumb", id="circuit.back"),
        Binding("escape", "leave", "back, or close the view", id="circuit.leave"),
        Binding("r", "real", "measure real effects", id="circuit.real"),
        Binding("t", "target", "type a target token", id="circuit.target"),
        Binding("w", "wrong", "type a wrong token", id="circuit.wrong"),
        Binding("p", "corrupt", "type a corrupted prompt", id="circuit.corrupt"),
        Binding("d", "direction", "flip the patching direction", id="circuit.direction"),
        Binding("c", "cancel", "cancel patching", id="circuit.cancel"),
        Binding("i", "integrated", "integrated gradients on/off", id="circuit.integrated"),
        Binding("f", "filter", "filter the kinds", id="circuit.filter"),
        Binding("question_mark", "help", "every key", id="circuit.help"),
        Binding("o", "card", "the feature's card", id="circuit.card"),
        Binding("x", "export", "save the graph JSON", id="circuit.export"),
    ]
    DEFAULT_CSS = """
    CircuitScreen { layout: vertical; }
    CircuitScreen #circuit-header { height: 1; background: $primary-background; }
    CircuitScreen #crumbs { height: 1; color: $accent; text-style: bold; }
    CircuitScreen #settings { height: 1; color: $text-muted; }
    CircuitScreen #circuit-body { height: 1fr; }
    CircuitScreen .pane { border: round $panel-lighten-2; padding: 0 1; border-title-color: $text-muted; }
    CircuitScreen .pane:focus-within { border: round $accent; }
    CircuitScreen #contributors-pane { width: 3fr; }
    CircuitScreen #drawing-pane { width: 2fr; }
    CircuitScreen #circuit-status { height: auto; max-height: 3; color: $text-muted; }
    CircuitScreen #circuit-status.-error { color: $error; text-style: bold; }
    CircuitScreen.-compact #circuit-body { layout: vertical; }
    CircuitScreen.-compact #contributors-pane { width: 1fr; height: 3fr; }
    CircuitScreen.-compact #drawing-pane { width: 1fr; height: 2fr; }
    """

    metric: var[Metric] = var(Metric(), init=False)
    corrupt: var[str | None] = var(None, init=False)
    path: var[tuple[Node, ...]] = var((), init=False)
    steps = var(0, init=False)
    direction: var[Direction] = var("clean->corrupt", init=False)
    filter_index = var(0, init=False)
    attribution: var[Attribution | None] = var(None, init=False)
    circuit: var[Circuit | None] = var(None, init=False)
    patching: var[Patching | None] = var(None, init=False)

    def __init__(
        self, engine: EngineProtocol, prompt: str, position: int, *, ignored: int = 0, keymap: Keymap | None = None
    ) -> None:
        """`ignored`: how many interventions the inspector has active, which circuits (of the model as it is)
        do not apply; the settings line says so. `keymap`: what the app applied of keys.json, for `?`."""
        super().__init__()
        self.engine, self.prompt, self.ignored = engine, prompt, ignored
        self.keymap = keymap or Keymap()
        self.requests = {"attribution": 0, "circuit": 0, "patching": 0, "effects": 0}
        self.patch_error: str | None = None
        self.circuit_error: str | None = None  # why the last circuit asked for could not be found
        self.mismatch: LengthMismatchError | None = None  # the corrupted prompt's tokens against the clean's
        self.set_reactive(CircuitScreen.metric, Metric(position=position))

    def compose(self) -> ComposeResult:
        yield SafeStatic(id="circuit-header")
        yield SafeStatic(id="crumbs")
        yield SafeStatic(id="settings")
        with Horizontal(id="circuit-body"):
            with Container(id="contributors-pane", classes="pane"):
                yield ContributorTable()
            with VerticalScroll(id="drawing-pane", classes="pane"):
                yield SafeStatic(id="drawing")
        yield SafeStatic(id="circuit-status")
        yield KeyFooter(FOOTER)

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < 100, "-compact")

    def on_mount(self) -> None:
        self.query_one("#contributors-pane").border_title = title("contributors")
        self.query_one("#drawing-pane").border_title = title("circuit")
        self.set_class(self.app.size.width < 100, "-compact")
        self.query_one(ContributorTable).focus()
        self._draw_settings()
        self.refresh_all()

    # ---------------------------------------------------------------- work
    def _next(self, what: str) -> int:
        self.requests[what] += 1
        return self.requests[what]

    def refresh_all(self) -> None:
        self.run_attribution()
        self.run_circuit()
        if self.corrupt:
            self.run_patching()

    def run_attribution(self) -> None:
        self._next("effects")  # real effects under way were measured for what is being replaced
        self.status("attributing…")
        self._attribute(self._next("attribution"), self.metric, self.corrupt, self.path, self.steps)

    @work(thread=True, exclusive=True, group="attribution", exit_on_error=False)
    def _attribute(self, request: int, metric: Metric, corrupt: str | None, path: tuple[Node, ...], steps: int) -> None:
        try:
            found = self.engine.attribute(self.prompt, metric, corrupt=corrupt, path=path, top=None, steps=steps)
        except BaseException as err:  # noqa: BLE001 - shown on screen, the screen stays up
            self.post_message(CircuitFailed.of(request, "attribution", err))
            return
        self.post_message(AttributionFinished(request, found))

    def run_circuit(self) -> None:
        self.circuit_error = None
        self.query_one("#drawing-pane").border_title = title(FINDING)
        self._find_circuit(self._next("circuit"), self.metric, self.corrupt, self.steps)

    @work(thread=True, exclusive=True, group="circuit", exit_on_error=False)
    def _find_circuit(self, request: int, metric: Metric, corrupt: str | None, steps: int) -> None:
        try:
            found = self.engine.circuit(self.prompt, metric, corrupt=corrupt, steps=steps, max_nodes=16)
        except BaseException as err:  # noqa: BLE001
            self.post_message(CircuitFailed.of(request, "circuit", err))
            return
        self.post_message(CircuitFinished(request, found))

    def run_patching(self) -> None:
        request = self._next("patching")  # a patching still running sees it is stale, and stops
        self.patch_error = None
        if not self.corrupt:
            self.patching = None
            return
        self._patch(request, self.metric, self.corrupt, self.direction)

    def action_cancel(self) -> None:
        """Stop a patching under way; the grids stay as they were."""
        running = any(w.group == "patching" and w.is_running for w in self.workers)
        self._next("patching")
        self.workers.cancel_group(self, "patching")
        self.status("patching cancelled" if running else "nothing to cancel")

    @work(thread=True, exclusive=True, group="patching", exit_on_error=False)
    def _patch(self, request: int, metric: Metric, corrupt: str, direction: Direction) -> None:
        worker = get_current_worker()

        def progress(share: float) -> None:
            self.post_message(PatchProgressed(request, share))

        try:
            found = self.engine.patch(
                self.prompt,
                corrupt,
                metric,
                direction=direction,
                features=20,
                progress=progress,
                cancelled=lambda: worker.is_cancelled or request != self.requests["patching"],
            )
        except BaseException as err:  # noqa: BLE001
            self.post_message(CircuitFailed.of(request, "patching", err))
            return
        self.post_message(PatchFinished(request, found))

    @work(thread=True, exclusive=True, group="effects", exit_on_error=False)
    def _measure(self, request: int, metric: Metric, corrupt: str | None, nodes: tuple[Node, ...]) -> None:
        try:
            real = self.engine.effects(self.prompt, metric, nodes, corrupt=corrupt)
        except BaseException as err:  # noqa: BLE001
            self.post_message(CircuitFailed.of(request, "effects", err))
            return
        self.post_message(EffectsMeasured(request, nodes, real))

    # ---------------------------------------------------------------- results
    def on_attribution_finished(self, message: AttributionFinished) -> None:
        if message.request == self.requests["attribution"]:
            self.attribution = message.attribution
            nodes = counted(len(message.attribution.nodes), "node")
            self.status(f"{nodes} · enter follows one upstream, r measures real effects")

    def on_circuit_finished(self, message: CircuitFinished) -> None:
        if message.request == self.requests["circuit"]:
            self.circuit = message.circuit

    def on_patch_progressed(self, message: PatchProgressed) -> None:
        if message.request == self.requests["patching"]:
            self.status(f"patching… {percent(message.share).strip()}")

    def on_patch_finished(self, message: PatchFinished) -> None:
        if message.request == self.requests["patching"]:
            self.patching = message.patching
            self.status("patched")

    def on_effects_measured(self, message: EffectsMeasured) -> None:
        found = self.attribution
        if message.request == self.requests["effects"] and found is not None:
            real = dict(zip(message.nodes, message.real, strict=True))
            nodes = tuple(replace(s, real=real[s.node]) if s.node in real else s for s in found.nodes)
            self.attribution = replace(found, nodes=nodes)
            self.status("real effects measured: each node alone removed, the metric measured")

    def on_circuit_failed(self, message: CircuitFailed) -> None:
        if message.request == self.requests[message.what]:
            self.status(message.error, error=True)
            if message.mismatch is not None:
                self.mismatch = message.mismatch  # drawn under the circuit: the CLI's two rows, aligned
            # What is on screen was computed for other settings: clear it rather than show it under these.
            if message.what == "attribution":
                self.attribution = None
                self.query_one(ContributorTable).show([], (), f"no attribution: {message.error}")
            elif message.what == "circuit":
                self.circuit_error = message.error
                self.circuit = None
                self._draw_drawing()  # None already, the watcher would not fire: the title said "finding…" forever
            elif message.what == "patching":
                self.patch_error = message.error
                self.patching = None
                self._draw_drawing()

    # ---------------------------------------------------------------- drawing
    def _shown(self, found: Attribution) -> list[NodeScore]:
        kinds = FILTERS[self.filter_index][1]
        return [s for s in found.nodes if s.node.kind in kinds][:TOP]

    def watch_attribution(self) -> None:
        found = self.attribution
        if found is None:  # failed: the header and the way back no longer name the metric it was for
            self.query_one("#circuit-header", Static).update(" circuit · no attribution for these settings")
            self.query_one("#crumbs", Static).update(" " + crumbs_text(self.path, ()))
            return
        self.query_one("#circuit-header", Static).update(" circuit · " + metric_text(found))
        self.query_one("#crumbs", Static).update(" " + crumbs_text(found.path, found.tokens))
        self._draw_table()
        self._draw_settings()

    def _draw_table(self) -> None:
        if self.attribution is not None:
            empty = "nothing upstream: this node's value does not depend on earlier ones"
            self.query_one(ContributorTable).show(self._shown(self.attribution), self.attribution.tokens, empty)

    def _draw_settings(self) -> None:
        self.query_one("#settings", Static).update(
            " "
            + settings_text(
                self.attribution, self.corrupt, self.steps, FILTERS[self.filter_index][0], ignored=self.ignored
            )
        )

    def watch_circuit(self) -> None:
        self._draw_drawing()

    def watch_patching(self) -> None:
        self._draw_drawing()

    def _draw_drawing(self) -> None:
        out = Text()
        width = max(30, self.query_one("#drawing-pane").size.width - 2)
        pane = self.query_one("#drawing-pane")
        if self.circuit is not None:
            out.append_text(circuit_text(self.circuit, width))
            pane.border_title = title(f"circuit · {counted(len(self.circuit.nodes), 'node')}")
        elif self.circuit_error is not None:
            out.append(f"no circuit: {printable(self.circuit_error)}", style="bold")
            pane.border_title = title("circuit · failed")
        elif pane.border_title != FINDING:
            pane.border_title = title("circuit")
        if self.mismatch is not None:
            out.append("\n\nthe two prompts, token by token:\n", style="bold")
            out.append("\n".join(line.rstrip() for line in self.mismatch.alignment(width)))
            out.append("\n\np: a corrupted prompt of the same token length", style="dim")
        elif self.patching is not None:
            out.append("\n\n")
            out.append_text(patching_text(self.patching))
        elif self.corrupt and self.patch_error:
            out.append(f"\n\nno patching: {printable(self.patch_error)}", style="bold")
        elif self.corrupt:
            out.append("\n\npatching…", style="italic")
        else:
            out.append("\n\np: set a corrupted prompt of the same length to patch", style="dim")
        self.query_one("#drawing", Static).update(out)

    def status(self, text: str, error: bool = False) -> None:
        """One line, or up to three for a long error, which is read whole."""
        line = self.query_one("#circuit-status", Static)
        line.update(plain((" error: " if error else " ") + text))
        line.set_class(error, "-error")

    # ---------------------------------------------------------------- what the user changes
    def watch_metric(self) -> None:
        self.set_reactive(CircuitScreen.path, ())  # a new metric starts at the metric
        self.refresh_all()

    def watch_path(self) -> None:
        self.run_attribution()

    def watch_steps(self) -> None:
        self._draw_settings()
        self.refresh_all()

    def watch_corrupt(self) -> None:
        self.mismatch = None  # said again if this one does not line up either
        self._draw_settings()
        self.refresh_all()
        if not self.corrupt:
            self.run_patching()  # clears the grids and stops one under way

    def watch_direction(self) -> None:
        self.run_patching()

    def watch_filter_index(self) -> None:
        self._draw_table()
        self._draw_settings()

    @on(DataTable.RowSelected, "#contributors")
    def _row_selected(self) -> None:  # the table takes enter itself
        self.action_follow()

    def action_follow(self) -> None:
        score = self.query_one(ContributorTable).selected
        if score is None:
            return
        if not score.node.followable:
            self.status(f"{node_text(score.node)} is an input of the graph: nothing upstream explains it")
            return
        self.path = (*self.path, score.node)

    def action_back(self) -> None:
        if self.path:
            self.path = self.path[:-1]

    def action_leave(self) -> None:
        if self.path:
            self.action_back()
        else:
            self.app.pop_screen()

    def action_real(self) -> None:
        if self.path:
            self.status("real effects are measured on the metric: backspace to it first", error=True)
            return
        if self.attribution is not None:
            nodes = tuple(s.node for s in self._shown(self.attribution)[:REAL])
            self.status(f"measuring {counted(len(nodes), 'real effect')}…")
            self._measure(self._next("effects"), self.metric, self.corrupt, nodes)

    def _ask(self, question: str, default: str, done: Callable[[str | None], None]) -> None:
        self.app.push_screen(TextScreen(question, default), done)

    def action_target(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.metric = replace(self.metric, target=unescape(text) or None)

        current = self.attribution.metric.target if self.attribution else ""
        self._ask("target token (· or a space for a space; empty: the top prediction)", escape(current), done)

    def action_wrong(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.metric = replace(self.metric, wrong=unescape(text) or None)

        self._ask("wrong token: explain logit(target) − logit(wrong); empty for log p(target)", "", done)

    def action_corrupt(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.corrupt = unescape(text) or None

        self._ask("corrupted prompt, the same token length; empty for none", escape(self.corrupt or self.prompt), done)

    def action_direction(self) -> None:
        self.direction = "corrupt->clean" if self.direction == "clean->corrupt" else "clean->corrupt"
        self.status(f"patching {self.direction}")

    def action_integrated(self) -> None:
        self.steps = 0 if self.steps else IG_STEPS

    def action_help(self) -> None:
        groups = [("circuit view", [b for b in self.BINDINGS if isinstance(b, Binding)])]
        rows = help_rows(groups, lambda b: self.keymap.keys_of(b, self.app.get_key_display))
        self.app.push_screen(HelpScreen(rows, GUIDE))

    def action_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(FILTERS)

    def action_card(self) -> None:
        score = self.query_one(ContributorTable).selected
        if score is not None and score.node.kind == "feature":
            assert score.node.layer is not None and score.node.feature is not None
            self._open_card(score.node.layer, score.node.feature, max(20, int(self.size.width * 0.95) - 4))

    @work(thread=True, exclusive=True, group="card", exit_on_error=False)
    def _open_card(self, layer: int, feature: int, width: int) -> None:
        try:
            card = self.engine.card(layer, feature)
        except BaseException as err:  # noqa: BLE001
            self.app.call_from_thread(self.status, failure_text(err), True)
            return
        self.app.call_from_thread(self.app.push_screen, CardScreen(card_text(layer, feature, card, width=width)))

    def action_export(self) -> None:
        if self.circuit is None:
            self.status("no circuit yet", error=True)
            return
        path = Path(time.strftime("lenstop-circuit-%Y%m%d-%H%M%S.json"))
        try:
            write_json(path, graph_json(self.circuit))
        except (OSError, LenstopError) as err:  # a full disk; a NaN, which JSON cannot carry
            self.status(f"cannot write {path}: {getattr(err, 'strerror', None) or err}", error=True)
            return
        self.status(f"saved {path}: open it in circuit-tracer's or Neuronpedia's graph viewer")
