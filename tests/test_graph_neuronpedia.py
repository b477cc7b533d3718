"""`lenstop graph --out FILE --neuronpedia MODEL[:SOURCE_SET]` writes what Neuronpedia's graph upload accepts:
its own graph-schema.json through Ajv 8 as its save-to-db route calls it, and the route's scan and slug rules
(tests/reference/neuronpedia.py). The local viewer's export, whose scan is a relative path, is refused there,
which is why the option exists. Whether the model id exists on Neuronpedia no offline check can say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))  # tests/reference.py owns the name

import neuronpedia  # noqa: E402

from lenstop.commands.cli import app  # noqa: E402
from lenstop.models.errors import ExitCode  # noqa: E402
from lenstop.models.graphs.export import cantor  # noqa: E402

PROMPT = "def add(first, second):\n    return first +"


def export(out: Path, *extra: str) -> CliRunner:
    result = CliRunner().invoke(app, ["graph", "-p", PROMPT, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("np")
    export(root / "local" / "add.json")
    export(root / "np" / "add.json", "--neuronpedia", "lenstop-demo:demo-transcoders")
    return {"local": root / "local" / "add.json", "neuronpedia": root / "np" / "add.json"}


def test_the_neuronpedia_graph_passes_the_uploads_checks(files: dict[str, Path]) -> None:
    local, upload = neuronpedia.check_upload(files["local"], files["neuronpedia"])
    assert upload["valid"], upload["errors"]
    assert upload["charset_ok"] and upload["size_ok"]
    # the local viewer's file is schema-valid too, but its ./graph_data/... scan is what the route refuses
    assert local["valid"] and not local["charset_ok"]


def test_the_neuronpedia_graph_names_the_model_and_source_set_and_writes_nothing_else(files: dict[str, Path]) -> None:
    doc = json.loads(files["neuronpedia"].read_text())
    meta = doc["metadata"]
    assert meta["scan"] == "lenstop-demo" and meta["slug"] == "add"
    assert meta["feature_details"] == {"neuronpedia_source_set": "demo-transcoders"}
    assert sorted(p.name for p in files["neuronpedia"].parent.iterdir()) == ["add.json"]
    # the same nodes as the local viewer's file, with features numbered as Neuronpedia decodes them
    local = json.loads(files["local"].read_text())
    assert [n["node_id"] for n in doc["nodes"]] == [n["node_id"] for n in local["nodes"]]
    features = [n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features
    for n in features:
        layer, index, _ = n["node_id"].split("_")
        assert n["feature"] == cantor(int(layer), int(index)) and n["layer"] == layer


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--neuronpedia", "gemma/2b"], "characters Neuronpedia refuses"),
        (["--neuronpedia", "gemma-2-2b:set one"], "characters Neuronpedia refuses"),
        (["--neuronpedia", ":set"], "name the Neuronpedia model id"),
    ],
)
def test_bad_neuronpedia_targets_are_one_line_before_any_work(tmp_path: Path, args: list[str], said: str) -> None:
    result = CliRunner().invoke(app, ["graph", "-p", PROMPT, "--out", str(tmp_path / "g.json"), *args])
    assert result.exit_code == ExitCode.USAGE and said in result.output, result.output
    assert not (tmp_path / "g.json").exists()


def test_neuronpedia_needs_out_and_a_slug_it_accepts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["graph", "-p", PROMPT, "--neuronpedia", "gemma-2-2b"])
    assert result.exit_code == ExitCode.USAGE and "give --out FILE.json too" in result.output
    result = CliRunner().invoke(
        app, ["graph", "-p", PROMPT, "--out", str(tmp_path / "my graph.json"), "--neuronpedia", "gemma-2-2b"]
    )
    assert result.exit_code == ExitCode.USAGE and "rename the file" in result.output, result.output
