"""An attribution graph as a frozen value: its nodes, its sparse adjacency, its scores and its pruning.

Nodes come in circuit-tracer's order: the selected features (by layer, position,
feature), an error node for every (layer, position), a token-embedding node for
every position, then the logit nodes. `edges` holds every nonzero direct effect,
`weight` from `source` into `target` (indexes into `nodes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lenstop.models.graphs.influence import Edges
from lenstop.models.graphs.targets import LogitTarget

NodeKind = Literal["feature", "error", "embed", "logit"]


@dataclass(frozen=True)
class GraphNode:
    kind: NodeKind
    layer: int  # a logit node's is n_layers, an embedding's 0
    position: int
    feature: int | None  # a feature's index in its layer's transcoder; a logit node's token id
    activation: float | None  # a feature's activation; None for the others
    influence: float  # circuit-tracer's node influence on the weighted logits
    label: str = ""

    def as_json(self, index: int) -> dict:
        return {
            "id": index,
            "kind": self.kind,
            "layer": self.layer,
            "position": self.position,
            "feature": self.feature,
            "activation": self.activation,
            "influence": self.influence,
            "label": self.label,
        }


@dataclass(frozen=True)
class Pruned:
    """`prune_graph`'s result: the kept nodes (tokens and logits always), the kept edges, and their scores."""

    nodes: tuple[int, ...]
    edges: torch.Tensor  # (n_edges,) bool over `AttributionGraph.edges`
    cumulative: torch.Tensor  # (n_nodes,) each node's cumulative influence share, as the viewer reads `influence`
    replacement_score: float
    completeness_score: float
    node_threshold: float
    edge_threshold: float


@dataclass(frozen=True)
class AttributionGraph:
    """The graph of one prompt on a local replacement model (see `lenstop.models.graphs`)."""

    prompt: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    targets: tuple[LogitTarget, ...]
    nodes: tuple[GraphNode, ...]
    edges: Edges
    n_layers: int
    n_active_features: int  # every active feature, selected or not
    replacement_score: float
    completeness_score: float
    pruned: Pruned
    scan: str
    transcoders: str  # the replacement's kind

    @property
    def n_pos(self) -> int:
        return len(self.token_ids)

    @property
    def n_features(self) -> int:
        return len(self.nodes) - (self.n_layers + 1) * self.n_pos - len(self.targets)

    @property
    def adjacency(self) -> torch.Tensor:
        """A torch sparse CSR (n_nodes, n_nodes), [target, source], as circuit-tracer's dense `adjacency_matrix`."""
        return self.edges.to_sparse()

    def error_index(self, layer: int, position: int) -> int:
        return self.n_features + layer * self.n_pos + position

    def embed_index(self, position: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + position

    def inputs(self, node: int, k: int = 10) -> list[tuple[int, float]]:
        """The `k` strongest direct inputs of `node`, as (source, weight), by absolute weight."""
        return self._strongest(self.edges.target == node, self.edges.source, k)

    def outputs(self, node: int, k: int = 10) -> list[tuple[int, float]]:
        """The `k` strongest direct effects of `node`, as (target, weight), by absolute weight."""
        return self._strongest(self.edges.source == node, self.edges.target, k)

    def _strongest(self, mask: torch.Tensor, other: torch.Tensor, k: int) -> list[tuple[int, float]]:
        weights = self.edges.weight[mask]
        order = torch.argsort(weights.abs(), descending=True)[:k]
        return [(int(other[mask][i]), float(weights[i])) for i in order]

    def as_json(self) -> dict:
        """The `lenstop graph --json` document."""
        return {
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": list(self.token_ids),
            "targets": [t.as_json() for t in self.targets],
            "transcoders": self.transcoders,
            "scan": self.scan,
            "n_active_features": self.n_active_features,
            "nodes": [node.as_json(i) for i, node in enumerate(self.nodes)],
            "edges": [
                {"source": int(s), "target": int(t), "weight": float(w)}
                for s, t, w in zip(
                    self.edges.source.tolist(), self.edges.target.tolist(), self.edges.weight.tolist(), strict=True
                )
            ],
            "replacement_score": self.replacement_score,
            "completeness_score": self.completeness_score,
            "pruned": {
                "nodes": list(self.pruned.nodes),
                "node_threshold": self.pruned.node_threshold,
                "edge_threshold": self.pruned.edge_threshold,
                "replacement_score": self.pruned.replacement_score,
                "completeness_score": self.pruned.completeness_score,
            },
        }
