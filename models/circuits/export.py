"""A circuit as the files circuit-tracer's local viewer (and Neuronpedia's graph upload) read: the graph JSON
(`metadata` with the prompt's tokens, `qParams`, `nodes`, `links`), a feature file for every feature node in
`{slug}-features/` beside it, and `graph-metadata.json` listing the graph (`write_viewer_files`).

Node ids follow those viewers' scheme: a feature is `{layer}_{feature}_{position}`, an error node
`{layer}_-1_{position}`, an input token `E_{token id}_{position}`, the target logit
`{layers + 1}_{token id}_{position}`; heads and MLPs, which those graphs do not have, are
`{layer}_H{head}_{position}` and `{layer}_M_{position}`. Every prompt token has its embedding node (the
viewer draws every embedding, titled `Emb: “token”`), those outside the circuit with attribution 0 and no links.

What the viewer does with each field decided what is written (its js, `frontend/assets/attribution_graph/`):

- `influence` is the node's cumulative share of |attribution| (nodes sorted by |attribution| descending, the
  running sum over the total at the node's rank, as circuit-tracer's `prune_graph` scores nodes): the viewer
  keeps `d.influence <= parseFloat(visState.pruningThreshold)` (util-cg.js `formatData`), its slider starting
  at `metadata.node_threshold`, which is therefore the largest influence written: every node is drawn, and
  the slider prunes from the weakest. lenstop's own `node_threshold` (a share of the strongest node's
  |attribution|) and `edge_threshold` are in `metadata.lenstop`. The signed attribution is each node's
  `attribution`, a field the viewer and circuit-tracer's pydantic `Node` (extra fields ignored) pass over.
- A dictionary feature is typed `cross layer transcoder` although lenstop's are residual SAEs: it is the one
  type the viewer gives a feature card (init-cg-feature-detail.js:
  `} else if (d.feature_type == 'cross layer transcoder') { ... featureExamples.loadFeature(scan, d.featureIndex)`,
  and `'F#'` in the node panel only `clickedNode.feature_type == 'cross layer transcoder'`); any other type
  falls to `headerSel.html(`<b>${label}</b>`); logitsSel.html('No logit data')`, the label built from
  `util.cantorUnpair(d.featureIndex)` when `schema_version > 0`. Its `feature` is the Cantor pair of
  (layer, feature), and the card the viewer fetches is `{scan}/{feature}.json` with `scan` the relative
  `./graph_data/{slug}-features`, so nothing is asked of the hub.
- A head or an MLP is typed `attention head (error-like node)` / `mlp output (error-like node)`: the viewer
  treats any type holding "error" as a node with no dictionary behind it (`if
  (d.feature_type.includes('error')){ d.isError = true`), and for those the panel is the node's `clerp` as
  its title (`if (d.isError || ...) { ... .text(d.ppClerp)`), with nothing fetched and nothing decoded as a
  Cantor pair; it draws them ● (only the exact `mlp reconstruction error` gets ◆, `featureTypeToText`). So
  their `clerp` says what they are and their attribution; `feature` is the head's index, an MLP's -2 (an
  error's is -1), which keeps every node's `featureId` (`layer_feature_ctx`) distinct.
- A link's `weight` is the source's attribution to the target's value; a node's `activation` is a feature's
  activation on the clean prompt (with a corrupted prompt for baseline, a feature active only there reads 0:
  its absence is the cause), and `corrupt_activation` its activation on the corrupted one where known.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lenstop.models.circuits.results import Circuit, NodeScore
from lenstop.models.circuits.spec import Node
from lenstop.models.results import JsonObject

if TYPE_CHECKING:
    from lenstop.models.feature_cards import FeatureCard
    from lenstop.models.runtime.handle import ModelHandle

FEATURE_TYPES = {
    "feature": "cross layer transcoder",  # the one type the viewer gives a feature card
    "error": "mlp reconstruction error",
    "embed": "embedding",
    "head": "attention head (error-like node)",  # "error" in the type: drawn without a card, titled by clerp
    "mlp": "mlp output (error-like node)",
}
MLP_FEATURE = -2  # an MLP node's `feature`: not an error's -1, so its featureId is its own


def _pair(a: int, b: int) -> int:
    """Cantor's pairing: one integer per (layer, feature), as the viewers number features."""
    from lenstop.models.graphs.export import cantor

    return cantor(a, b)


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


