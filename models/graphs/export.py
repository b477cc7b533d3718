"""An attribution graph as the files circuit-tracer's local viewer (and Neuronpedia's graph upload) read.

What `circuit_tracer.utils.create_graph_files` writes, from the same pruning: `FILE.json` with `metadata`,
`qParams`, `nodes` and `links`, and `graph-metadata.json` beside it listing the graph. Their scheme:

- a feature is `{layer}_{feature}_{position}`, its `feature` the Cantor pair of (layer, feature), its type
  `cross layer transcoder` (circuit-tracer's name for every transcoder feature); an error node is
  `0_{layer}_{position}`; a token `E_{token id}_{position}`; a logit `{n_layers + 1}_{token id}_{position}`;
- `influence` is the node's cumulative share of influence (0..1, the most influential lowest), which the
  viewer hides above `metadata.node_threshold`; that threshold is set so every node in the file is drawn;
- links are the pruned graph's edges between written nodes; a feature or error node without one is left out.

A feature click fetches `{scan}/{feature}.json` when `scan` starts with `./`: so `scan` is
`./graph_data/{slug}-features`, and a feature file for every feature node is written in that folder beside
the graph (circuit-tracer's feature format: examples, top and bottom logits, histogram, density), from the
feature's card where its dictionary has cards, and from its decoder through the unembedding always. Served
by circuit-tracer's `local_server` with the graph's folder as its data directory, nothing reaches the hub.

Neuronpedia's upload (`api/graph/save-to-db`) takes the same JSON (its `graph-schema.json`) but reads `scan`
as the id of a model it hosts (only `[A-Za-z0-9_.-]`), and with `schema_version` 1 looks each feature up in
its own source set `feature_details.neuronpedia_source_set`: so a graph for Neuronpedia (`NeuronpediaTarget`)
names those two instead, and no feature files are written (Neuronpedia shows its own dashboards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenstop.models.errors import UsageError
from lenstop.models.files import write_json
from lenstop.models.graphs.result import AttributionGraph, GraphNode
from lenstop.models.safe_text import printable

if TYPE_CHECKING:
    from lenstop.models.feature_cards import Context, FeatureCard

N_LOGITS = 10  # top and bottom logits in a feature file


NEURONPEDIA_ID = re.compile(r"[A-Za-z0-9_.-]+")  # what save-to-db accepts in a scan or a slug


@dataclass(frozen=True)
class NeuronpediaTarget:
    """Where an exported graph goes on Neuronpedia: `model`, the id of a model it hosts (`gemma-2-2b`), which
    the upload takes as the graph's scan; `source_set`, the features' source set there
    (`gemmascope-transcoder-16k`), where its graph page looks features up. Without one, features show no card."""

    model: str
    source_set: str | None = None

    @classmethod
    def parse(cls, spec: str) -> NeuronpediaTarget:
        """`MODEL[:SOURCE_SET]`, each made of letters, digits and `_.-` as Neuronpedia requires."""
        model, _, source_set = spec.partition(":")
        if not model:
            raise UsageError(f"--neuronpedia {spec!r}: name the Neuronpedia model id, e.g. gemma-2-2b")
        for part, what in ((model, "model id"), (source_set, "source set")):
            if part and not NEURONPEDIA_ID.fullmatch(part):
                raise UsageError(
                    f"--neuronpedia {spec!r}: the {what} {part!r} has characters Neuronpedia refuses; use letters, "
                    "digits, '_', '.' and '-' (MODEL[:SOURCE_SET], e.g. gemma-2-2b:gemmascope-transcoder-16k)"
                )
        return cls(model, source_set or None)


def cantor(a: int, b: int) -> int:
    """Cantor's pairing, as the viewers number features: one integer per (layer, feature)."""
    return (a + b) * (a + b + 1) // 2 + b


def node_id(node: GraphNode, n_layers: int, token_ids: tuple[int, ...]) -> str:
    match node.kind:
        case "feature":
            return f"{node.layer}_{node.feature}_{node.position}"
        case "error":
            return f"0_{node.layer}_{node.position}"
        case "embed":
            return f"E_{token_ids[node.position]}_{node.position}"
        case _:
            return f"{n_layers + 1}_{node.feature}_{node.position}"


