"""The circuit view, driven by the pilot: on the fake engine for what each key asks of the engine
and shows, and on the demo for the induction circuit walked by hand and the CLI's JSON equal to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static
from typer.testing import CliRunner

from lenstop.commands.cli import app as cli
from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.screens.circuit import CircuitScreen, ContributorTable
from lenstop.tui.session import Session

from fake_engine import FakeEngine
from pilot import PROMPT, answer, make_app, marked_rows, screen_text, settle


def calls(engine: FakeEngine, name: str) -> list[tuple[object, ...]]:
    return [args for kind, args in engine.calls if kind == name]


async def open_circuit(pilot, app: LenstopApp) -> CircuitScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("t")
    await settle(pilot)
    assert isinstance(app.screen, CircuitScreen)
    return app.screen


async def test_the_circuit_view_explains_the_selected_tokens_prediction() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("left", "left")
        position = app.inspector.position
        screen = await open_circuit(pilot, app)
        prompt, metric, corrupt, path, steps = calls(engine, "attribute")[-1]
        assert (prompt, metric, corrupt, path, steps) == (PROMPT, Metric(position=position), None, (), 0)
        assert screen.attribution is not None and screen.circuit is not None
        table = screen.query_one(ContributorTable)
        shown = [s.node for s in table.scores]
        assert shown == [s.node for s in screen.attribution.nodes][: len(shown)]
        text = screen_text(app)
        assert f"at pos {position}" in text and "metric" in text and "contributors" in text
        assert shown[0].describe().replace(" ", "") in text.replace(" ", "") or "L" in text


async def test_the_circuit_view_says_it_reads_the_clean_model_while_interventions_are_active() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")  # an ablation in the inspector
        await settle(pilot)
        await open_circuit(pilot, app)
        assert calls(engine, "attribute")[-1][0] == PROMPT  # the circuit of the model as it is
        assert "clean model (1 intervention not applied)" in screen_text(app)
        await pilot.press("escape", "u")  # back, and the ablation undone
        await settle(pilot)
        await open_circuit(pilot, app)
        assert "not applied" not in screen_text(app)


async def test_enter_follows_a_node_and_backspace_comes_back() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        table = screen.query_one(ContributorTable)
        row = next(i for i, s in enumerate(table.scores) if s.node.followable)
        followed = table.scores[row].node
        table.move_cursor(row=row)
        await pilot.press("enter")
        await settle(pilot)
        assert calls(engine, "attribute")[-1][3] == (followed,)
        assert screen.attribution is not None and screen.attribution.target == followed
        crumbs = str(screen.query_one("#crumbs", Static).render())
        assert crumbs.startswith(" metric › ") and f"@{followed.position}" in crumbs
        await pilot.press("backspace")
        await settle(pilot)
        assert calls(engine, "attribute")[-1][3] == () and screen.path == ()
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.inspector


async def test_an_input_node_cannot_be_followed() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        table = screen.query_one(ContributorTable)
        row = next(i for i, s in enumerate(table.scores) if not s.node.followable)
        table.move_cursor(row=row)
        before = len(calls(engine, "attribute"))
        await pilot.press("enter")
        await settle(pilot)
        assert len(calls(engine, "attribute")) == before and "nothing upstream explains it" in screen_text(app)


async def test_target_wrong_token_and_integrated_gradients_change_the_metric() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("t")
        await pilot.pause()
        app.screen.query_one(Input).value = " first"
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one(Input).value = " second"
        await pilot.press("enter")
        await settle(pilot)
        metric = calls(engine, "attribute")[-1][1]
        assert metric == Metric(position=screen.metric.position, target=" first", wrong=" second")
        assert "logit(' first') − logit(' second')" in screen_text(app)
        await pilot.press("i")
        await settle(pilot)
        assert calls(engine, "attribute")[-1][4] == 8 and "integrated gradients (8)" in screen_text(app)


async def test_a_corrupted_prompt_turns_on_patching() -> None:
    app, engine = make_app()
    corrupt = PROMPT.replace("first", "other")
    async with app.run_test(size=(120, 45)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = corrupt
        await pilot.press("enter")
        await settle(pilot)
        assert calls(engine, "patch")[-1][:2] == (PROMPT, corrupt) and calls(engine, "attribute")[-1][2] == corrupt
        assert screen.patching is not None
        text = screen_text(app)
        assert "patching clean->corrupt" in text and "layer × position" in text and "layer × head" in text
        await pilot.press("d")
        await settle(pilot)
        assert calls(engine, "patch")[-1][3] == "corrupt->clean" and "patching corrupt->clean" in screen_text(app)


async def test_r_measures_real_effects_beside_the_predictions() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("r")
        await settle(pilot)
        measured = calls(engine, "effects")[-1][1]
        assert len(measured) == 12
        assert screen.attribution is not None
        real = {s.node: s.real for s in screen.attribution.nodes if s.real is not None}
        assert set(real) == set(measured) and all(real[n] == pytest.approx(engine._score(n) * 1.25) for n in real)


async def test_a_failure_is_one_line_and_the_view_stays() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = "too short"
        await pilot.press("enter")
        await settle(pilot)
        status = str(screen.query_one("#circuit-status", Static).render())
        assert "error:" in status and "tokens" in status and app.is_running and app.screen is screen


def test_the_circuit_screens_bindings_have_ids() -> None:
    assert all(b.id for b in (*CircuitScreen.BINDINGS, *ContributorTable.BINDINGS))


# ---------------------------------------------------------------- on the demo
SPAN = " or keys Otherwise beha operand wait contin end us NO range seconds"
INDUCTION = SPAN + SPAN.rsplit(" ", 1)[0]
CORRUPT = " sub dict class also pro info attrs item save self show month" + SPAN.rsplit(" ", 1)[0]


async def test_on_the_demo_the_view_walks_from_an_induction_head_to_the_previous_token_head() -> None:
    session = Session(model="demo", prompt=INDUCTION)
    app = LenstopApp(EngineSpec("demo", device="cpu"), session=session)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = CORRUPT
        await pilot.press("enter")
        await pilot.press("i")
        await settle(pilot)
        assert screen.attribution is not None and screen.patching is not None
        table = screen.query_one(ContributorTable)
        last = len(screen.attribution.tokens) - 1
        row, induction = next(
            (i, s.node) for i, s in enumerate(table.scores) if s.node.kind == "head" and s.node.layer == 1
        )
        assert induction.head in {1, 2, 4, 5, 6} and induction.position == last  # an induction head, by the task
        table.move_cursor(row=row)
        await pilot.press("enter")
        await settle(pilot)
        heads = [s.node for s in screen.attribution.nodes if s.node.kind == "head"]
        assert (heads[0].layer, heads[0].head) == (0, 0), [h.describe() for h in heads[:4]]
        await pilot.press("d")  # damage the clean run one head at a time: L0.H0 carries the most of layer 0
        await settle(pilot)
        assert screen.patching.direction == "corrupt->clean"
        assert max(range(8), key=lambda h: screen.patching.heads[0, h]) == 0
        shown = screen.attribution.to_json()
    metric = screen.attribution.metric
    result = CliRunner().invoke(
        cli,
        [
            "attribute",
            "--prompt",
            INDUCTION,
            "--corrupt",
            CORRUPT,
            "--steps",
            "8",
            "--top",
            "2000",
            "--position",
            str(metric.position),
            "--follow",
            f"1.{induction.head}@{last}",
            "--json",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["metric"] == pytest.approx(shown["metric"], abs=1e-5) and doc["target_node"] == shown["target_node"]
    assert len(doc["nodes"]) == len(shown["nodes"])
    for a, b in zip(doc["nodes"], shown["nodes"], strict=True):
        assert {k: a[k] for k in ("kind", "layer", "position", "feature", "head")} == {
            k: b[k] for k in ("kind", "layer", "position", "feature", "head")
        }
        assert a["attribution"] == pytest.approx(b["attribution"], abs=1e-4)


async def test_export_writes_the_circuit_through_the_engine_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("x")
        await settle(pilot)
        written = sorted(tmp_path.glob("lenstop-circuit-*.json"))
        assert len(written) == 1 and json.loads(written[0].read_text())["nodes"]
        assert [args[1] for args in calls(engine, "export_graph")] == [Path(written[0].name)]
        assert f"saved {written[0].name}" in str(screen.query_one("#circuit-status", Static).render())
    assert Node("head", 1, 3, head=2).followable


async def test_c_cancels_a_patching_under_way_and_its_grids_never_arrive() -> None:
    engine = FakeEngine(delay_s=1.0)
    app, _ = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = PROMPT.replace("first", "other")
        await pilot.press("enter")
        await pilot.pause(0.3)
        await pilot.press("c")
        await pilot.pause()
        assert "patching cancelled" in str(screen.query_one("#circuit-status", Static).render())
        await settle(pilot)
        assert screen.patching is None  # the cancelled run's grids never arrive
        assert app.is_running and app.screen is screen


async def test_real_effects_stay_with_the_nodes_they_were_measured_for() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        engine.delay_s = 0.5
        await pilot.press("r", "f")  # the filter changes what the table shows while they are measured
        await settle(pilot)
        measured = calls(engine, "effects")[-1][1]
        assert screen.attribution is not None
        real = {s.node: s.real for s in screen.attribution.nodes if s.real is not None}
        assert set(real) == set(measured) and all(real[n] == pytest.approx(engine._score(n) * 1.25) for n in real)


async def test_a_failed_attribution_clears_the_table_and_a_failed_export_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(graph: object, path: object) -> list[Path]:
        raise OSError(30, "Read-only file system")

    app, engine = make_app()
    monkeypatch.setattr(engine, "export_graph", refuse)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await pilot.press("x")
        await settle(pilot)
        assert "cannot write" in str(screen.query_one("#circuit-status", Static).render()) and app.is_running
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = "too short"
        await pilot.press("enter")
        await settle(pilot)
        assert screen.attribution is None and screen.patching is None
        shown = screen_text(app)  # the patching is not drawn: the two prompts are, token by token
        assert "no attribution:" in shown and "no circuit:" in shown and "token by token" in shown
        assert "log p(" not in shown.splitlines()[0]  # the header no longer names the metric of before


async def test_the_selected_contributor_is_marked_without_colour() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        table = screen.query_one(ContributorTable)
        assert marked_rows(table) == [0]
        await pilot.press("j", "j")
        assert marked_rows(table) == [2]


def test_a_contributors_label_is_cut_to_its_room() -> None:
    from lenstop.models.circuits.results import NodeScore
    from lenstop.tui.widgets.contributors import contributor_line

    score = NodeScore(Node("feature", 1, 0, feature=5), 1.5, 2.0, "x" * 150)
    assert ("x" * 150) in contributor_line(score, ["a"], width=300).plain
    narrow = contributor_line(score, ["a"], width=100).plain
    assert len(narrow) == 100 and narrow.endswith("x…")


async def test_a_corrupted_prompt_of_another_length_shows_both_tokenisations_aligned() -> None:
    """It left 'circuit · finding…' forever, the message cut off, and never showed what the CLI shows."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_circuit(pilot, app)
        await answer(pilot, app, "p", PROMPT.replace("second", "other one"))
        pane = screen.query_one("#drawing-pane")
        assert pane.border_title == "circuit · failed"
        drawn = str(screen.query_one("#drawing", Static).render())
        assert "no circuit: the clean prompt is 19 tokens and the corrupted one 23" in drawn
        lines = drawn.splitlines()
        assert any(
            a.startswith("clean   <bos> def") and b.startswith("corrupt <bos> def")
            for a, b in zip(lines, lines[1:], strict=False)
        )
        clean, corrupt, mark = next(
            (a, b, c) for a, b, c in zip(lines, lines[1:], lines[2:], strict=False) if c.strip() == "^"
        )
        assert clean.index("second") == corrupt.index("other") == mark.index("^")  # the first difference, aligned
        status = str(screen.query_one("#circuit-status", Static).render())
        assert "the clean prompt is 19 tokens and the corrupted one 23" in status
        await answer(pilot, app, "p", PROMPT.replace("first", "other"))
        assert pane.border_title.startswith("circuit · ") and "failed" not in pane.border_title
        assert "token by token" not in str(screen.query_one("#drawing", Static).render()) and screen.patching


