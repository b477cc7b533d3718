"""A circuit: the nodes and edges above thresholds, found by walking back from the metric.

The metric's top upstream nodes (by |attribution|, each at least `node_threshold`
of the largest) join the circuit with an edge to the metric. Each followable node
(a feature, a head, an MLP) is then explained the same way: its own top upstream
nodes (each at least `edge_threshold` of its largest) join with an edge to it, and
so on, breadth first, until `max_nodes` nodes. One forward pass serves the whole
walk; each followed node costs one backward pass. Only nodes of `kinds` are shown;
the others' effects still flow through the gradients of those shown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lenstop.models.circuits.attribution import baseline, node_scores, target_of
from lenstop.models.circuits.metric import resolve
from lenstop.models.circuits.results import Circuit, Edge, NodeScore
from lenstop.models.circuits.spec import Metric, Node, NodeKind
from lenstop.models.circuits.tracing import Trace, trace

if TYPE_CHECKING:
    from lenstop.models.engine import Engine


# MLP outputs are left out by default: without a dictionary of their own, an MLP is one opaque node as large
# as its layer, and its effects still reach the circuit through the nodes it feeds.
CIRCUIT_KINDS: tuple[NodeKind, ...] = ("feature", "error", "head", "embed")


def _strongest(scores: list[NodeScore], threshold: float, limit: int) -> list[NodeScore]:
    if not scores:
        return []
    ranked = sorted(scores, key=lambda s: -abs(s.attribution))
    floor = threshold * abs(ranked[0].attribution)
    return [s for s in ranked[:limit] if abs(s.attribution) >= floor and s.attribution != 0.0]


def find_circuit(
    engine: Engine,
    prompt: str,
    tokens: torch.Tensor,
    corrupt: torch.Tensor | None,
    metric: Metric,
    *,
    node_threshold: float = 0.1,
    edge_threshold: float = 0.1,
    max_children: int = 6,
    max_nodes: int = 30,
    kinds: Sequence[NodeKind] = CIRCUIT_KINDS,
) -> Circuit:
    tr = trace(engine, tokens)
    assert isinstance(tr, Trace)
    mv = resolve(metric, engine.model.tokenizer, tr.logits.detach(), engine.token_strings)
    base = baseline(engine, tr.values, tokens, corrupt)
    to_metric = node_scores(engine, tr.grads(target_of(tr, mv, ())), tr.values, base)
    shown = set(kinds)
    by_node = {s.node: s for s in to_metric}
    nodes: dict[Node, NodeScore] = {}
    edges: list[Edge] = []
    queue: deque[tuple[Node, ...]] = deque()
    for s in _strongest([s for s in to_metric if s.node.kind in shown], node_threshold, max_children):
        nodes[s.node] = s
        edges.append(Edge(s.node, None, s.attribution))
        if s.node.followable:
            queue.append((s.node,))
    while queue and len(nodes) < max_nodes:
        path = queue.popleft()
        target = path[-1]
        upstream = node_scores(engine, tr.grads(target_of(tr, mv, path)), tr.values, base, skip=target)
        upstream = [s for s in upstream if s.node.kind in shown]
        for s in _strongest(upstream, edge_threshold, max_children):
            if s.node not in nodes:
                if len(nodes) >= max_nodes:
                    break
                nodes[s.node] = by_node.get(s.node, NodeScore(s.node, 0.0, s.activation, s.label))
                if s.node.followable:
                    queue.append((*path, s.node))
            edges.append(Edge(s.node, target, s.attribution))
    probs = tr.logits[0, mv.position].detach().float().softmax(-1)
    return Circuit(
        model=engine.name,
        prompt=prompt,
        tokens=tuple(engine.token_strings(tokens[0].tolist())),
        token_ids=tuple(int(i) for i in tokens[0].tolist()),
        metric=mv,
        target_prob=float(probs[mv.target_id]),
        nodes=tuple(sorted(nodes.values(), key=lambda s: -abs(s.attribution))),
        edges=tuple(edges),
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        n_layers=engine.n_layers,
    )
