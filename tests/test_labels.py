"""Labels from a Neuronpedia-style export, attached with --labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.engine import Engine
from lenstop.models.errors import BadFileError, UsageError
from lenstop.models.labels import read_export

PROMPT = "def add(first, second):"


def _export(path: Path, labels: dict[int, str], layer: str | None = None) -> Path:
    items = [
        {"modelId": "tiny", "index": str(i), "description": d, **({"layer": layer} if layer else {})}
        for i, d in labels.items()
    ]
    path.write_text(json.dumps(items))
    return path


def test_labels_reach_the_analysis_and_the_json(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> None:
    engine = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu")
    top = engine.analyse(PROMPT).layer(1).features(3)[0].id
    path = _export(tmp_path / "l1.json", {top: "argument names", 9999: "out of range is ignored"}, layer="1-res-tiny")
    assert (read_export(path).model, read_export(path).layer) == ("tiny", "1-res-tiny")
    labelled = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu", labels=[str(path)])
    assert labelled.label(1, top) == "argument names"
    assert labelled.analyse(PROMPT).layer(1).labels[top] == "argument names"
    assert labelled.card(1, top).label == "argument names"
    assert labelled.card(1, top).label_source == f"neuronpedia tiny/1-res-tiny (--labels {path})"
    result = CliRunner().invoke(
        app,
        [
            "trace",
            str(tiny_model),
            "--sae",
            str(resid_saes),
            "-p",
            PROMPT,
            "--labels",
            f"1={path}",
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.stderr
    features = json.loads(result.stdout)["layers"][1]["features"][3]
    assert features[0]["id"] == top and features[0]["label"] == "argument names"


def test_labels_without_a_layer_need_one_when_there_are_several(
    tmp_path: Path, tiny_model: Path, resid_saes: Path
) -> None:
    path = _export(tmp_path / "nolayer.json", {1: "something"})
    with pytest.raises(UsageError, match="say which layer"):
        Engine.load(str(tiny_model), [str(resid_saes)], device="cpu", labels=[str(path)])


def test_bad_label_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadFileError, match="not valid JSON"):
        read_export(bad)
    bad.write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(BadFileError, match="index"):
        read_export(bad)
