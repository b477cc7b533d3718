"""A circuit as the graph JSON that circuit-tracer's and Neuronpedia's attribution-graph
viewers read: `metadata` (with the prompt's tokens), `qParams`, `nodes` and `links`.

Node ids follow those viewers' scheme: a feature is `{layer}_{feature}_{position}`,
an error node `{layer}_-1_{position}`, an input token `E_{token id}_{position}`, the
target logit `{layers + 1}_{token id}_{position}`. Heads and MLPs, which those graphs
do not have, are `{layer}_H{head}_{position}` and `{layer}_M_{position}` with their own
`feature_type`. A node's `influence` is its attribution to the metric; a link's
`weight` is the source's attribution to the target's value.
"""

from __future__ import annotations

from lenstop.models.circuits.results import Circuit, NodeScore
from lenstop.models.circuits.spec import Node
from lenstop.models.results import JsonObject

FEATURE_TYPES = {
    "feature": "cross layer transcoder",  # the viewers' name for a dictionary feature
    "error": "mlp reconstruction error",
    "embed": "embedding",
    "head": "attention head",
    "mlp": "mlp",
}


def _pair(a: int, b: int) -> int:
    """Cantor's pairing: one integer per (layer, feature), as the viewers number features."""
    return (a + b) * (a + b + 1) // 2 + b


def node_id(node: Node | None, circuit: Circuit) -> str:
    if node is None:
        return f"{circuit.n_layers + 1}_{circuit.metric.target_id}_{circuit.metric.position}"
    pos = node.position if node.position is not None else circuit.metric.position
    match node.kind:
        case "feature":
            return f"{node.layer}_{node.feature}_{pos}"
        case "error":
            return f"{node.layer}_-1_{pos}"
        case "embed":
            return f"E_{circuit.token_ids[pos]}_{pos}"
        case "head":
            return f"{node.layer}_H{node.head}_{pos}"
        case _:
            return f"{node.layer}_M_{pos}"


def _node(score: NodeScore, circuit: Circuit) -> JsonObject:
    node = score.node
    pos = node.position if node.position is not None else circuit.metric.position
    layer = "E" if node.kind == "embed" else str(node.layer)
    feature = {"feature": _pair(node.layer or 0, node.feature or 0), "error": -1, "head": node.head}.get(node.kind, pos)
    ident = node_id(node, circuit)
    return {
        "node_id": ident,
        "feature": feature,
        "layer": layer,
        "ctx_idx": pos,
        "feature_type": FEATURE_TYPES[node.kind],
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        # The viewers' display id: a feature's is the same at every position; the others' end in theirs.
        "jsNodeId": f"{node.layer}_{node.feature}-0" if node.kind == "feature" else "-".join(ident.rsplit("_", 1)),
        "clerp": score.label or node.describe(),
        "influence": round(score.attribution, 6),
        "activation": None if score.activation is None else round(score.activation, 6),
    }


def graph_json(circuit: Circuit, slug: str = "lenstop") -> JsonObject:
    m = circuit.metric
    logit = {
        "node_id": node_id(None, circuit),
        "feature": m.target_id,
        "layer": str(circuit.n_layers + 1),
        "ctx_idx": m.position,
        "feature_type": "logit",
        "token_prob": round(circuit.target_prob, 6),
        "is_target_logit": True,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": f"L_{m.target_id}-{m.position}",
        "clerp": f'Output "{m.target}" (p={circuit.target_prob:.3f})',
        "influence": None,
        "activation": None,
    }
    return {
        "metadata": {
            "slug": slug,
            "scan": f"lenstop:{circuit.model}",
            "transcoder_list": [],
            "prompt_tokens": list(circuit.tokens),
            "prompt": circuit.prompt,
            "node_threshold": circuit.node_threshold,
            "schema_version": 1,
            "lenstop": {
                **m.to_json(),
                "edge_threshold": circuit.edge_threshold,
            },
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": [logit, *(_node(s, circuit) for s in circuit.nodes)],
        "links": [
            {"source": node_id(e.source, circuit), "target": node_id(e.target, circuit), "weight": round(e.weight, 6)}
            for e in circuit.edges
        ],
    }