async def test_patching_says_what_its_cells_measure_in_each_direction_and_both_runs_activations() -> None:
    """The view said 'restored' both ways, and a feature active only on the corrupted run showed act 0."""
    app, engine = make_app()
    corrupt = PROMPT.replace("first", "other")
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_circuit(pilot, app)
        await answer(pilot, app, "p", corrupt)
        drawn = str(screen.query_one("#drawing", Static).render())
        assert "restored to the corrupted run" in drawn and "strongest (restored)" in drawn
        assert "features (restored, act clean→corrupted)" in drawn
        table = screen.query_one(ContributorTable)
        header = str(table.ordered_columns[0].label)
        assert "act→corrupt" in header
        feature = next(s for s in table.scores if s.node.kind == "feature")
        assert feature.corrupt_activation is not None and f"→{feature.corrupt_activation:<5.2f}" in str(
            table.get_row_at(table.scores.index(feature))[0]
        )
        await pilot.press("d")
        await settle(pilot)
        drawn = str(screen.query_one("#drawing", Static).render())
        assert "damage done to the clean run" in drawn and "strongest (damage)" in drawn and "restored" not in drawn
        await answer(pilot, app, "p", "")  # no corrupted prompt: one run, one activation
        assert "→corrupt" not in str(table.ordered_columns[0].label)