def cumulative_shares(attributions: list[float]) -> list[float]:
    """Each node's cumulative share of |attribution|: sorted by |attribution| descending (ties in order), the
    running sum over the total at its rank; the strongest lowest, the weakest 1. All zero: all 0."""
    total = sum(abs(a) for a in attributions)
    shares = [0.0] * len(attributions)
    running = 0.0
    for i in sorted(range(len(attributions)), key=lambda i: -abs(attributions[i])):
        running += abs(attributions[i])
        shares[i] = running / total if total else 0.0
    return shares


def _clerp(score: NodeScore, circuit: Circuit) -> str:
    node = score.node
    if node.kind == "feature":
        return score.label or node.describe()
    pos = node.position if node.position is not None else circuit.metric.position
    what = "head " if node.kind == "head" else ""
    return f"{what}{node.describe()} “{circuit.tokens[pos]}”: attribution {score.attribution:+.4g}"


def _node(score: NodeScore, circuit: Circuit, influence: float) -> JsonObject:
    node = score.node
    pos = node.position if node.position is not None else circuit.metric.position
    layer = "E" if node.kind == "embed" else str(node.layer)
    feature = {
        "feature": _pair(node.layer or 0, node.feature or 0),
        "error": -1,
        "head": node.head,
        "mlp": MLP_FEATURE,
    }.get(node.kind, pos)
    ident = node_id(node, circuit)
    doc: JsonObject = {
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
        "clerp": _clerp(score, circuit),
        "influence": round(influence, 6),
        "activation": None if score.activation is None else round(score.activation, 6),
        "attribution": round(score.attribution, 6),  # lenstop's: the viewer reads `influence`
    }
    if score.corrupt_activation is not None:
        doc["corrupt_activation"] = round(score.corrupt_activation, 6)
    return doc


def _with_every_token(circuit: Circuit) -> list[NodeScore]:
    """The circuit's nodes, and an embedding node (attribution 0) for every token the circuit has none of."""
    have = {s.node.position for s in circuit.nodes if s.node.kind == "embed"}
    extra = [NodeScore(Node("embed", None, pos), 0.0) for pos in range(len(circuit.tokens)) if pos not in have]
    return [*circuit.nodes, *extra]


def graph_json(circuit: Circuit, slug: str = "lenstop") -> JsonObject:
    """The graph JSON; its features' cards are `./graph_data/{slug}-features/{feature}.json`, which
    `write_viewer_files` writes beside it."""
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
    scores = _with_every_token(circuit)
    shares = [round(s, 6) for s in cumulative_shares([s.attribution for s in scores])]
    return {
        "metadata": {
            "slug": slug,
            "scan": f"./graph_data/{slug}-features",
            "transcoder_list": [],
            "prompt_tokens": list(circuit.tokens),
            "prompt": circuit.prompt,
            "node_threshold": max(shares, default=0.0),  # the viewer hides nodes above it: none here
            "schema_version": 1,
            "lenstop": {
                **m.to_json(),
                "model": circuit.model,
                "node_threshold": circuit.node_threshold,
                "edge_threshold": circuit.edge_threshold,
            },
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": [logit, *(_node(s, circuit, share) for s, share in zip(scores, shares, strict=True))],
        "links": [
            {"source": node_id(e.source, circuit), "target": node_id(e.target, circuit), "weight": round(e.weight, 6)}
            for e in circuit.edges
        ],
    }


def write_viewer_files(handle: ModelHandle, circuit: Circuit, path: Path) -> JsonObject:
    """Write the circuit for circuit-tracer's viewer: a feature file for every feature node in
    `{stem}-features/` (its dictionary's card where it has one, and its decoder row through the unembedding),
    then `path`, then `graph-metadata.json` beside it, with `lenstop.models.graphs.export`'s functions.
    Returns the graph JSON written."""
    from lenstop.models.files import write_json
    from lenstop.models.graphs.export import write_listing

    doc = graph_json(circuit, path.stem)
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    if any(node["feature_type"] == FEATURE_TYPES["feature"] for node in nodes):  # no feature: the model unread
        _write_feature_files(handle, circuit, doc, path.parent / f"{path.stem}-features")
    write_json(path, doc)
    write_listing(path, doc)
    return doc


def _write_feature_files(handle: ModelHandle, circuit: Circuit, doc: JsonObject, folder: Path) -> None:
    from lenstop.models.cards.api import card
    from lenstop.models.graphs.export import write_feature_files

    def feature_card(layer: int, feature: int) -> FeatureCard | None:
        return card(handle, layer, feature)

    write_feature_files(doc, folder, f"lenstop:{circuit.model}", feature_card)
