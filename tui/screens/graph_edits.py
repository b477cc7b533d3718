"""What the graph view's keys change on a built graph, apart from walking it: pinned nodes and the scores of
their subgraph, named supernodes, the pruning thresholds, interventions on a feature node and the export
for circuit-tracer's viewer. Each engine call or graph method runs in a worker (tui/graphs.py); the screen
(tui/screens/graph.py) draws what comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.screen import Screen

from lenstop.models.protocol import EngineProtocol
from lenstop.tui import graphs
from lenstop.tui.format import counted, plain
from lenstop.tui.graph_views import node_name, parse_thresholds
from lenstop.tui.keymap import Keymap
from lenstop.tui.safe import SafeStatic
from lenstop.tui.screens.graph_keys import GUIDE, THRESHOLD_STEP
from lenstop.tui.screens.help import HelpScreen, help_rows
from lenstop.tui.screens.value import TextScreen, ValueScreen
from lenstop.tui.work import EngineWork, Kind

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph, GraphIntervention

EXPORT_PATH = "./lenstop-graph.json"


class GraphEdits(Screen[None]):
    """The graph view's state beside the cursor, and the keys that change it."""

    def __init__(self, engine: EngineProtocol, keymap: Keymap | None) -> None:
        super().__init__()
        self.engine, self.keymap = engine, keymap or Keymap()
        self.work = EngineWork(self)  # the engine's calls, and the latest request of each kind: only it counts
        self.graph: AttributionGraph | None = None
        self.selected: int | None = None
        self.pinned: list[int] = []
        self.subgraph: tuple[float, float] | None = None  # the pinned subgraph's (replacement, completeness)
        self.supernodes: dict[str, tuple[int, ...]] = {}
        self.frozen = True  # attention held at its clean values in an intervention
        self.last_setting: tuple[str, tuple[graphs.Setting, ...]] | None = None  # what was set last, to redo
        self.intervention: GraphIntervention | None = None
        self.status_line = SafeStatic(id="graph-status")

    def draw(self, message: str = "") -> None:
        raise NotImplementedError

    def status(self, text: str, error: bool = False) -> None:
        self.status_line.update(plain((" error: " if error else " ") + text))
        self.status_line.set_class(error, "-error")

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

    def _intervene(self, what: str, *settings: graphs.Setting) -> None:
        assert self.graph is not None
        self.last_setting, self.intervention = (what, settings), None
        self.draw()
        call = graphs.intervene(self.engine, self.graph, what, settings, self.frozen)
        self.work.start(Kind.GRAPH_INTERVENE, call, graphs.step_failed(Kind.GRAPH_INTERVENE))

    def action_ablate(self) -> None:
        found = self._feature()
        if found is not None and self.selected is not None and self.graph is not None:
            self._intervene(f"ablate {node_name(self.graph, self.selected)}", (*found, 0.0))

    def action_ablate_pinned(self) -> None:
        """Ablate every pinned feature at once: a supernode, say, as one intervention."""
        graph = self.graph
        if graph is None:
            return
        features = [i for i in self.pinned if graph.nodes[i].kind == "feature"]
        if not features:
            self.status("pin the features to ablate together first (p)", error=True)
            return
        settings = [(n.layer, n.position, n.feature or 0, 0.0) for n in (graph.nodes[i] for i in features)]
        self._intervene(f"ablate {counted(len(features), 'pinned feature')}", *settings)

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
            self._intervene(self.last_setting[0], *self.last_setting[1])

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
