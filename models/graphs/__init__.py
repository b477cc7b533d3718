"""Attribution graphs on a local replacement model (Ameisen et al. 2025), as circuit-tracer computes them.

The model's MLPs are replaced by transcoders (one per layer, or cross-layer),
attention patterns and norm scales are frozen at their values on the prompt, each
(layer, position)'s reconstruction error is an input node of its own, and every
edge is an exact linear direct effect. `build_graph` returns an `AttributionGraph`.
"""

from lenstop.models.dictionaries import Replacement
from lenstop.models.graphs.attribution import GraphOptions, build_graph, graph_tokens
from lenstop.models.graphs.result import (
    AttributionGraph,
    GraphIntervention,
    GraphNode,
    NodeSetting,
    Pruned,
    TargetChange,
)
from lenstop.models.graphs.targets import LogitTarget

__all__ = [
    "AttributionGraph",
    "GraphIntervention",
    "GraphNode",
    "NodeSetting",
    "GraphOptions",
    "LogitTarget",
    "Pruned",
    "Replacement",
    "TargetChange",
    "build_graph",
    "graph_tokens",
]
