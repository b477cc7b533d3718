"""What the graph view asks of the engine and of a built graph, as calls that a worker runs
(`lenstop.tui.work`): the graph of a prompt, a pinned subgraph's scores, a re-pruning, an intervention on
feature nodes, an export for circuit-tracer's viewer. The graph's own methods run on torch tensors, so
they run here too, off the UI thread; so does making a `NodeSetting`, whose module imports torch.

Each returns the message to post; none touches a widget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lenstop.models.protocol import EngineProtocol
from lenstop.tui.failure import Failure
from lenstop.tui.messages import (
    GraphBuilt,
    GraphExported,
    GraphIntervened,
    GraphRepruned,
    GraphStepFailed,
    SubgraphScored,
)
from lenstop.tui.work import Job, Kind

if TYPE_CHECKING:
    from lenstop.models.circuits.results import Circuit
    from lenstop.models.graphs import AttributionGraph

Setting = tuple[int, int, int, float]  # (layer, position, feature, value), made a NodeSetting in the worker


def build(engine: EngineProtocol, prompt: str) -> Callable[[Job], GraphBuilt]:
    def call(job: Job) -> GraphBuilt:
        return GraphBuilt(job.request, prompt, engine.graph(prompt))

    return call


def score(graph: AttributionGraph, pinned: tuple[int, ...]) -> Callable[[Job], SubgraphScored]:
    """The scores of the subgraph of the pinned nodes with every error node, which stands for what they
    leave out (without the errors, any set of features would explain everything from the tokens)."""

    def call(job: Job) -> SubgraphScored:
        errors = [i for i, node in enumerate(graph.nodes) if node.kind == "error"]
        return SubgraphScored(job.request, pinned, graph.subgraph_scores([*pinned, *errors]))

    return call


def reprune(graph: AttributionGraph, node_threshold: float, edge_threshold: float) -> Callable[[Job], GraphRepruned]:
    def call(job: Job) -> GraphRepruned:
        return GraphRepruned(job.request, graph.prompt, graph.repruned(node_threshold, edge_threshold))

    return call


def intervene(
    engine: EngineProtocol, graph: AttributionGraph, what: str, settings: Sequence[Setting], frozen: bool
) -> Callable[[Job], GraphIntervened]:
    def call(job: Job) -> GraphIntervened:
        from lenstop.models.graphs import NodeSetting

        made = [NodeSetting(layer, position, feature, value) for layer, position, feature, value in settings]
        return GraphIntervened(job.request, what, engine.intervene_graph(graph, made, freeze_attention=frozen))

    return call


def export(engine: EngineProtocol, graph: AttributionGraph | Circuit, path: Path) -> Callable[[Job], GraphExported]:
    def call(job: Job) -> GraphExported:
        return GraphExported(job.request, tuple(engine.export_graph(graph, path)))

    return call


def step_failed(kind: Kind) -> Callable[[int, Failure], GraphStepFailed]:
    return lambda request, failure: GraphStepFailed(request, failure, kind.value)