def _node(graph: AttributionGraph, index: int, first_logit: int) -> dict[str, Any]:
    node = graph.nodes[index]
    ident = node_id(node, graph.n_layers, graph.token_ids)
    out: dict[str, Any] = {
        "node_id": ident,
        "layer": str(node.layer),
        "ctx_idx": node.position,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "influence": float(graph.pruned.cumulative[index]),
        "clerp": printable(node.label) if node.kind == "feature" else "",
        "token_prob": 0.0,
        "is_target_logit": False,
    }
    match node.kind:
        case "feature":
            out |= {
                "feature": cantor(node.layer, node.feature or 0),
                "feature_type": "cross layer transcoder",
                "jsNodeId": f"{node.layer}_{node.feature}-0",
                "activation": node.activation,
            }
        case "error":
            out |= {
                "feature": -1,
                "feature_type": "mlp reconstruction error",
                "jsNodeId": f"{node.layer}_{node.position}-0",
            }
        case "embed":
            token = graph.token_ids[node.position]
            out |= {
                "feature": node.position,
                "layer": "E",
                "feature_type": "embedding",
                "jsNodeId": f"E_{token}-{node.position}",
            }
        case _:
            target = graph.targets[index - first_logit]
            out |= {
                "feature": target.id,
                "layer": str(graph.n_layers + 1),
                "feature_type": "logit",
                "jsNodeId": f"L_{target.id}-{node.position}",
                "token_prob": target.prob,
                "is_target_logit": index == first_logit,
                "clerp": printable(f'Output "{target.token}" (p={target.prob:.3f})'),
                "influence": None,
            }
    return out


