"""`lenstop graph` as a user runs it on the demo: the --json document's fields agree with each other and
with the Python API, and bad input is one line with its exit code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.errors import ExitCode

from helpers import one_line

PROMPT = "def add(first, second):\n    return first +"


@pytest.fixture(scope="module")
def doc() -> dict:
    result = CliRunner().invoke(app, ["graph", "-p", PROMPT, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_json_document_is_one_consistent_graph(doc: dict) -> None:
    nodes, edges = doc["nodes"], doc["edges"]
    n_pos, n_layers = len(doc["tokens"]), 3
    kinds = [n["kind"] for n in nodes]
    assert kinds.count("error") == n_layers * n_pos and kinds.count("embed") == n_pos
    assert kinds.count("logit") == len(doc["targets"]) >= 1
    assert kinds.count("feature") == doc["n_active_features"] > 50
    assert [n["id"] for n in nodes] == list(range(len(nodes)))
    assert all(0 <= e["source"] < len(nodes) and 0 <= e["target"] < len(nodes) and e["weight"] for e in edges)
    assert not [e for e in edges if nodes[e["source"]]["kind"] == "logit"], "a logit node is never a source"
    assert not [e for e in edges if nodes[e["target"]]["kind"] in ("error", "embed")], "inputs have no inputs"
    logits = [n for n in nodes if n["kind"] == "logit"]
    assert [n["feature"] for n in logits] == [t["id"] for t in doc["targets"]]
    probs = [t["prob"] for t in doc["targets"]]
    assert probs == sorted(probs, reverse=True) and (len(probs) == 10 or sum(probs) >= 0.95)
    assert sum(probs[:-1]) < 0.95, "the targets are cut where their probability first reaches 0.95"
    kept = doc["pruned"]["nodes"]
    assert set(range(len(nodes) - len(logits) - n_pos, len(nodes))) <= set(kept), "tokens and logits are kept"
    assert 0 < doc["pruned"]["replacement_score"] <= 1 and 0 < doc["replacement_score"] <= 1
    pruned_features = [nodes[i] for i in kept if nodes[i]["kind"] == "feature"]
    assert sum(bool(n["label"]) for n in pruned_features) > len(pruned_features) / 2, "the demo's cards label them"
    assert doc["token_ids"][0] == 0, "BOS is prepended"


def test_the_json_equals_the_python_api(doc: dict) -> None:
    from lenstop.models import Engine

    graph = Engine.load("demo", ["demo:transcoders"]).graph(PROMPT).as_json()
    assert [(e["source"], e["target"]) for e in graph["edges"]] == [(e["source"], e["target"]) for e in doc["edges"]]
    scale = max(abs(e["weight"]) for e in doc["edges"])
    assert max(abs(a["weight"] - b["weight"]) for a, b in zip(graph["edges"], doc["edges"], strict=True)) < 1e-5 * scale
    acts = [(a["activation"] or 0) - (b["activation"] or 0) for a, b in zip(graph["nodes"], doc["nodes"], strict=True)]
    assert max(abs(d) for d in acts) < 1e-5


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--sae", "demo"], ExitCode.USAGE, "is an SAE"),
        (["--wrong", " x"], ExitCode.USAGE, "exactly one --target"),
        (["--target", " return value"], ExitCode.USAGE, "not one"),
        (["--target", "#99999"], ExitCode.USAGE, "vocabulary"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: ExitCode, words: str) -> None:
    result = CliRunner().invoke(app, ["graph", "demo", "-p", PROMPT, *args])
    one_line(result, code, words)
