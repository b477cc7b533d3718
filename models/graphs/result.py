"""An attribution graph as a frozen value: its nodes, its sparse adjacency, its scores and its pruning.

Nodes come in circuit-tracer's order: the selected features (by layer, position,
feature), an error node for every (layer, position), a token-embedding node for
every position, then the logit nodes. `edges` holds every nonzero direct effect,
`weight` from `source` into `target` (indexes into `nodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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

    def _slices(self) -> tuple[torch.Tensor, slice, slice]:
        from lenstop.models.graphs.influence import logit_weights

        errors = slice(self.n_features, self.n_features + self.n_layers * self.n_pos)
        tokens = slice(errors.stop, errors.stop + self.n_pos)
        return logit_weights(len(self.nodes), torch.tensor([t.weight for t in self.targets])), errors, tokens

    def subgraph_scores(self, nodes: Sequence[int]) -> tuple[float, float]:
        """(replacement, completeness) of the graph kept to `nodes` with every token and logit node, as
        `compute_graph_scores` computes them on an adjacency masked to those nodes."""
        from lenstop.models.graphs.influence import scores

        keep = torch.zeros(len(self.nodes), dtype=torch.bool)
        keep[list(nodes)] = True
        keep[self.n_features + self.n_layers * self.n_pos :] = True
        weights, errors, tokens = self._slices()
        return scores(self.edges.where(keep[self.edges.target] & keep[self.edges.source]), weights, errors, tokens)

    def repruned(self, node_threshold: float, edge_threshold: float) -> AttributionGraph:
        """The same graph pruned at other thresholds."""
        from lenstop.models.graphs.influence import prune, scores

        weights, errors, tokens = self._slices()
        kept = self.n_pos + len(self.targets)
        pruning = prune(self.edges, weights, self.n_features, kept, node_threshold, edge_threshold)
        replacement, completeness = scores(self.edges.where(pruning.edges), weights, errors, tokens)
        nodes = tuple(torch.nonzero(pruning.nodes).squeeze(1).tolist())
        pruned = Pruned(
            nodes, pruning.edges, pruning.cumulative, replacement, completeness, node_threshold, edge_threshold
        )
        return replace(self, pruned=pruned)

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


@dataclass(frozen=True)
class NodeSetting:
    """Set one feature node of a graph to `value` (0 ablates it), as circuit-tracer's `feature_intervention`."""

    layer: int
    position: int
    feature: int
    value: float


@dataclass(frozen=True)
class TargetChange:
    """One of the graph's targets before and after an intervention."""

    token: str
    id: int
    clean_logit: float
    new_logit: float
    clean_prob: float
    new_prob: float


@dataclass(frozen=True)
class GraphIntervention:
    """The model's next-token prediction with some feature nodes set: the graph's targets before and after,
    and the new top tokens. `frozen_attention` says whether attention patterns were held at their clean values
    (circuit-tracer's default) or recomputed."""

    settings: tuple[NodeSetting, ...]
    frozen_attention: bool
    targets: tuple[TargetChange, ...]
    top: tuple[tuple[str, float], ...]  # the intervened model's most probable next tokens, (token, prob)

    def as_json(self) -> dict:
        return {
            "settings": [vars(s) for s in self.settings],
            "frozen_attention": self.frozen_attention,
            "targets": [vars(t) for t in self.targets],
            "top": [{"token": t, "prob": p} for t, p in self.top],
        }
