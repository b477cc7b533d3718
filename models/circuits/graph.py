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
gradients of those shown. The bounds travel as one `CircuitOptions`.
"""

from __future__ import annotations

from lenstop.models.circuits.attribution import gradients, node_scores
from lenstop.models.circuits.results import Circuit, Edge, NodeScore
from lenstop.models.circuits.setup import TracedSetup
from lenstop.models.circuits.spec import CircuitOptions, Node


def _strongest(scores: list[NodeScore], threshold: float, limit: int) -> list[NodeScore]:
    if not scores:
        return []
    ranked = sorted(scores, key=lambda s: -abs(s.attribution))
    floor = threshold * abs(ranked[0].attribution)
    return [s for s in ranked[:limit] if abs(s.attribution) >= floor and s.attribution != 0.0]


def find_circuit(s: TracedSetup, options: CircuitOptions) -> Circuit:
    """The circuit behind the set-up's metric, as `options` bound it."""

    def scores(path: tuple[Node, ...]) -> list[NodeScore]:
        return node_scores(s, gradients(s, path, options.steps), skip=path[-1] if path else None)

    shown = set(options.kinds)
    chosen = _strongest([n for n in scores(()) if n.node.kind in shown], options.node_threshold, options.max_nodes)
    selected = {n.node for n in chosen}
    edges: list[Edge] = []
    feeding: set[Node] = set()  # nodes with an edge into another chosen node
    for n in chosen:
        if n.node.followable:
            upstream = [u for u in scores((n.node,)) if u.node in selected]
            for u in _strongest(upstream, options.edge_threshold, options.max_children):
                edges.append(Edge(u.node, n.node, u.attribution))
                feeding.add(u.node)
    edges += [Edge(n.node, None, n.attribution) for n in chosen if n.node not in feeding]
    mv, tokens = s.metric, s.tokens[0].tolist()
    probs = s.trace.logits[0, mv.position].detach().float().softmax(-1)
    return Circuit(
        model=s.handle.name,
        prompt=s.prompts.text,
        tokens=tuple(s.handle.token_strings(tokens)),
        token_ids=tuple(int(i) for i in tokens),
        metric=mv,
        target_prob=float(probs[mv.target_id]),
        nodes=tuple(chosen),
        edges=tuple(edges),
        node_threshold=options.node_threshold,
        edge_threshold=options.edge_threshold,
        n_layers=s.handle.n_layers,
    )
