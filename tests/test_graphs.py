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


def test_setting_features_to_their_own_values_changes_nothing_and_ablation_matches_a_hooked_reference(
    handle, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
):
    from transformers import GPT2LMHeadModel

    import lenstop.models.graphs.intervene as module
    from lenstop.models.graphs import NodeSetting
    from lenstop.models.graphs.intervene import intervene

    rep = Planted(handle.n_layers, handle.model.cfg.d_model, 64, seed=4)
    graph = build_graph(handle, rep, PROMPT)
    picked = [n for n in graph.nodes[: graph.n_features] if n.layer == 0][:3]
    same = [NodeSetting(n.layer, n.position, n.feature or 0, n.activation or 0.0) for n in picked]
    monkeypatch.setattr(module, "replacement_of", lambda dictionaries, n_layers: rep)  # stands in for loaded ones
    for frozen in (True, False):
        kept = intervene(handle, graph, same, freeze_attention=frozen)
        for t in kept.targets:
            assert t.new_logit == pytest.approx(t.clean_logit, abs=1e-5)
    ablate = [NodeSetting(n.layer, n.position, n.feature or 0, 0.0) for n in picked]
    got = intervene(handle, graph, ablate, freeze_attention=False)
    # the reference: the Hugging Face model, with each ablated feature's activation (read live at ln_2's output)
    # times its decoder row taken away from that MLP's output
    hf = GPT2LMHeadModel.from_pretrained(tiny_model, attn_implementation="eager").eval()
    live: dict[int, torch.Tensor] = {}
    block = hf.transformer.h[0]

    def take_away(module, args, out):
        acts = rep.encode(0, live[0])
        for s in ablate:
            out = out.clone()
            out[0, s.position] -= acts[s.position, s.feature] * rep.W_dec[0][s.feature, 0]
        return out

    hooks = [
        block.ln_2.register_forward_hook(lambda m, a, o: live.__setitem__(0, o[0])),
        block.mlp.register_forward_hook(take_away),
    ]
    with torch.no_grad():
        logits = hf(torch.tensor([graph.token_ids])).logits[0, -1]
    for h in hooks:
        h.remove()
    moved = [t for t in got.targets if abs(t.new_logit - t.clean_logit) > 1e-3]
    assert moved, "ablating three active features moved no target"
    for t in got.targets:
        assert t.new_logit == pytest.approx(float(logits[t.id]), abs=1e-4)
