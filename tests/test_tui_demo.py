"""The inspector on the real engine and the bundled demo: the numbers on screen
are the numbers `lenstop trace --json` prints for the same interventions."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from lenstop.commands.cli import app as cli
from lenstop.tui.app import LenstopApp
from lenstop.tui.loader import engine_loader
from lenstop.tui.session import Session

PROMPT = "def area(width, height):\n    return width * height"


async def settle(pilot) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def test_app_and_trace_json_agree_on_the_demo() -> None:
    app = LenstopApp(
        engine_loader("demo", device="cpu"), session=Session(model="demo", prompt=PROMPT.replace("\n", "\\n"))
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.analysis is not None and "".join(app.analysis.tokens[1:]) == PROMPT
        await pilot.press("escape", "right_square_bracket", "a")
        await settle(pilot)
        layer = app.session.selection.layer
        feature = app.session.entries[0].intervention.feature
        assert app.analysis.interventions == app.session.active and app.analysis.kl is not None
        shown = app.analysis
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
