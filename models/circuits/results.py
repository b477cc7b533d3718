"""The answers to "why did the model predict this?", as frozen CPU values like every
other result: ranked node attributions, the direct logit attribution, the patching
grids, the heads' roles on a standard task, and a circuit of nodes and edges.

Sign convention, everywhere: a node's *attribution* (or *effect*) is how much the
metric falls when the node is removed, so positive means "this node supports the
prediction". Attributions are the linear estimate; `real` is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from lenstop.models.circuits.spec import Direction, Node
from lenstop.models.head_scores import HeadScores
from lenstop.models.results import Floats, JsonObject


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class MetricValue:
    """A metric resolved on a prompt: which tokens, at which position, and its clean value."""

    position: int
    target: str
    target_id: int
    wrong: str | None
    wrong_id: int | None
    clean: float

    @property
    def is_logit_diff(self) -> bool:
        return self.wrong_id is not None

    def describe(self) -> str:
        if self.wrong is not None:
            return f"logit({self.target!r}) − logit({self.wrong!r}) at pos {self.position}"
        return f"log p({self.target!r}) at pos {self.position}"

    def to_json(self) -> JsonObject:
        return {
            "position": self.position,
            "target": self.target,
            "target_id": self.target_id,
            "wrong": self.wrong,
            "wrong_id": self.wrong_id,
            "metric": _round(self.clean),
            "metric_kind": "logit_diff" if self.is_logit_diff else "logprob",
            "metric_description": self.describe(),
        }


@dataclass(frozen=True)
class NodeScore:
    node: Node
    attribution: float  # predicted fall of the metric when the node is removed
    activation: float | None = None  # a feature's activation on the clean prompt
    label: str | None = None
    real: float | None = None  # the measured fall, when asked for
    # With a corrupted prompt for baseline, the feature's activation on it: a feature active there alone
    # reads 0 on the clean prompt, and its attribution is the effect of its being absent.
    corrupt_activation: float | None = None

    def to_json(self) -> JsonObject:
        doc: JsonObject = {
            **self.node.to_json(),
            "attribution": _round(self.attribution),
            "activation": _round(self.activation),
            "label": self.label,
            "real": _round(self.real),
        }
        if self.corrupt_activation is not None:
            doc["corrupt_activation"] = _round(self.corrupt_activation)
        return doc


def correlation(predicted: Floats | list[float], real: Floats | list[float]) -> float | None:
    """Pearson's r, None when it is undefined (fewer than 3 points, or no spread)."""
    a, b = np.asarray(predicted, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Attribution:
    """Every node's attribution to one target: the metric, or (following upstream) one node's own value."""

    model: str
    prompt: str
    tokens: tuple[str, ...]
    metric: MetricValue
    path: tuple[Node, ...]  # from the metric to the target; empty when the target is the metric
    method: str  # "gradient" or "integrated-gradients:N"
    corrupt_prompt: str | None  # the baseline: a corrupted prompt's values, or zero when None
    nodes: tuple[NodeScore, ...]  # the top nodes by |attribution|, descending
    head_totals: Floats  # (layers, heads): each head summed over positions
    target_value: float  # the metric, or the followed node's value

    @property
    def target(self) -> Node | None:
        return self.path[-1] if self.path else None

    def with_real(self, real: Mapping[Node, float]) -> Attribution:
        """The same attribution with each measured node's real effect beside its estimate; the others as they were.
        The one place a measured effect joins an attribution, for the engine and every front end."""
        return replace(self, nodes=tuple(replace(s, real=real[s.node]) if s.node in real else s for s in self.nodes))

    @property
    def correlation(self) -> float | None:
        """Between predicted and real effects, over the nodes whose real effect was measured."""
        measured = [n for n in self.nodes if n.real is not None]
        return correlation([n.attribution for n in measured], [n.real for n in measured if n.real is not None])

    def to_json(self) -> JsonObject:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            **self.metric.to_json(),
            "target_node": None if self.target is None else self.target.to_json(),
            "target_value": _round(self.target_value),
            "method": self.method,
            "baseline": "corrupt" if self.corrupt_prompt is not None else "zero",
            "corrupt_prompt": self.corrupt_prompt,
            "nodes": [n.to_json() for n in self.nodes],
            "head_totals": [[_round(v) for v in row] for row in self.head_totals],
            "correlation": _round(self.correlation),
        }


@dataclass(frozen=True, eq=False)
class DirectAttribution:
    """The metric's direct path through the final norm (its scale frozen at the clean value):
    `embed + heads.sum() + mlps.sum() + bias + normaliser == total`."""

    metric: MetricValue
    total: float
    embed: float  # the token and position embeddings at the metric's position
    heads: Floats  # (layers, heads)
    mlps: Floats  # (layers,)
    bias: float  # attention output biases, the final norm's bias and the unembedding's bias
    normaliser: float  # -logsumexp of the logits for a log-probability metric; 0 for a logit difference
    head_sources: Floats | None = None  # (layers, heads, positions): each head's part by source position

    def to_json(self) -> JsonObject:
        return {
            **self.metric.to_json(),
            "total": _round(self.total),
            "embed": _round(self.embed),
            "heads": [[_round(v) for v in row] for row in self.heads],
            "mlps": [_round(v) for v in self.mlps],
            "bias": _round(self.bias),
            "normaliser": _round(self.normaliser),
            "head_sources": None
            if self.head_sources is None
            else [[[_round(v) for v in src] for src in row] for row in self.head_sources],
        }


