"""`lenstop graph --out` in circuit-tracer's own viewer, in headless Chromium (tests/reference/viewer.py).

The viewer is served offline by circuit-tracer's local_server with pinned copies of what it loads from
CDNs. Every node in the file must be drawn, no request may fail or leave the machine, there must be no
console error, and a click on a feature must show the card lenstop wrote beside the graph.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))  # tests/reference.py owns the name

import circuit_tracer_env  # noqa: E402
import viewer  # noqa: E402

from lenstop.models import demo  # noqa: E402

PROMPT = "x = [alpha, beta, gamma, delta]\ny = [alpha, beta, gamma,"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    root = tmp_path_factory.mktemp("viewer")
    planted = circuit_tracer_env.plant_transcoders(root / "plt", demo.MODEL_DIR, n_features=256, seed=5)
    out = root / "graphs" / "induction.json"
    result = CliRunner().invoke(app, ["graph", "demo", "--sae", str(planted), "--prompt", PROMPT, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out.parent, json.loads(out.read_text())


def test_every_node_is_drawn_and_nothing_fails(exported: tuple[Path, dict]) -> None:
    folder, graph = exported
    assert len(graph["nodes"]) > 20
    report = viewer.check_graph_in_viewer(folder, "induction", click_feature=False)
    assert report.error is None, report.body_text
    threshold_hidden = {n: why for n, why in report.hidden_by_viewer.items() if "threshold" in why}
    assert not threshold_hidden, "nodes above the node threshold the file sets"
    assert sorted(report.drawn_node_ids) == sorted(report.expected_node_ids)
    assert not report.missing and not report.unexpected
    assert not report.console_errors and not report.page_errors
    assert not report.failed_requests and not report.blocked_requests
    tokens = [n for n in graph["nodes"] if n["feature_type"] == "embedding"]
    assert len(tokens) == len(graph["metadata"]["prompt_tokens"]), "every token has its embedding node"


def test_a_feature_click_shows_the_card_written_beside_the_graph(exported: tuple[Path, dict]) -> None:
    folder, graph = exported
    first = max(
        (n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"), key=lambda n: -n["influence"]
    )
    card = folder / "induction-features" / f"{first['feature']}.json"
    assert card.is_file()
    report = viewer.check_graph_in_viewer(folder, "induction", click_node_id=first["node_id"])
    click = report.click
    assert click is not None and click["clicked_node_ids"] == [first["node_id"]]
    fetched = [r["url"].split("/", 3)[-1] for r in click["requests"]]
    assert f"graph_data/induction-features/{first['feature']}.json" in fetched
    assert not report.blocked_requests and not report.failed_requests
    assert not report.console_errors and not report.page_errors
    top = json.loads(card.read_text())["top_logits"]
    assert top and any(token.strip() and token.strip() in click["panel_text"] for token in top)
