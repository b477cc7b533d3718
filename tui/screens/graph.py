"""The graph view: the attribution graph of the prediction after the inspector's selected token.

The graph is built on the prompt cut at that token (its header says so), by the engine in a worker, and
drawn as a grid (tui/widgets/graph_grid.py): a row per layer, a column per position, a mark per node, the
pruned graph by default (`f` shows every node). The cursor walks the grid (arrows or hjkl, tab by
influence); under it, the node's strongest inputs and outputs, numbered: enter follows the strongest
input, `o` the strongest output, 1-8 any, backspace comes back along the breadcrumb. Pinned nodes (`p`)
make a subgraph whose scores are shown; `g` names them a supernode; `r` and +/- re-prune; `a` and `c`
set the selected feature (ablate, or a value) and show the real model's targets before → after, with
attention frozen or recomputed (`m`); `x` writes the graph for circuit-tracer's viewer; `,` and `.`
explain the token before or after instead.

Every number comes from the engine or the graph's own methods in a worker; this screen only draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen

from lenstop.models.protocol import EngineProtocol
from lenstop.tui import graphs
from lenstop.tui.format import counted, plain
from lenstop.tui.graph_views import (
    EDGES_SHOWN,
    GraphModel,
    crumbs_text,
    cut_prompt,
    edges_text,
    header_text,
    intervention_text,
    node_name,
    node_title,
    parse_thresholds,
    pinned_text,
    scores_text,
    supernodes_text,
)
from lenstop.tui.keymap import Keymap
from lenstop.tui.messages import (
    Failed,
    GraphBuilt,
    GraphExported,
    GraphFailed,
    GraphIntervened,
    GraphRepruned,
    GraphStepFailed,
    SubgraphScored,
)
from lenstop.tui.safe import SafeStatic
from lenstop.tui.screens.help import HelpScreen, help_rows
from lenstop.tui.screens.value import TextScreen, ValueScreen
from lenstop.tui.widgets.footer import FooterKey, KeyFooter
from lenstop.tui.widgets.graph_grid import GraphGrid
from lenstop.tui.work import EngineWork, Kind

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph, GraphIntervention

EXPORT_PATH = "./lenstop-graph.json"
THRESHOLD_STEP = 0.05
MAX_EDGES = 12
_MOVE = "←↑↓→"
STEPS = (Kind.GRAPH_SCORES, Kind.GRAPH_PRUNE, Kind.GRAPH_INTERVENE, Kind.GRAPH_EXPORT)  # work on a built graph

BINDINGS: list[BindingType] = [
    Binding("escape", "close", "close the view", id="graph.close"),
    Binding("h,left", "move(0, -1)", "previous position", key_display=_MOVE, id="graph.left"),
    Binding("l,right", "move(0, 1)", "next position", key_display=_MOVE, id="graph.right"),
    Binding("k,up", "move(1, 0)", "layer above", key_display=_MOVE, id="graph.up"),
    Binding("j,down", "move(-1, 0)", "layer below", key_display=_MOVE, id="graph.down"),
    Binding("tab", "cycle(1)", "next node by influence", id="graph.next"),
    Binding("shift+tab", "cycle(-1)", "previous node by influence", id="graph.previous"),
    Binding("enter", "follow(1)", "follow the strongest input", id="graph.follow"),
    Binding("o", f"follow({EDGES_SHOWN + 1})", "follow the strongest output", id="graph.follow.out"),
    *(Binding(str(n), f"follow({n})", f"follow edge {n}", show=False, id=f"graph.edge.{n}") for n in range(1, 9)),
    Binding("backspace", "back", "back along the breadcrumb", id="graph.back"),
    Binding("f", "everything", "all nodes or the pruned graph", id="graph.all"),
    Binding("p", "pin", "pin or unpin the node", id="graph.pin"),
    Binding("g", "group", "group the pinned nodes into a supernode", id="graph.group"),
    Binding("r", "prune", "re-prune: type the thresholds", id="graph.prune"),
    Binding("plus,equals_sign", f"nudge({THRESHOLD_STEP})", "keep more nodes", id="graph.prune.more"),
    Binding("minus", f"nudge({-THRESHOLD_STEP})", "keep fewer nodes", id="graph.prune.less"),
    Binding("a", "ablate", "ablate the feature", id="graph.ablate"),
    Binding("c", "set_value", "set the feature to a value", id="graph.set"),
    Binding("m", "attention", "attention frozen or recomputed", id="graph.attention"),
    Binding("x", "export", "write the graph for circuit-tracer's viewer", id="graph.export"),
    Binding("comma", "position(-1)", "the graph of the token before", id="graph.position.previous"),
    Binding("full_stop", "position(1)", "the graph of the token after", id="graph.position.next"),
    Binding("question_mark", "help", "every key", id="graph.help"),
]
FOOTER = (
    FooterKey(("graph.left", "graph.down", "graph.up", "graph.right"), "node"),
    FooterKey(("graph.follow",), "follow"),
    FooterKey(("graph.back",), "back"),
    FooterKey(("graph.pin",), "pin"),
    FooterKey(("graph.group",), "group"),
    FooterKey(("graph.ablate",), "ablate"),
    FooterKey(("graph.set",), "set"),
    FooterKey(("graph.all",), "all"),
    FooterKey(("graph.prune",), "prune"),
    FooterKey(("graph.export",), "export"),
    FooterKey(("graph.close",), "close"),
    FooterKey(("graph.next",), "by influence"),
    FooterKey(("graph.follow.out",), "follow out"),
    FooterKey(("graph.attention",), "attention"),
)
GUIDE = (
    "The attribution graph of the prediction after the selected token, built on the prompt cut there: rows are "
    "layers (logits on top, token embeddings at the bottom), columns positions. ● ◐ ○ a feature, strong to "
    "weak; ◇ an error node; ■ a token; ◆ a logit. The selected node is reversed, pinned nodes underlined. "
    "Numbers 1-4 follow an input, 5-8 an output. Pinned nodes and every error node form a subgraph, whose "
    "scores are shown."
)


class GraphScreen(Screen[None]):
    BINDINGS = BINDINGS
    DEFAULT_CSS = """
    GraphScreen { layout: vertical; }
    GraphScreen #graph-header { height: 1; background: $primary-background; }
    GraphScreen .line { height: 1; }
    GraphScreen #graph-scores { color: $text-muted; }
    GraphScreen #graph-grid { border-bottom: solid $panel-lighten-2; }
    GraphScreen #graph-crumbs { color: $accent; }
    GraphScreen #graph-edges { height: auto; }
    GraphScreen #graph-intervention { height: 2; }
    GraphScreen #graph-status { height: 1fr; color: $text-muted; content-align-vertical: bottom; }
    GraphScreen #graph-status.-error { color: $error; text-style: bold; }
    """

    def __init__(
        self,
        engine: EngineProtocol,
        prompt: str,
        tokens: tuple[str, ...],
        position: int,
        *,
        bos: bool = True,
        keymap: Keymap | None = None,
    ) -> None:
        """`prompt` and `tokens`: the inspector's analysis; `position`: the token whose next token is explained;
        `bos`: whether `tokens` begin with a BOS that the prompt's text does not hold."""
        super().__init__()
        self.engine, self.prompt, self.tokens, self.bos = engine, prompt, tokens, bos
        self.position, self.keymap = position, keymap or Keymap()
        self.work = EngineWork(self)
        self.cut: str | None = None  # the prompt the graph is of
        self.graph: AttributionGraph | None = None
        self.model: GraphModel | None = None
        self.everything = False
        self.selected: int | None = None
        self.path: list[int] = []  # the nodes followed from, for backspace
        self.pinned: list[int] = []
        self.subgraph: tuple[float, float] | None = None
        self.supernodes: dict[str, tuple[int, ...]] = {}
        self.frozen = True
        self.last_setting: tuple[str, graphs.Setting] | None = None
        self.intervention: GraphIntervention | None = None
        self.header_line, self.scores_line = (
            SafeStatic(id="graph-header"),
            SafeStatic(id="graph-scores", classes="line"),
        )
        self.grid = GraphGrid(id="graph-grid")
        self.crumbs_line, self.node_line = SafeStatic(id="graph-crumbs", classes="line"), SafeStatic(classes="line")
        self.edges_pane = SafeStatic(id="graph-edges")
        self.pinned_line, self.supernodes_line = SafeStatic(classes="line"), SafeStatic(classes="line")
        self.intervention_lines, self.status_line = SafeStatic(id="graph-intervention"), SafeStatic(id="graph-status")

    def compose(self) -> ComposeResult:
        yield from (self.header_line, self.scores_line, self.grid, self.crumbs_line, self.node_line)
        yield from (self.edges_pane, self.pinned_line, self.supernodes_line, self.intervention_lines)
        yield self.status_line
        yield KeyFooter(FOOTER)

    def on_mount(self) -> None:
        self.build()

    @property
    def width(self) -> int:
        return max(40, self.app.size.width - 1)

    # ---------------------------------------------------------------- work
    def build(self) -> None:
        """The graph of the prompt cut at `position`; whatever was on screen is for another prompt and goes."""
        for kind in STEPS:
            self.work.supersede(kind)
        self.graph = self.model = self.selected = self.subgraph = self.intervention = self.last_setting = None
        self.path, self.pinned, self.supernodes = [], [], {}
        self.cut = cut_prompt(self.prompt, self.tokens, self.position, self.bos)
        if self.cut is None:
            self.work.supersede(Kind.GRAPH)
            self.draw("the tokens up to here do not spell the prompt's start: no graph can be cut there")
            self.status("cannot cut the prompt at this token", error=True)
            return
        self.draw("building the graph…")
        self.status(f"building the graph of {counted(self.position + 1, 'token')}…")
        self.work.start(Kind.GRAPH, graphs.build(self.engine, self.cut), GraphFailed)

    def on_graph_built(self, message: GraphBuilt) -> None:
        kind = Kind.GRAPH_PRUNE if isinstance(message, GraphRepruned) else Kind.GRAPH
        if not self.work.is_latest(kind, message.request) or message.prompt != self.cut:
            return  # for a prompt or thresholds no longer asked for
        if kind is Kind.GRAPH:
            self.status(f"{counted(len(message.graph.nodes), 'node')} · enter follows the strongest input")
        else:
            pruned = message.graph.pruned
            self.status(f"re-pruned at {pruned.node_threshold:g}/{pruned.edge_threshold:g}")
        self.graph = message.graph
        self._reshow()

    def on_graph_repruned(self, message: GraphRepruned) -> None:
        self.on_graph_built(message)

    def _reshow(self) -> None:
        assert self.graph is not None
        self.model = GraphModel.of(self.graph, self.everything)
        if self.selected not in self.model.shown:
            self.selected = self.model.first()
        self.path = [i for i in self.path if i in self.model.shown]
        self.draw()

    def on_subgraph_scored(self, message: SubgraphScored) -> None:
        if self.work.is_latest(Kind.GRAPH_SCORES, message.request) and message.nodes == tuple(self.pinned):
            self.subgraph = message.scores
            self.draw()

    def on_graph_intervened(self, message: GraphIntervened) -> None:
        if self.work.is_latest(Kind.GRAPH_INTERVENE, message.request):
            self.intervention = message.intervention
            self.draw()
            self.status(f"{message.what}: the real model's targets before → after")

    def on_graph_exported(self, message: GraphExported) -> None:
        if self.work.is_latest(Kind.GRAPH_EXPORT, message.request) and message.paths:
            more = f" (and {counted(len(message.paths) - 1, 'file')} beside it)" if len(message.paths) > 1 else ""
            self.status(f"wrote {message.paths[0]}{more}: open it in circuit-tracer's graph viewer")

    def on_graph_failed(self, message: GraphFailed) -> None:
        if self._failed(Kind.GRAPH, message):
            self.draw(f"no graph: {message.failure.text}")

    def on_graph_step_failed(self, message: GraphStepFailed) -> None:
        if self._failed(Kind(message.kind), message) and message.kind == Kind.GRAPH_INTERVENE:
            self.last_setting = None
            self.draw()

    def _failed(self, kind: Kind, message: Failed) -> bool:
        if not self.work.is_latest(kind, message.request):
            return False
        self.status(message.failure.text, error=True)
        return True

    # ---------------------------------------------------------------- drawing
    def draw(self, message: str = "") -> None:
        width, graph, model, selected = self.width, self.graph, self.model, self.selected
        self.header_line.update(" " + header_text(graph, self.tokens, self.position, width - 1))
        self.grid.show(model, selected, set(self.pinned), message)
        if graph is None or model is None or selected is None:
            for line in (self.scores_line, self.crumbs_line, self.node_line, self.edges_pane, self.pinned_line):
                line.update("")
            for line in (self.supernodes_line, self.intervention_lines):
                line.update("")
            return
        self.scores_line.update(" " + scores_text(model, width - 1))
        crumbs = crumbs_text(graph, [*self.path, selected], width - 9) if self.path else ""
        self.crumbs_line.update(f" path: {crumbs}" if crumbs else " path: (enter or 1-8 follows an edge)")
        self.node_line.update(node_title(graph, selected, width))
        rows = self.edge_rows()
        self.edges_pane.update(edges_text(graph, *model.neighbours(selected, rows), width, rows))
        self.pinned_line.update(pinned_text(graph, self.pinned, self.subgraph, width))
        self.supernodes_line.update(supernodes_text(graph, self.supernodes, width))
        what = self.last_setting[0] if self.last_setting else ""
        self.intervention_lines.update(intervention_text(graph, what, self.intervention, width))

    def status(self, text: str, error: bool = False) -> None:
        self.status_line.update(plain((" error: " if error else " ") + text))
        self.status_line.set_class(error, "-error")

    def _select(self, index: int | None) -> None:
        if index is not None:
            self.selected = index
            self.draw()

    def edge_rows(self) -> int:
        """The edges listed of each side: four, and on a tall screen as many more as fit (up to 12)."""
        assert self.model is not None
        free = self.app.size.height - 15 - self.model.n_rows  # the lines of everything else, and the status's two
        return max(EDGES_SHOWN, min(MAX_EDGES, free))

    # ---------------------------------------------------------------- moving
    def action_move(self, rows: int, positions: int) -> None:
        if self.model is not None and self.selected is not None:
            self._select(self.model.step(self.selected, rows, positions))

    def action_cycle(self, step: int) -> None:
        if self.model is not None and self.selected is not None:
            self._select(self.model.cycle(self.selected, step))

    def action_follow(self, number: int) -> None:
        """Follow edge `number` of the pane: 1-4 the inputs, 5-8 the outputs."""
        if self.model is None or self.selected is None:
            return
        inputs, outputs = self.model.neighbours(self.selected)
        edges, at = (inputs, number - 1) if number <= EDGES_SHOWN else (outputs, number - 1 - EDGES_SHOWN)
        if at >= len(edges):
            side = "input" if number <= EDGES_SHOWN else "output"
            self.status(f"{node_name(self.model.graph, self.selected)} has no {side} {number} in this graph")
            return
        self.path.append(self.selected)
        self._select(edges[at][0])

    def action_back(self) -> None:
        if self.path:
            self._select(self.path.pop())

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_position(self, step: int) -> None:
        position = self.position + step
        if 0 < position < len(self.tokens):
            self.position = position
            self.build()

    def action_everything(self) -> None:
        if self.graph is not None:
            self.everything = not self.everything
            self._reshow()

    # ---------------------------------------------------------------- pinning, supernodes, pruning
    def action_pin(self) -> None:
        if self.graph is None or self.selected is None:
            return
        if self.selected in self.pinned:
            self.pinned.remove(self.selected)
        else:
            self.pinned.append(self.selected)
        self.subgraph = None
        if self.pinned:
            self.work.start(
                Kind.GRAPH_SCORES, graphs.score(self.graph, tuple(self.pinned)), graphs.step_failed(Kind.GRAPH_SCORES)
            )
        else:
            self.work.supersede(Kind.GRAPH_SCORES)
        self.draw()

    def _ask(self, question: str, default: str, done: Callable[[str], None]) -> None:
        def answered(text: str | None) -> None:
            if text is not None and text.strip():
                done(text.strip())

        self.app.push_screen(TextScreen(question, default), answered)

    def action_group(self) -> None:
        if not self.pinned:
            self.status("pin the nodes of a supernode first (p)", error=True)
            return
        members = tuple(self.pinned)

        def named(name: str) -> None:
            self.supernodes[name] = members
            self.status(f"supernode {name}: {counted(len(members), 'node')}")
            self.draw()

        self._ask(
            f"name the supernode of the {counted(len(members), 'pinned node')}",
            f"group {len(self.supernodes) + 1}",
            named,
        )

    def action_prune(self) -> None:
        if self.graph is None:
            return
        pruned = self.graph.pruned

        def typed(text: str) -> None:
            try:
                self._reprune(*parse_thresholds(text))
            except ValueError as err:
                self.status(str(err), error=True)

        question = "node and edge thresholds: the shares of influence kept (circuit-tracer's 0.8 0.98)"
        self._ask(question, f"{pruned.node_threshold:g} {pruned.edge_threshold:g}", typed)

    def action_nudge(self, step: float) -> None:
        if self.graph is not None:
            pruned = self.graph.pruned
            node = round(min(1.0, max(THRESHOLD_STEP, pruned.node_threshold + step)), 4)
            self._reprune(node, pruned.edge_threshold)

    def _reprune(self, node: float, edge: float) -> None:
        assert self.graph is not None
        self.status(f"re-pruning at {node:g}/{edge:g}…")
        self.work.start(Kind.GRAPH_PRUNE, graphs.reprune(self.graph, node, edge), graphs.step_failed(Kind.GRAPH_PRUNE))

    # ---------------------------------------------------------------- interventions and export
    def _feature(self) -> tuple[int, int, int] | None:
        """The selected feature's (layer, position, feature); None, said, if the node is not a feature."""
        if self.graph is None or self.selected is None:
            return None
        node = self.graph.nodes[self.selected]
        if node.kind != "feature" or node.feature is None:
            self.status(
                f"{node_name(self.graph, self.selected)} is not a feature: only features can be set", error=True
            )
            return None
        return node.layer, node.position, node.feature

    def _intervene(self, what: str, setting: graphs.Setting) -> None:
        assert self.graph is not None
        self.last_setting, self.intervention = (what, setting), None
        self.draw()
        call = graphs.intervene(self.engine, self.graph, what, [setting], self.frozen)
        self.work.start(Kind.GRAPH_INTERVENE, call, graphs.step_failed(Kind.GRAPH_INTERVENE))

    def action_ablate(self) -> None:
        found = self._feature()
        if found is not None and self.selected is not None and self.graph is not None:
            self._intervene(f"ablate {node_name(self.graph, self.selected)}", (*found, 0.0))

    def action_set_value(self) -> None:
        found = self._feature()
        if found is None or self.selected is None or self.graph is None:
            return
        graph, index = self.graph, self.selected

        def chosen(value: float | None) -> None:
            if value is not None and graph is self.graph:
                self._intervene(f"set {node_name(graph, index)} = {value:g}", (*found, value))

        activation = graph.nodes[index].activation or 0.0
        self.app.push_screen(
            ValueScreen(f"set {node_name(graph, index)} (now {activation:.3g}) to", activation), chosen
        )

    def action_attention(self) -> None:
        self.frozen = not self.frozen
        self.status("attention " + ("frozen at its clean values" if self.frozen else "recomputed"))
        if self.last_setting is not None:
            self._intervene(*self.last_setting)

    def action_export(self) -> None:
        if self.graph is None:
            self.status("no graph yet", error=True)
            return
        graph = self.graph

        def typed(text: str) -> None:
            call = graphs.export(self.engine, graph, Path(text).expanduser())
            self.status(f"writing {text}…")
            self.work.start(Kind.GRAPH_EXPORT, call, graphs.step_failed(Kind.GRAPH_EXPORT))

        self._ask("write the graph for circuit-tracer's viewer to", EXPORT_PATH, typed)

    def action_help(self) -> None:
        groups = [("graph view", [b for b in self.BINDINGS if isinstance(b, Binding)])]
        rows = help_rows(groups, lambda b: self.keymap.keys_of(b, self.app.get_key_display))
        self.app.push_screen(HelpScreen(rows, GUIDE))