@dataclass(frozen=True)
class FeaturePatch:
    layer: int
    position: int
    feature: int
    restored: float  # the share of the difference patching it carries: restored, or damage done (Patching.measure)
    estimate: float
    label: str | None = None
    clean_act: float | None = None  # the feature's activation on each run: the patched-in value is the source's
    corrupt_act: float | None = None

    def to_json(self) -> JsonObject:
        return {
            "layer": self.layer,
            "position": self.position,
            "feature": self.feature,
            "restored": _round(self.restored),
            "estimate": _round(self.estimate),
            "label": self.label,
            "clean_act": _round(self.clean_act),
            "corrupt_act": _round(self.corrupt_act),
        }


@dataclass(frozen=True, eq=False)
class Patching:
    """Activation patching between a clean and a corrupted prompt of equal length.

    Each cell is the share of the metric's clean-minus-corrupted difference that
    patching that one activation carries: with `clean->corrupt`, the corrupted run
    with the clean activation patched in (how much it restores); with
    `corrupt->clean`, the clean run with the corrupted activation patched in (how
    much it destroys). `*_estimate` is attribution patching's linear estimate of the same cell.
    """

    clean_prompt: str
    corrupt_prompt: str
    tokens: tuple[str, ...]
    corrupt_tokens: tuple[str, ...]
    metric: MetricValue
    clean_metric: float
    corrupt_metric: float
    direction: Direction
    resid: Floats  # (layers, positions): blocks.L.hook_resid_pre
    resid_estimate: Floats
    heads: Floats  # (layers, heads): at every position
    heads_estimate: Floats
    head_positions: Floats | None  # (layers, heads, positions)
    head_positions_estimate: Floats | None
    features: tuple[FeaturePatch, ...]

    @property
    def measure(self) -> str:
        """What a cell is in this direction: the share of the difference it restores to the corrupted run, or the
        share of the damage it does to the clean run (the JSON keeps the key `restored` for both)."""
        return "restored" if self.direction == "clean->corrupt" else "damage"

    def agreement(self) -> dict[str, float | None]:
        """Pearson's r between each grid and its estimate."""
        pairs = {
            "resid": (self.resid, self.resid_estimate),
            "heads": (self.heads, self.heads_estimate),
            "head_positions": (self.head_positions, self.head_positions_estimate),
        }
        out = {k: correlation(a.ravel(), b.ravel()) for k, (a, b) in pairs.items() if a is not None and b is not None}
        out["features"] = correlation([f.restored for f in self.features], [f.estimate for f in self.features])
        return out

    def to_json(self) -> JsonObject:
        layers, positions = self.resid.shape
        doc: JsonObject = {
            **self.metric.to_json(),
            "clean_prompt": self.clean_prompt,
            "corrupt_prompt": self.corrupt_prompt,
            "tokens": list(self.tokens),
            "corrupt_tokens": list(self.corrupt_tokens),
            "clean_metric": _round(self.clean_metric),
            "corrupt_metric": _round(self.corrupt_metric),
            "direction": self.direction,
            "measure": self.measure,
            "resid": [
                {
                    "layer": layer,
                    "position": pos,
                    "restored": _round(self.resid[layer, pos]),
                    "estimate": _round(self.resid_estimate[layer, pos]),
                }
                for layer in range(layers)
                for pos in range(positions)
            ],
            "heads": [
                {
                    "layer": layer,
                    "head": head,
                    "restored": _round(self.heads[layer, head]),
                    "estimate": _round(self.heads_estimate[layer, head]),
                }
                for layer in range(self.heads.shape[0])
                for head in range(self.heads.shape[1])
            ],
            "features": [f.to_json() for f in self.features],
            "agreement": {k: _round(v) for k, v in self.agreement().items()},
        }
        if self.head_positions is not None and self.head_positions_estimate is not None:
            doc["head_positions"] = [
                {
                    "layer": layer,
                    "head": head,
                    "position": pos,
                    "restored": _round(self.head_positions[layer, head, pos]),
                    "estimate": _round(self.head_positions_estimate[layer, head, pos]),
                }
                for layer in range(self.head_positions.shape[0])
                for head in range(self.head_positions.shape[1])
                for pos in range(self.head_positions.shape[2])
            ]
        return doc


@dataclass(frozen=True)
class HeadRoles:
    """Each head's scores on the standard task: repeated random tokens, averaged over sequences."""

    model: str
    layers: tuple[tuple[HeadScores, ...], ...]  # [layer][head]
    sequences: int
    span: int  # random tokens in each half

    def to_json(self) -> list[JsonObject]:
        return [
            {
                "layer": layer,
                "head": head,
                "previous_token": _round(s.previous),
                "duplicate_token": _round(s.duplicate),
                "induction": _round(s.induction),
            }
            for layer, heads in enumerate(self.layers)
            for head, s in enumerate(heads)
        ]


@dataclass(frozen=True)
class Edge:
    source: Node  # upstream
    target: Node | None  # downstream; None is the metric
    weight: float  # the source's attribution to the target's value


@dataclass(frozen=True)
class Circuit:
    """The nodes and edges above the thresholds, found by walking back from the metric."""

    model: str
    prompt: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    metric: MetricValue
    target_prob: float
    nodes: tuple[NodeScore, ...]  # attribution: each node's effect on the metric
    edges: tuple[Edge, ...]
    node_threshold: float
    edge_threshold: float
    n_layers: int
