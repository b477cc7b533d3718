"""Attribution graphs against a replacement model written from scratch (tests/graph_reference.py).

Every edge of lenstop's graph on a tiny GPT-2 with random LayerNorm gains must equal
the finite-difference direct effect in a float64 forward that shares no code with
it, for per-layer transcoders, a skip transcoder and a cross-layer transcoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from graph_reference import Planted, reference_edges

from lenstop.models.graphs import AttributionGraph, GraphOptions, build_graph

PROMPT = "def add(first, second):\n    return"


@pytest.fixture(scope="module")
def handle(tiny_model: Path):
    from lenstop.models.engine import Engine

    return Engine.load(str(tiny_model), device="cpu").handle


def node_key(graph: AttributionGraph, index: int) -> tuple:
    node = graph.nodes[index]
    if node.kind == "feature":
        return ("feature", node.layer, node.position, node.feature)
    if node.kind == "error":
        return ("error", node.layer, node.position)
    if node.kind == "embed":
        return ("embed", node.position)
    return ("logit", node.feature)


@pytest.mark.parametrize(
    "kind", [{"clt": False, "skip": False}, {"clt": False, "skip": True}, {"clt": True, "skip": False}]
)
def test_every_edge_is_the_direct_effect_in_a_hand_written_replacement_model(handle, tiny_model: Path, kind: dict):
    rep = Planted(handle.n_layers, handle.model.cfg.d_model, 64, seed=3, **kind)
    graph = build_graph(handle, rep, PROMPT, GraphOptions(batch_size=7))
    assert graph.n_features == graph.n_active_features > 20
    logits = [t.id for t in graph.targets]
    names, columns = reference_edges(tiny_model, list(graph.token_ids), rep, logits)
    index = {node_key(graph, i): i for i in range(len(graph.nodes))}
    dense = graph.adjacency.to_dense()
    rows = torch.tensor([index[name] for name in names])
    scale = max(float(c.abs().max()) for c in columns.values())
    assert scale > 0
    for source, expected in columns.items():
        got = dense[rows, index[source]].double()
        worst = float((got - expected).abs().max())
        assert worst <= 1e-4 * scale, f"edges from {source} differ by {worst:.3g} (largest edge {scale:.3g})"
    assert len(columns) == graph.n_features + (handle.n_layers + 1) * graph.n_pos
    not_sources = torch.ones(len(graph.nodes), dtype=torch.bool)
    not_sources[[index[s] for s in columns]] = False
    assert not dense[:, not_sources].any(), "the logit nodes are never sources"
    got = {
        (node_key(graph, t), node_key(graph, s)): w
        for t, s, w in zip(
            graph.edges.target.tolist(), graph.edges.source.tolist(), graph.edges.weight.tolist(), strict=True
        )
    }
    # the nonzero structure: sources never reach targets at earlier positions or lower layers
    assert all(s[2] <= t[2] for t, s in got if t[0] == "feature" and s[0] in ("feature", "error"))


def test_position_zero_has_no_features_but_keeps_its_error_and_embedding_nodes(handle):
    rep = Planted(handle.n_layers, handle.model.cfg.d_model, 64, seed=1)
    graph = build_graph(handle, rep, PROMPT)
    kinds = [n for n in graph.nodes if n.position == 0]
    assert not [n for n in kinds if n.kind == "feature"]
    assert sum(n.kind == "error" for n in kinds) == handle.n_layers
    assert sum(n.kind == "embed" for n in kinds) == 1
    zero_errors = [graph.error_index(layer, 0) for layer in range(handle.n_layers)]
    assert not torch.isin(graph.edges.source, torch.tensor(zero_errors)).any()


def test_activations_are_the_transcoders_own_on_the_models_mlp_inputs(handle, tiny_model: Path):
    from transformers import GPT2LMHeadModel

    rep = Planted(handle.n_layers, handle.model.cfg.d_model, 64, seed=2)
    graph = build_graph(handle, rep, PROMPT)
    hf = GPT2LMHeadModel.from_pretrained(tiny_model, attn_implementation="eager").eval()
    seen = {}
    hooks = [
        b.mlp.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[0][0]))
        for i, b in enumerate(hf.transformer.h)
    ]
    with torch.no_grad():
        hf(torch.tensor([graph.token_ids]))
    for h in hooks:
        h.remove()
    for node in graph.nodes[: graph.n_features]:
        expected = float(rep.encode(node.layer, seen[node.layer])[node.position, node.feature])
        assert node.activation == pytest.approx(expected, abs=1e-5)
    n_expected = sum(int((rep.encode(layer, seen[layer])[1:] != 0).sum()) for layer in range(handle.n_layers))
    assert graph.n_features == n_expected
