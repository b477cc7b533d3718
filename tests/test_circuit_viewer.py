"""`lenstop circuit --out` in circuit-tracer's own viewer, in headless Chromium (tests/reference/viewer.py), and
the graph JSON's fields that decide how it draws (models/circuits/export.py).

The README's induction example, with its corrupted twin for baseline: every node in the file is drawn, no
request fails or leaves the machine, a feature click shows the card written beside the graph, a head is
titled by what it is (not decoded as a Cantor pair of layer and feature), every token has its embedding node,
and the features' activations are the clean prompt's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))  # tests/reference.py owns the name

import viewer  # noqa: E402

from lenstop.models.circuits.export import FEATURE_TYPES, cumulative_shares, graph_json  # noqa: E402
from lenstop.models.circuits.results import Circuit, Edge, MetricValue, NodeScore  # noqa: E402
from lenstop.models.circuits.spec import Node  # noqa: E402

# README.md, "A worked example: find the induction circuit".
HALF = " or keys Otherwise beha operand wait contin end us NO range"
PROMPT = f"{HALF} seconds{HALF}"
CORRUPT = f" sub dict class also pro info attrs item save self show month{HALF}"
FEATURE = FEATURE_TYPES["feature"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    out = tmp_path_factory.mktemp("circuit-viewer") / "graphs" / "induction.json"
    args = ["circuit", "demo", "--prompt", PROMPT, "--corrupt", CORRUPT, "--target", " seconds", "--wrong", " range"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out.parent, json.loads(out.read_text())


def test_every_node_is_drawn_and_nothing_fails(exported: tuple[Path, dict]) -> None:
    folder, graph = exported
    kinds = {n["feature_type"] for n in graph["nodes"]}
    assert {FEATURE, FEATURE_TYPES["head"], FEATURE_TYPES["error"], "embedding", "logit"} <= kinds
    report = viewer.check_graph_in_viewer(folder, "induction", click_feature=False)
    assert report.error is None, report.body_text
    assert not report.hidden_by_viewer, "nodes the viewer's own rules hide"
    assert sorted(report.drawn_node_ids) == sorted(report.file_node_ids)
    assert not report.missing and not report.unexpected
    assert not report.console_errors and not report.page_errors
    assert not report.failed_requests and not report.blocked_requests
    listed = json.loads((folder / "graph-metadata.json").read_text())["graphs"]
    assert [g["slug"] for g in listed] == ["induction"]  # the viewer's slider starts at the listing's threshold
    assert listed[0]["node_threshold"] == graph["metadata"]["node_threshold"]


def test_without_a_corrupted_prompt_too_every_node_is_drawn(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    out = tmp_path / "plain.json"
    result = CliRunner().invoke(app, ["circuit", "demo", "--prompt", PROMPT, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    graph = json.loads(out.read_text())
    assert graph["metadata"]["node_threshold"] == max(n["influence"] or 0 for n in graph["nodes"])
    report = viewer.check_graph_in_viewer(tmp_path, "plain", click_feature=False)
    assert report.error is None, report.body_text
    assert not report.hidden_by_viewer and sorted(report.drawn_node_ids) == sorted(report.file_node_ids)
    assert not report.console_errors and not report.page_errors
    assert not report.failed_requests and not report.blocked_requests


def test_every_token_has_its_embedding_node(exported: tuple[Path, dict]) -> None:
    _, graph = exported
    tokens = graph["metadata"]["prompt_tokens"]
    embeds = sorted(n["ctx_idx"] for n in graph["nodes"] if n["feature_type"] == "embedding")
    assert embeds == list(range(len(tokens)))
    linked = {link["source"] for link in graph["links"]}
    assert any(n["node_id"] not in linked for n in graph["nodes"] if n["feature_type"] == "embedding")


def test_a_feature_click_shows_the_card_written_beside_the_graph(exported: tuple[Path, dict]) -> None:
    folder, graph = exported
    features = [n for n in graph["nodes"] if n["feature_type"] == FEATURE]
    assert graph["metadata"]["scan"] == "./graph_data/induction-features"
    for node in features:  # one file per feature, in circuit-tracer's feature format
        card = json.loads((folder / "induction-features" / f"{node['feature']}.json").read_text())
        assert card["index"] == node["feature"] and len(card["top_logits"]) == len(card["bottom_logits"]) == 10
    first = min(features, key=lambda n: n["influence"])
    card = json.loads((folder / "induction-features" / f"{first['feature']}.json").read_text())
    assert card["examples_quantiles"] and card["examples_quantiles"][0]["examples"], "the demo's cards' contexts"
    report = viewer.check_graph_in_viewer(folder, "induction", click_node_id=first["node_id"])
    click = report.click
    assert click is not None and click["clicked_node_ids"] == [first["node_id"]]
    fetched = [r["url"].split("/", 3)[-1] for r in click["requests"]]
    assert f"graph_data/induction-features/{first['feature']}.json" in fetched
    assert not report.blocked_requests and not report.failed_requests
    assert not report.console_errors and not report.page_errors
    assert any(token.strip() and token.strip() in click["panel_text"] for token in card["top_logits"])


def test_a_head_is_titled_by_what_it_is_not_decoded_as_a_feature(exported: tuple[Path, dict]) -> None:
    folder, graph = exported
    head = next(n for n in graph["nodes"] if n["node_id"] == "1_H5_23")  # the induction head (README)
    report = viewer.check_graph_in_viewer(folder, "induction", click_node_id=head["node_id"])
    click = report.click
    assert click is not None and click["clicked_node_ids"] == [head["node_id"]]
    assert click["panel_text"].strip() == head["clerp"] and "L1.H5" in head["clerp"]
    assert "No logit data" not in click["panel_text"] and "L1/" not in click["panel_text"]  # a Cantor label
    assert not click["requests"], "a head has no feature file to fetch"
    assert not report.console_errors and not report.page_errors and not report.failed_requests


def test_with_a_corrupted_prompt_the_activations_are_the_clean_ones(exported: tuple[Path, dict]) -> None:
    from lenstop.models.engine import Engine

    _, graph = exported
    analysis = Engine.load("demo", device="cpu").analyse(PROMPT, top_k=64)
    features = [n for n in graph["nodes"] if n["feature_type"] == FEATURE]
    for node in features:
        layer, feature, pos = (int(p) for p in node["node_id"].split("_"))
        found = analysis.layer(layer)
        assert found is not None
        clean = found.activation_of(feature)
        assert node["activation"] == pytest.approx(0.0 if clean is None else float(clean[pos]), abs=1e-4)
    assert any(n["activation"] > 0 for n in features), "some feature of the circuit fires on the clean prompt"


# ---------------------------------------------------------------- the JSON, on a circuit made by hand
def _circuit() -> Circuit:
    metric = MetricValue(position=3, target=" b", target_id=7, wrong=None, wrong_id=None, clean=-0.5)
    nodes = (
        NodeScore(Node("head", 1, 3, head=2), 2.0),
        NodeScore(Node("feature", 0, 2, feature=9), -4.0, activation=1.5, label="a label"),
        NodeScore(Node("mlp", 0, 3), 0.5),
        NodeScore(Node("error", 1, 3), 1.0),
        NodeScore(Node("embed", None, 2), -2.5),
    )
    edges = tuple(Edge(s.node, None, s.attribution) for s in nodes)
    return Circuit("tiny", "a b a", ("a", " b", " a", " b"), (5, 7, 5, 7), metric, 0.4, nodes, edges, 0.1, 0.1, 2)


def test_influence_is_the_cumulative_share_of_the_attribution() -> None:
    doc = graph_json(_circuit(), slug="tiny")
    scored = [n for n in doc["nodes"] if n["influence"] is not None]
    assert all(0.0 <= n["influence"] <= 1.0 for n in scored)
    ranked = sorted(scored, key=lambda n: (n["influence"], -abs(n["attribution"])))  # zeros tie at 1
    assert [abs(n["attribution"]) for n in ranked] == sorted((abs(n["attribution"]) for n in scored), reverse=True)
    assert ranked[0]["attribution"] == -4.0 and ranked[0]["influence"] == pytest.approx(4 / 10)
    assert ranked[1]["influence"] == pytest.approx(6.5 / 10)
    assert max(n["influence"] for n in scored) == pytest.approx(1.0)
    assert doc["metadata"]["node_threshold"] == max(n["influence"] for n in scored)
    assert doc["metadata"]["lenstop"]["node_threshold"] == 0.1
    assert cumulative_shares([0.0, 0.0]) == [0.0, 0.0]


def test_heads_and_mlps_are_nodes_without_a_dictionary() -> None:
    doc = graph_json(_circuit(), slug="tiny")
    by_id = {n["node_id"]: n for n in doc["nodes"]}
    head, mlp, feature = by_id["1_H2_3"], by_id["0_M_3"], by_id["0_9_2"]
    for node in (head, mlp):
        assert "error" in node["feature_type"] and node["feature_type"] != "mlp reconstruction error"
        assert "attribution" in node["clerp"] and node["feature"] != -1
    assert head["feature"] == 2 and "L1.H2" in head["clerp"] and mlp["feature"] == -2
    assert feature["feature_type"] == "cross layer transcoder" and feature["clerp"] == "a label"
    assert feature["activation"] == 1.5 and feature["feature"] == (0 + 9) * (0 + 9 + 1) // 2 + 9
    featureids = [f"{n['layer']}_{n['feature']}_{n['ctx_idx']}" for n in doc["nodes"]]
    assert len(featureids) == len(set(featureids))


def test_every_token_gets_an_embedding_node_those_outside_the_circuit_without_links() -> None:
    doc = graph_json(_circuit(), slug="tiny")
    embeds = {n["ctx_idx"]: n for n in doc["nodes"] if n["feature_type"] == "embedding"}
    assert sorted(embeds) == [0, 1, 2, 3]
    assert embeds[2]["attribution"] == -2.5 and embeds[0]["attribution"] == 0.0
    assert [embeds[pos]["node_id"] for pos in range(4)] == ["E_5_0", "E_7_1", "E_5_2", "E_7_3"]
    linked = {link["source"] for link in doc["links"]}
    assert "E_5_2" in linked and "E_5_0" not in linked
