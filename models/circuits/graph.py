"""A circuit: the nodes and edges above thresholds, the way sparse feature circuits are drawn.

Nodes: the strongest by their effect on the metric (|attribution| at least
`node_threshold` of the largest, at most `max_nodes`). Edges: each chosen node that
can be followed (a feature, a head, an MLP) is explained in turn, and its strongest
upstream nodes among the chosen ones (at least `edge_threshold` of its largest, at
most `max_children`) get an edge to it, weighted by their attribution to its value.
A chosen node that feeds no other gets an edge to the metric, weighted by its effect.
One forward pass serves the whole graph; each followed node costs one backward pass
(or, with `steps`, one batched pass of integrated gradients per group of nodes).
Only nodes of `kinds` are shown; the others' effects still flow through the
gradients of those shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lenstop.models.circuits.attribution import baseline, batch_target, integrated_grads, node_scores, target_of
from lenstop.models.circuits.metric import resolve
from lenstop.models.circuits.results import Circuit, Edge, NodeScore
from lenstop.models.circuits.spec import CIRCUIT_KINDS, Metric, Node, NodeKind
from lenstop.models.circuits.tracing import Trace, trace

if TYPE_CHECKING:
    from lenstop.models.engine import Engine


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
    max_nodes: int = 24,
    kinds: Sequence[NodeKind] = CIRCUIT_KINDS,
    steps: int = 0,
) -> Circuit:
    tr = trace(engine, tokens)
    assert isinstance(tr, Trace)
    mv = resolve(metric, engine.model.tokenizer, tr.logits.detach(), engine.token_strings)
    base = baseline(engine, tr.values, tokens, corrupt)
    shown = set(kinds)

    def scores(path: tuple[Node, ...]) -> list[NodeScore]:
        if steps:
            grads = integrated_grads(engine, tokens, batch_target(engine, tr, mv, path), tr.values, base, steps)
        else:
            grads = tr.grads(target_of(tr, mv, path))
        return node_scores(engine, grads, tr.values, base, skip=path[-1] if path else None)

    chosen = _strongest([s for s in scores(()) if s.node.kind in shown], node_threshold, max_nodes)
    selected = {s.node for s in chosen}
    edges: list[Edge] = []
    feeding: set[Node] = set()  # nodes with an edge into another chosen node
    for s in chosen:
        if s.node.followable:
            upstream = [u for u in scores((s.node,)) if u.node in selected]
            for u in _strongest(upstream, edge_threshold, max_children):
                edges.append(Edge(u.node, s.node, u.attribution))
                feeding.add(u.node)
    edges += [Edge(s.node, None, s.attribution) for s in chosen if s.node not in feeding]
    probs = tr.logits[0, mv.position].detach().float().softmax(-1)
    return Circuit(
        model=engine.name,
        prompt=prompt,
        tokens=tuple(engine.token_strings(tokens[0].tolist())),
        token_ids=tuple(int(i) for i in tokens[0].tolist()),
        metric=mv,
        target_prob=float(probs[mv.target_id]),
        nodes=tuple(chosen),
        edges=tuple(edges),
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        n_layers=engine.n_layers,
    )
