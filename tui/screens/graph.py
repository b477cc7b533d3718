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

from typing import TYPE_CHECKING

from textual.app import ComposeResult

from lenstop.models.protocol import EngineProtocol
from lenstop.tui import graphs
from lenstop.tui.format import counted
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
from lenstop.tui.screens.graph_edits import GraphEdits
from lenstop.tui.screens.graph_keys import BINDINGS, FOOTER
from lenstop.tui.widgets.footer import KeyFooter
from lenstop.tui.widgets.graph_grid import GraphGrid
from lenstop.tui.work import Kind

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph

GraphCache = dict[str, "AttributionGraph"]  # graphs built on one engine, by the prompt they are of
CACHED = 8  # graphs a cache keeps, the oldest dropped first
MAX_EDGES = 12
STEPS = (Kind.GRAPH_SCORES, Kind.GRAPH_PRUNE, Kind.GRAPH_INTERVENE, Kind.GRAPH_EXPORT)  # work on a built graph


class GraphScreen(GraphEdits):
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
        super().__init__(engine, keymap)
        self.prompt, self.tokens, self.bos, self.position = prompt, tokens, bos, position
        self.cache: GraphCache = {}
        self.ignored = 0  # interventions active in the inspector, which the graph (of the model as it is) leaves out
        self.cut: str | None = None  # the prompt the graph is of
        self.model: GraphModel | None = None
        self.everything = False
        self.path: list[int] = []  # the nodes followed from, for backspace
        self.header_line, self.scores_line = (
            SafeStatic(id="graph-header"),
            SafeStatic(id="graph-scores", classes="line"),
        )
        self.grid = GraphGrid(id="graph-grid")
        self.crumbs_line, self.node_line = SafeStatic(id="graph-crumbs", classes="line"), SafeStatic(classes="line")
        self.edges_pane = SafeStatic(id="graph-edges")
        self.pinned_line, self.supernodes_line = SafeStatic(classes="line"), SafeStatic(classes="line")
        self.intervention_lines = SafeStatic(id="graph-intervention")
        self.focus_on: tuple[int, int] | None = None  # (layer, feature) to select once the graph is shown

    def focusing(self, layer: int, feature: int) -> GraphScreen:
        """Select feature `feature` of layer `layer` when the graph shows (its most influential node)."""
        self.focus_on = (layer, feature)
        return self

    def using(self, cache: GraphCache, ignored: int = 0) -> GraphScreen:
        """Keep built graphs in `cache` (the inspector's, so that coming back costs nothing); `ignored`: the
        interventions active in the inspector, which the status says the graph does not apply."""
        self.cache, self.ignored = cache, ignored
        return self

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
        if self.cut in self.cache:
            self.work.supersede(Kind.GRAPH)
            self._shown(self.cache[self.cut], "built before")
            return
        self.draw("building the graph…")
        self.status(f"building the graph of {counted(self.position + 1, 'token')}…")
        self.work.start(Kind.GRAPH, graphs.build(self.engine, self.cut), GraphFailed)

    def on_graph_built(self, message: GraphBuilt) -> None:
        kind = Kind.GRAPH_PRUNE if isinstance(message, GraphRepruned) else Kind.GRAPH
        if not self.work.is_latest(kind, message.request) or message.prompt != self.cut:
            return  # for a prompt or thresholds no longer asked for
        if kind is Kind.GRAPH:
            self.cache[message.prompt] = message.graph
            while len(self.cache) > CACHED:
                self.cache.pop(next(iter(self.cache)))
            self._shown(message.graph, "built")
        else:
            pruned = message.graph.pruned
            self.status(f"re-pruned at {pruned.node_threshold:g}/{pruned.edge_threshold:g}")
            self.graph = message.graph
            self._reshow()

    def _shown(self, graph: AttributionGraph, how: str) -> None:
        n = self.ignored
        then = (
            f"the clean model: {counted(n, 'intervention')} not applied" if n else "enter follows the strongest input"
        )
        self.status(f"{how}: {counted(len(graph.nodes), 'node')} · {then}")
        self.graph = graph
        self._reshow()

    def on_graph_repruned(self, message: GraphRepruned) -> None:
        self.on_graph_built(message)

    def _reshow(self) -> None:
        assert self.graph is not None
        focus = self._focused() if self.focus_on is not None else None
        self.model = GraphModel.of(self.graph, self.everything)
        if focus is not None:
            self.selected = focus
        if self.selected not in self.model.shown:
            self.selected = self.model.first()
        self.path = [i for i in self.path if i in self.model.shown]
        self.draw()

    def _focused(self) -> int | None:
        """The node of the feature asked for, most influential first, every node shown if only a pruned one is;
        said on the status line when the graph has none."""
        assert self.graph is not None and self.focus_on is not None
        layer, feature = self.focus_on
        self.focus_on = None
        nodes = self.graph.nodes
        found = [i for i, n in enumerate(nodes) if n.kind == "feature" and (n.layer, n.feature) == (layer, feature)]
        if not found:
            self.status(f"L{layer} #{feature} is not active in this graph: it does not fire up to this token")
            return None
        best = max(found, key=lambda i: nodes[i].influence)
        if best not in GraphModel.of(self.graph, False).shown:
            self.everything = True  # pruned away: show every node, so that it can be selected
        return best

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
