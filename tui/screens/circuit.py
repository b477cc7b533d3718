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
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, VerticalScroll
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable

from lenstop.models.circuits.results import Attribution, Circuit, NodeScore, Patching
from lenstop.models.circuits.spec import KINDS, Direction, Metric, Node, NodeKind
from lenstop.models.errors import LengthMismatchError
from lenstop.models.prompts import escape, unescape
from lenstop.models.protocol import EngineProtocol
from lenstop.tui import graphs
from lenstop.tui.circuits import Question, attribute, find_circuit, measure, patch
from lenstop.tui.failure import Failure
from lenstop.tui.format import counted, percent, plain
from lenstop.tui.keymap import Keymap
from lenstop.tui.messages import (
    AttributionFailed,
    AttributionFinished,
    CardFailed,
    CardFound,
    CircuitFailed,
    CircuitFinished,
    EffectsFailed,
    EffectsMeasured,
    Failed,
    GraphExported,
    GraphStepFailed,
    PatchFailed,
    PatchFinished,
    PatchProgressed,
)
from lenstop.tui.safe import SafeStatic, title
from lenstop.tui.screens.feature_card import CardScreen, fetch_card
from lenstop.tui.screens.help import HelpScreen, help_rows
from lenstop.tui.screens.value import TextScreen
from lenstop.tui.views import Drawn, crumbs_text, drawing_text, metric_text, node_text, settings_text
from lenstop.tui.widgets.contributors import ContributorTable
from lenstop.tui.widgets.footer import FooterKey, KeyFooter
from lenstop.tui.work import EngineWork, Kind

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