def viewer_graph(graph: AttributionGraph, slug: str, neuronpedia: NeuronpediaTarget | None = None) -> dict[str, Any]:
    """The graph JSON circuit-tracer's `create_graph_files` would write for this graph and pruning; for
    Neuronpedia's upload when `neuronpedia` is given."""
    first_logit = len(graph.nodes) - len(graph.targets)
    kept = set(graph.pruned.nodes)
    edges = graph.edges
    mask = graph.pruned.edges
    links = [
        (s, t, w)
        for s, t, w in zip(
            edges.source[mask].tolist(), edges.target[mask].tolist(), edges.weight[mask].tolist(), strict=True
        )
        if s in kept and t in kept
    ]
    connected = {s for s, _, _ in links} | {t for _, t, _ in links}
    written = [i for i in sorted(kept) if i in connected or graph.nodes[i].kind in ("embed", "logit")]
    nodes = [_node(graph, i, first_logit) for i in written]
    ids = {i: node["node_id"] for i, node in zip(written, nodes, strict=True)}
    shares = [n["influence"] for n in nodes if n["influence"] is not None]
    extra: dict[str, Any] = {}
    if neuronpedia is not None and neuronpedia.source_set is not None:
        extra["feature_details"] = {"neuronpedia_source_set": neuronpedia.source_set}
    return {
        "metadata": {
            "slug": slug,
            "scan": f"./graph_data/{slug}-features" if neuronpedia is None else neuronpedia.model,
            "transcoder_list": [],
            "prompt_tokens": [printable(t) for t in graph.tokens],
            "prompt": printable(graph.prompt),
            "node_threshold": max([graph.pruned.node_threshold, *shares]),
            "schema_version": 1,
            "info": {"source": "lenstop", "transcoders": graph.transcoders, "scan": printable(graph.scan)},
            **extra,
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": [{"source": ids[s], "target": ids[t], "weight": w} for s, t, w in links],
    }


def feature_file(scan: str, node: GraphNode, card: FeatureCard | None) -> dict[str, Any]:
    """One feature of the dictionaries `scan` names, in circuit-tracer's format (`frontend/feature_models.py`),
    from its card (`lenstop.models.cards`), the same the app and `lenstop card` show: its top contexts and its
    examples by activation band, top and bottom logits, density and histogram."""
    groups: list[dict[str, Any]] = []
    if card is not None:
        if card.contexts:
            groups.append({"quantile_name": "Top activations", "examples": [_example(c) for c in card.contexts]})
        for q in card.quantiles:
            name = f"Activations {q.low:.3g} to {q.high:.3g}"
            groups.append({"quantile_name": name, "examples": [_example(c) for c in q.contexts]})
    top = [printable(t) for t, _ in card.promoted] if card is not None else []
    bottom = [printable(t) for t, _ in card.suppressed] if card is not None else []
    act_max = card.max_act if card is not None and card.max_act is not None else (node.activation or 1.0)
    counts = list(card.histogram.counts) if card is not None and card.histogram is not None else []
    while counts and counts[-1] == 0:  # the grid only doubles: its top bins may be empty
        counts.pop()
    return {
        "transcoder_id": printable(scan),
        "index": cantor(node.layer, node.feature or 0),
        "examples_quantiles": groups,
        "top_logits": top,
        "bottom_logits": bottom,
        "act_min": 0.0,
        "act_max": float(act_max),
        "quantile_values": [float(q.low) for q in card.quantiles] if card is not None else [],
        "histogram": [float(c) for c in counts],
        "activation_frequency": float(card.frequency) if card is not None and card.frequency is not None else 0.0,
    }


def _example(context: Context) -> dict[str, Any]:
    return {
        "tokens_acts_list": [float(a) for a in context.acts],
        "train_token_ind": int(context.focus),
        "is_repeated_datapoint": False,
        "tokens": [printable(t) for t in context.tokens],
    }


def write_viewer_files(
    graph: AttributionGraph, path: Path, cards: Any, neuronpedia: NeuronpediaTarget | None = None
) -> list[Path]:
    """Write `path` (the graph), `graph-metadata.json` beside it, and a feature file for every feature node
    in `{stem}-features/`, from `cards(layer, feature)` (a card or None). Returns the files written.
    For `neuronpedia`, the graph alone, its slug (the file's stem) checked as the upload checks it."""
    if neuronpedia is not None:
        if not NEURONPEDIA_ID.fullmatch(path.stem):
            raise UsageError(
                f"{path.name}: Neuronpedia takes the file's name ({path.stem!r}) as the graph's slug and refuses "
                "characters other than letters, digits, '_', '.' and '-'; rename the file"
            )
        return [write_json(path, viewer_graph(graph, path.stem, neuronpedia))]
    doc = viewer_graph(graph, path.stem)
    folder = path.parent / f"{path.stem}-features"
    written = write_feature_files(doc, folder, graph.scan, cards)
    write_json(path, doc)
    return [path, *written, write_listing(path, doc)]


def write_feature_files(doc: dict[str, Any], folder: Path, scan: str, cards: Any) -> list[Path]:
    """A feature file in `folder` for every `cross layer transcoder` node of the viewer graph `doc` (ids
    `{layer}_{feature}_{position}`), from `cards(layer, feature)` as `write_viewer_files` takes it."""
    written = []
    seen: set[int] = set()
    for node in doc["nodes"]:
        if node["feature_type"] != "cross layer transcoder" or node["feature"] in seen:
            continue
        seen.add(node["feature"])
        layer, feature = int(node["layer"]), int(node["node_id"].split("_")[1])
        graph_node = GraphNode("feature", layer, node["ctx_idx"], feature, node["activation"], 0.0)
        target = folder / f"{node['feature']}.json"
        write_json(target, feature_file(scan, graph_node, cards(layer, feature)))
        written.append(target)
    return written


def write_listing(path: Path, doc: dict[str, Any]) -> Path:
    """`graph-metadata.json` beside the graph `path`, listing `doc` (its metadata less `info`) with the graphs
    already there, a graph of the same slug replaced."""
    import json

    slug = doc["metadata"]["slug"]
    listing = path.parent / "graph-metadata.json"
    graphs = json.loads(listing.read_text())["graphs"] if listing.is_file() else []
    meta = {k: v for k, v in doc["metadata"].items() if k != "info"}
    write_json(listing, {"graphs": [g for g in graphs if g.get("slug") != slug] + [meta]})
    return listing
