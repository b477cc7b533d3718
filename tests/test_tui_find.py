"""Finding features in the app (`F`): a label search lists what the engine found, and a found feature's card
opens, or it is ablated or steered back in the inspector; `=` asks for what fires on the selected token."""

from __future__ import annotations

from textual.widgets import Input

from lenstop.models.interventions import FeatureAblation, FeatureSteer
from lenstop.tui.screens.feature_card import CardScreen
from lenstop.tui.screens.find import FindScreen, parse

from pilot import analyses, make_app, screen_text, settle


async def _search(pilot, app, text: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press("F")
    await pilot.pause()
    assert isinstance(app.screen, FindScreen)
    app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await settle(pilot)


async def test_a_search_lists_the_found_features_and_enter_opens_a_card() -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _search(pilot, app, "docstring")
        shot = screen_text(app)
        assert "L0 #21" in shot and "inside a docstring" in shot and "found" in shot
        assert ("find_features", ("docstring", None, None, None)) in engine.calls
        await pilot.press("down", "enter")  # the second found: layer 1's
        await settle(pilot)
        assert isinstance(app.screen, CardScreen)
        assert ("card", (1, 21)) in engine.calls


async def test_a_found_feature_is_ablated_or_steered_in_the_inspector() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await _search(pilot, app, "keyword")
        await pilot.press("a")
        await settle(pilot)
        assert not isinstance(app.screen, FindScreen)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 7),)
        await _search(pilot, app, "keyword")
        await pilot.press("down", "s")
        await pilot.pause()
        app.screen.query_one(Input).value = "3"
        await pilot.press("enter")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 7), FeatureSteer(1, 7, 3.0))


async def test_equals_asks_for_what_fires_on_the_selected_token() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        position = app.inspector.position
        await _search(pilot, app, "=")
        (call,) = [args for name, args in engine.calls if name == "find_features"]
        assert call[1] == app.inspector.analysis.prompt and call[2] == (position, position + 1)
        assert "nothing found" in screen_text(app)  # the fake finds nothing but labels
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, FindScreen)


def test_the_query_syntax() -> None:
    assert parse("docstring", 4).search == "docstring"
    assert parse("L1:446", 4).search == "L1:446"
    assert parse("+return", 4).promotes == " return" and parse("+#12", 4).promotes == "#12"
    assert parse("=", 4).span == (4, 5) and parse("=2:6", 4).span == (2, 6)


async def test_a_found_feature_is_followed_in_the_graph_view() -> None:
    from lenstop.tui.screens.graph import GraphScreen

    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("end")
        await settle(pilot)
        await _search(pilot, app, "binary operator")  # feature 42, which the fake's graph has where the logits read
        screen = app.screen
        assert isinstance(screen, FindScreen)
        last = max(range(len(screen.hits)), key=lambda i: screen.hits[i].layer)
        for _ in range(last):
            await pilot.press("down")
        await pilot.press("G")
        await settle(pilot)
        graph = app.screen
        assert isinstance(graph, GraphScreen) and graph.graph is not None and graph.selected is not None
        node = graph.graph.nodes[graph.selected]
        assert (node.kind, node.layer, node.feature) == ("feature", screen.hits[last].layer, 42)
        assert "#42" in screen_text(app)
