"""The inspector on the real engine and the bundled demo: the numbers on screen
are the numbers `lenstop trace --json` prints for the same interventions."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from lenstop.commands.cli import app as cli
from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

from pilot import settle

PROMPT = "def area(width, height):\n    return width * height"


async def test_app_and_trace_json_agree_on_the_demo() -> None:
    app = LenstopApp(
        EngineSpec("demo", device="cpu"), session=Session(model="demo", prompt=PROMPT.replace("\n", "\\n"))
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.inspector.analysis is not None and "".join(app.inspector.analysis.tokens[1:]) == PROMPT
        await pilot.press("right_square_bracket", "a")
        await settle(pilot)
        layer = app.inspector.current_layer
        feature = app.inspector.interventions.entries[0].intervention.feature
        assert (
            app.inspector.analysis.interventions == app.inspector.interventions.active
            and app.inspector.analysis.kl is not None
        )
        shown = app.inspector.analysis
    result = CliRunner().invoke(
        cli,
        [
            "trace",
            "--prompt",
            PROMPT.replace("\n", "\\n"),
            "--ablate",
            f"{layer}:{feature}",
            "--json",
            "--device",
            "cpu",
            "--top-k",
            "12",
            "--predictions",
            "10",
        ],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tokens"] == list(shown.tokens)
    np.testing.assert_allclose([p["prob"] for p in doc["predictions"][-1]], shown.predictions.probs[-1], atol=1e-5)
    np.testing.assert_allclose(
        [p["prob"] for p in doc["clean_predictions"][-1]], shown.clean_predictions.probs[-1], atol=1e-5
    )
    np.testing.assert_allclose(doc["kl"], shown.kl, atol=1e-5)
    layer_doc = next(lf for lf in doc["layers"] if lf["layer"] == layer)
    assert [f["id"] for f in layer_doc["features"][-1]] == [
        f.id for f in shown.layer(layer).features(len(shown.tokens) - 1)
    ]
