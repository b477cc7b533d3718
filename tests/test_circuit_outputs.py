"""What the circuit tools leave behind: head roles cached on disk, and a circuit in the
graph JSON that circuit-tracer's and Neuronpedia's viewers read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lenstop.models.circuits.export import graph_json
from lenstop.models.circuits.spec import Metric
from lenstop.models.engine import Engine

PROMPT = "def add(first, second):\n    return first + second"


def test_head_roles_are_computed_once_and_kept(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENSTOP_CACHE", str(tmp_path))
    first = engine.head_roles()
    files = list((tmp_path / "head-roles").glob("*.json"))
    assert len(files) == 1 and not list(tmp_path.rglob("*.tmp"))
    doc = json.loads(files[0].read_text())
    assert len(doc["layers"]) == engine.n_layers and len(doc["layers"][0]) == engine.n_heads
    doc["layers"][0][0] = [0.123, 0.456, 0.789]  # a mark only a read from the file can return
    files[0].write_text(json.dumps(doc))
    cached = engine.head_roles()
    assert (cached.layers[0][0].previous, cached.layers[0][0].induction) == (0.123, 0.789)
    fresh = engine.head_roles(refresh=True)
    assert fresh.layers[0][0] == first.layers[0][0] != cached.layers[0][0]
    files[0].write_text("{not json")  # a damaged file is computed again, not an error
    assert engine.head_roles().layers == first.layers
    assert json.loads(files[0].read_text())["version"] == doc["version"]


def test_another_model_gets_its_own_roles(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENSTOP_CACHE", str(tmp_path))
    engine.head_roles()
    Engine.load("demo", device="cpu").head_roles()
    assert len(list((tmp_path / "head-roles").glob("*.json"))) == 2


def test_the_graph_json_is_what_the_viewers_read(engine: Engine) -> None:
    circuit = engine.circuit(PROMPT, Metric(), node_threshold=0.05, max_nodes=12)
    doc = graph_json(circuit, slug="test")
    meta = doc["metadata"]
    assert isinstance(meta, dict)
    assert meta["slug"] == "test" and meta["prompt"] == PROMPT and meta["prompt_tokens"] == list(circuit.tokens)
    assert isinstance(meta["scan"], str) and isinstance(meta["transcoder_list"], list) and meta["schema_version"] == 1
    assert doc["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    nodes, links = doc["nodes"], doc["links"]
    assert isinstance(nodes, list) and isinstance(links, list)
    types = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str, "jsNodeId": str}
    for node in nodes:
        for key, kind in types.items():
            assert isinstance(node[key], kind), (key, node)
        assert isinstance(node["token_prob"], float) and isinstance(node["is_target_logit"], bool)
        assert isinstance(node["clerp"], str) and (node["influence"] is None or isinstance(node["influence"], float))
        assert 0 <= node["ctx_idx"] < len(circuit.tokens)
    ids = [n["node_id"] for n in nodes]
    embedded = {s.node.position for s in circuit.nodes if s.node.kind == "embed"}  # every token gets one
    assert len(ids) == len(set(ids)) == len(circuit.nodes) + 1 + len(circuit.tokens) - len(embedded)
    logits = [n for n in nodes if n["is_target_logit"]]
    assert len(logits) == 1 and logits[0]["feature"] == circuit.metric.target_id
    assert logits[0]["layer"] == str(engine.n_layers + 1) and logits[0]["feature_type"] == "logit"
    assert links and all(link["source"] in ids and link["target"] in ids for link in links)
    assert any(link["target"] == logits[0]["node_id"] for link in links)
    features = [n for n in nodes if n["feature_type"] == "cross layer transcoder"]
    assert features and all(n["node_id"].count("_") == 2 for n in features)
    json.dumps(doc)  # plain JSON all the way down