# The view's keys; remapped by id as the inspector's are.
BINDINGS: list[BindingType] = [
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
    BINDINGS = BINDINGS
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
        self.work = EngineWork(self)  # the engine's calls, and the latest request of each kind: only it counts
        self.patch_error: Failure | None = None  # why the last patching asked for could not be made
        self.circuit_error: Failure | None = None  # why the last circuit asked for could not be found
        self.mismatch: LengthMismatchError | None = None  # the corrupted prompt's tokens against the clean's
        self.exporting: Path | None = None  # where the latest export writes
        self.set_reactive(CircuitScreen.metric, Metric(position=position))
        # The widgets it draws on, made here so that they are typed and always there.
        self.header_line, self.crumbs_line = SafeStatic(id="circuit-header"), SafeStatic(id="crumbs")
        self.settings_line, self.status_line = SafeStatic(id="settings"), SafeStatic(id="circuit-status")
        self.contributors_pane, self.contributors = (
            Container(id="contributors-pane", classes="pane"),
            ContributorTable(),
        )
        self.drawing_pane, self.drawing = VerticalScroll(id="drawing-pane", classes="pane"), SafeStatic(id="drawing")

    def compose(self) -> ComposeResult:
        yield from (self.header_line, self.crumbs_line, self.settings_line)
        with Horizontal(id="circuit-body"):
            with self.contributors_pane:
                yield self.contributors
            with self.drawing_pane:
                yield self.drawing
        yield self.status_line
        yield KeyFooter(FOOTER)

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < 100, "-compact")

    def on_mount(self) -> None:
        self.contributors_pane.border_title = title("contributors")
        self.drawing_pane.border_title = title("circuit")
        self.on_resize()
        self.contributors.focus()
        self._draw_settings()
        self.refresh_all()

    # ---------------------------------------------------------------- work
    def refresh_all(self) -> None:
        self.run_attribution()
        self.run_circuit()
        if self.corrupt:
            self.run_patching()

    def _question(self) -> Question:
        return Question(self.prompt, self.metric, self.corrupt, self.path, self.steps, self.direction)

    def run_attribution(self) -> None:
        self.work.supersede(Kind.EFFECTS)  # real effects under way were measured for what is being replaced
        self.status("attributing…")
        self.work.start(Kind.ATTRIBUTION, attribute(self.engine, self._question()), AttributionFailed)

    def run_circuit(self) -> None:
        self.circuit_error = None
        self.drawing_pane.border_title = title(FINDING)
        self.work.start(Kind.CIRCUIT, find_circuit(self.engine, self._question()), CircuitFailed)

    def run_patching(self) -> None:
        self.patch_error = None
        if not self.corrupt:
            self.work.supersede(Kind.PATCHING)  # a patching still running sees it is stale, and stops
            self.patching = None
            return
        self.work.start(Kind.PATCHING, patch(self.engine, self._question(), self.corrupt), PatchFailed)

    def action_cancel(self) -> None:
        """Stop a patching under way; the grids stay as they were."""
        running = any(w.group == Kind.PATCHING and w.is_running for w in self.workers)
        self.work.supersede(Kind.PATCHING)
        self.workers.cancel_group(self, Kind.PATCHING)
        self.status("patching cancelled" if running else "nothing to cancel")

    # ---------------------------------------------------------------- results
    def on_attribution_finished(self, message: AttributionFinished) -> None:
        if self.work.is_latest(Kind.ATTRIBUTION, message.request):
            self.attribution = message.attribution
            nodes = counted(len(message.attribution.nodes), "node")
            self.status(f"{nodes} · enter follows one upstream, r measures real effects")

    def on_circuit_finished(self, message: CircuitFinished) -> None:
        if self.work.is_latest(Kind.CIRCUIT, message.request):
            self.circuit = message.circuit

    def on_patch_progressed(self, message: PatchProgressed) -> None:
        if self.work.is_latest(Kind.PATCHING, message.request):
            self.status(f"patching… {percent(message.share).strip()}")

    def on_patch_finished(self, message: PatchFinished) -> None:
        if self.work.is_latest(Kind.PATCHING, message.request):
            self.patching = message.patching
            self.status("patched")

    def on_effects_measured(self, message: EffectsMeasured) -> None:
        found = self.attribution
        if self.work.is_latest(Kind.EFFECTS, message.request) and found is not None:
            self.attribution = found.with_real(dict(zip(message.nodes, message.real, strict=True)))
            self.status("real effects measured: each node alone removed, the metric measured")

    # What is on screen was computed for other settings: a failure clears it rather than show it under these.
    def _failed(self, kind: Kind, message: Failed) -> bool:
        """Say a failure of the latest request of `kind`; whether it was that."""
        if not self.work.is_latest(kind, message.request):
            return False
        self.status(message.failure.text, error=True)
        if message.failure.mismatch is not None:
            self.mismatch = message.failure.mismatch  # drawn under the circuit: the CLI's two rows, aligned
        return True

    def on_attribution_failed(self, message: AttributionFailed) -> None:
        if self._failed(Kind.ATTRIBUTION, message):
            self.attribution = None
            self.contributors.show([], (), f"no attribution: {message.failure.text}")

    def on_circuit_failed(self, message: CircuitFailed) -> None:
        if self._failed(Kind.CIRCUIT, message):
            self.circuit_error = message.failure
            self.circuit = None
            self._draw_drawing()  # None already, the watcher would not fire: the title said "finding…" forever

    def on_patch_failed(self, message: PatchFailed) -> None:
        if self._failed(Kind.PATCHING, message):
            self.patch_error = message.failure
            self.patching = None
            self._draw_drawing()

    def on_effects_failed(self, message: EffectsFailed) -> None:
        self._failed(Kind.EFFECTS, message)

    # ---------------------------------------------------------------- drawing
    def _shown(self, found: Attribution) -> list[NodeScore]:
        kinds = FILTERS[self.filter_index][1]
        return [s for s in found.nodes if s.node.kind in kinds][:TOP]

    def watch_attribution(self) -> None:
        found = self.attribution
        if found is None:  # failed: the header and the way back no longer name the metric it was for
            self.header_line.update(" circuit · no attribution for these settings")
            self.crumbs_line.update(" " + crumbs_text(self.path, ()))
            return
        self.header_line.update(" circuit · " + metric_text(found))
        self.crumbs_line.update(" " + crumbs_text(found.path, found.tokens))
        self._draw_table()
        self._draw_settings()

    def _draw_table(self) -> None:
        if self.attribution is not None:
            empty = "nothing upstream: this node's value does not depend on earlier ones"
            self.contributors.show(self._shown(self.attribution), self.attribution.tokens, empty)

    def _draw_settings(self) -> None:
        self.settings_line.update(
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
        pane = self.drawing_pane
        if self.circuit is not None:
            pane.border_title = title(f"circuit · {counted(len(self.circuit.nodes), 'node')}")
        elif self.circuit_error is not None:
            pane.border_title = title("circuit · failed")
        elif pane.border_title != FINDING:
            pane.border_title = title("circuit")
        found = Drawn(self.circuit, self.circuit_error, self.patching, self.patch_error, self.corrupt, self.mismatch)
        self.drawing.update(drawing_text(found, max(30, pane.size.width - 2)))

    def status(self, text: str, error: bool = False) -> None:
        """One line, or up to three for a long error, which is read whole."""
        line = self.status_line
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
        score = self.contributors.selected
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
            self.work.start(Kind.EFFECTS, measure(self.engine, self._question(), nodes), EffectsFailed)

    def _ask(self, question: str, default: str, done: Callable[[str | None], None]) -> None:
        """A text typed in a dialog, unescaped, empty as None; nothing if the dialog is cancelled."""

        def answered(text: str | None) -> None:
            if text is not None:
                done(unescape(text) or None)

        self.app.push_screen(TextScreen(question, default), answered)

    def _set_metric(self, metric: Metric) -> None:
        self.metric = metric

    def _set_corrupt(self, text: str | None) -> None:
        self.corrupt = text

    def action_target(self) -> None:
        current = self.attribution.metric.target if self.attribution else ""
        question = "target token (· or a space for a space; empty: the top prediction)"
        self._ask(question, escape(current), lambda text: self._set_metric(replace(self.metric, target=text)))

    def action_wrong(self) -> None:
        question = "wrong token: explain logit(target) − logit(wrong); empty for log p(target)"
        self._ask(question, "", lambda text: self._set_metric(replace(self.metric, wrong=text)))

    def action_corrupt(self) -> None:
        question = "corrupted prompt, the same token length; empty for none"
        self._ask(question, escape(self.corrupt or self.prompt), self._set_corrupt)

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
        score = self.contributors.selected
        if score is not None and score.node.kind == "feature":
            assert score.node.layer is not None and score.node.feature is not None
            width = max(20, int(self.size.width * 0.95) - 4)
            fetch_card(self.work, self.engine, score.node.layer, score.node.feature, width)

    def on_card_found(self, message: CardFound) -> None:
        self.app.push_screen(CardScreen(message.text))

    def on_card_failed(self, message: CardFailed) -> None:
        self.status(message.failure.text, error=True)

    def action_export(self) -> None:
        """The circuit for circuit-tracer's viewer, with its feature files beside it, written by the engine in a
        worker (the files need the model's decoders)."""
        if self.circuit is None:
            self.status("no circuit yet", error=True)
            return
        path = Path(time.strftime("lenstop-circuit-%Y%m%d-%H%M%S.json"))
        self.exporting = path
        self.work.start(
            Kind.GRAPH_EXPORT, graphs.export(self.engine, self.circuit, path), graphs.step_failed(Kind.GRAPH_EXPORT)
        )

    def on_graph_exported(self, message: GraphExported) -> None:
        if self.work.is_latest(Kind.GRAPH_EXPORT, message.request):
            self.status(*exported(self.exporting, len(message.paths)))

    def on_graph_step_failed(self, message: GraphStepFailed) -> None:
        if self.work.is_latest(Kind.GRAPH_EXPORT, message.request):
            self.status(f"cannot write {self.exporting}: {message.failure.text}", error=True)


def exported(path: Path | None, n_files: int) -> tuple[str, bool]:
    """What the status line says once the circuit is written, and that it is no error."""
    beside = f" (and {counted(n_files - 1, 'file')} beside it)" if n_files > 1 else ""
    return f"saved {path}{beside}: open it in circuit-tracer's or Neuronpedia's graph viewer", False
