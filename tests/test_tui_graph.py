"""The graph view, driven by the pilot on the fake engine, whose graphs are real `AttributionGraph`s built
from the prompt's tokens (tests/fake_engine.py): what each key asks of the engine and what it shows."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from lenstop.models.errors import UsageError
from lenstop.models.graphs import AttributionGraph, NodeSetting
from lenstop.tui.app import LenstopApp
from lenstop.tui.graph_views import GraphModel, cut_prompt, parse_thresholds
from lenstop.tui.screens.graph import GraphScreen
from lenstop.tui.screens.help import HelpScreen

from fake_engine import FakeEngine, tokenize
from pilot import PROMPT, answer, make_app, screen_text, settle


def calls(engine: FakeEngine, name: str) -> list[tuple[object, ...]]:
    return [args for kind, args in engine.calls if kind == name]


async def open_graph(pilot, app: LenstopApp) -> GraphScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("G")
    await settle(pilot)
    assert isinstance(app.screen, GraphScreen)
    return app.screen


def shown(screen: GraphScreen) -> tuple[AttributionGraph, GraphModel, int]:
    assert screen.graph is not None and screen.model is not None and screen.selected is not None
    return screen.graph, screen.model, screen.selected


async def select_feature(pilot, screen: GraphScreen) -> int:  # type: ignore[no-untyped-def]
    """Tab through the nodes by influence to the first feature."""
    for _ in range(20):
        graph, _, selected = shown(screen)
        if graph.nodes[selected].kind == "feature":
            return selected
        await pilot.press("tab")
        await pilot.pause()
    raise AssertionError("no feature among the first nodes by influence")


def test_the_prompt_is_cut_after_the_selected_token() -> None:
    tokens = tokenize(PROMPT)
    assert cut_prompt(PROMPT, tokens, 4, bos=True) == "def add("
    assert cut_prompt(PROMPT, tokens, len(tokens) - 1, bos=True) == PROMPT
    assert cut_prompt("ab", ("a", "b"), 0, bos=False) == "a"
    assert cut_prompt("x y", ("<bos>", "x", "?"), 2, bos=True) is None  # the tokens do not spell the prompt


def test_thresholds_are_two_shares() -> None:
    assert parse_thresholds("0.5 0.9") == (0.5, 0.9) == parse_thresholds("0.5,0.9")
    for bad in ("0.5", "2 0.9", "a b"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


async def test_the_view_explains_the_next_token_after_the_selected_position() -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("left", "left")
        position = app.inspector.position
        screen = await open_graph(pilot, app)
        cut = "".join(tokenize(PROMPT)[1 : position + 1])
        assert calls(engine, "graph")[-1][0] == cut and cut != PROMPT
        graph, model, selected = shown(screen)
        assert graph.prompt == cut and model.shown == graph.pruned.nodes
        assert graph.nodes[selected].kind == "logit"  # the cursor starts at what the graph explains
        text = screen_text(app)
        assert f"next token after pos {position}" in text and "prompt cut there" in text
        assert "◆" in text and "■" in text and "emb" in text and "logit" in text
        assert "inputs" in text and "outputs" in text and "⏎ follow" in text
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.inspector


async def test_arrows_walk_the_grid_and_tab_goes_by_influence() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        graph, model, start = shown(screen)
        seen = []
        for _ in range(len(graph.targets) + 4):  # from the first logit, past the others, then by influence
            await pilot.press("tab")
            await pilot.pause()
            seen.append(screen.selected)
        ranked = seen[len(graph.targets) - 1 :]
        assert ranked[0] == model.ranked[0]
        assert [graph.nodes[i].influence for i in ranked] == sorted(
            (graph.nodes[i].influence for i in ranked), reverse=True
        )
        await pilot.press("shift+tab")
        await pilot.pause()
        assert screen.selected == seen[-2]
        for _ in range(len(graph.targets) + 3):
            await pilot.press("shift+tab")
        await pilot.pause()
        assert screen.selected == start
        await pilot.press("down")
        await pilot.pause()
        below = screen.selected
        assert below is not None and model.cell_of(below)[0] < model.cell_of(start)[0]
        await pilot.press("h")
        await pilot.pause()
        assert screen.selected is not None and model.cell_of(screen.selected)[1] < model.cell_of(below)[1]
        await pilot.press("l", "k", "k")  # back to the last position, up to the logits
        await pilot.pause()
        assert screen.selected == start


async def test_following_an_edge_and_coming_back() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        graph, model, start = shown(screen)
        inputs, _ = model.neighbours(start)
        await pilot.press("enter")
        await pilot.pause()
        assert screen.selected == inputs[0][0] and screen.path == [start]
        assert "path: → " in screen_text(app)
        _, outputs = model.neighbours(inputs[0][0])
        await pilot.press("5")  # its strongest output: back to a logit, most likely, but by the number
        await pilot.pause()
        assert screen.selected == outputs[0][0] and screen.path == [start, inputs[0][0]]
        await pilot.press("backspace", "backspace")
        await pilot.pause()
        assert screen.selected == start and screen.path == []


async def test_pinned_nodes_score_as_a_subgraph_and_group_into_a_supernode() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        first = await select_feature(pilot, screen)
        await pilot.press("p")
        await settle(pilot)
        one = screen.subgraph
        assert screen.pinned == [first] and one is not None
        await pilot.press("tab")
        await pilot.pause()
        second = await select_feature(pilot, screen)
        await pilot.press("p")
        await settle(pilot)
        two = screen.subgraph
        assert screen.pinned == [first, second] and two is not None and two != one
        assert f"pinned 2 + errors: replacement {two[0]:.2f}".replace("0.", ".") in screen_text(app)
        await answer(pilot, app, "g", "induction")
        assert screen.supernodes == {"induction": (first, second)}
        graph, _, _ = shown(screen)
        text = screen_text(app)
        assert "supernodes: induction [" in text and graph_name(graph, first) in text
        await pilot.press("p")  # unpins the second: the scores are of the first again
        await settle(pilot)
        assert screen.pinned == [first] and screen.subgraph == one


def graph_name(graph: AttributionGraph, index: int) -> str:
    node = graph.nodes[index]
    return f"L{node.layer} #{node.feature}@{node.position}"


async def test_re_pruning_and_all_nodes() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        graph, model, _ = shown(screen)
        await answer(pilot, app, "r", "0.5 0.9")
        repruned, remodel, selected = shown(screen)
        assert (repruned.pruned.node_threshold, repruned.pruned.edge_threshold) == (0.5, 0.9)
        assert len(remodel.shown) < len(model.shown) and selected in remodel.shown
        assert "(0.5/0.9)" in screen_text(app)
        await pilot.press("minus")
        await settle(pilot)
        assert shown(screen)[0].pruned.node_threshold == pytest.approx(0.45)
        await answer(pilot, app, "r", "3 0.9")
        assert "between 0 and 1" in screen_text(app)  # said, and the graph kept
        await pilot.press("f")
        await pilot.pause()
        assert screen.model is not None and len(screen.model.shown) == len(graph.nodes)
        assert "all 185 nodes" in screen_text(app) or f"all {len(graph.nodes)} nodes" in screen_text(app)


async def test_intervening_on_a_feature_shows_the_targets_before_and_after() -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        await pilot.press("a")  # on a logit: nothing to set
        await settle(pilot)
        assert calls(engine, "intervene_graph") == [] and "not a feature" in screen_text(app)
        index = await select_feature(pilot, screen)
        graph, _, _ = shown(screen)
        node = graph.nodes[index]
        assert node.feature is not None
        await pilot.press("a")
        await settle(pilot)
        setting = NodeSetting(node.layer, node.position, node.feature, 0.0)
        assert calls(engine, "intervene_graph")[-1] == (graph.prompt, (setting,), True)
        assert screen.intervention is not None
        target = screen.intervention.targets[0]
        assert target.new_prob != target.clean_prob
        text = screen_text(app)
        assert f"ablate {graph_name(graph, index)} (attention frozen)" in text and "→" in text and "now top" in text
        await pilot.press("m")
        await settle(pilot)
        assert calls(engine, "intervene_graph")[-1][2] is False and "attention recomputed" in screen_text(app)
        await answer(pilot, app, "c", "5")
        assert calls(engine, "intervene_graph")[-1][1] == (NodeSetting(node.layer, node.position, node.feature, 5.0),)
        assert f"set {graph_name(graph, index)} = 5" in screen_text(app)


async def test_export_writes_the_graph_where_asked(tmp_path: Path) -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_graph(pilot, app)
        await pilot.press("x")
        await pilot.pause()
        assert app.screen.query_one(Input).value == "./lenstop-graph.json"
        target = tmp_path / "out.json"
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await settle(pilot)
        assert target.exists() and len(json.loads(target.read_text())["nodes"]) > 0
        assert calls(engine, "export_graph")[-1][1] == target
        assert "wrote" in screen_text(app) and "out.json" in screen_text(app)
        await answer(pilot, app, "x", str(tmp_path))  # a folder: no file can be written there
        assert "error:" in screen_text(app) and isinstance(app.screen, GraphScreen)


async def test_a_graph_built_before_is_shown_again_without_building_it() -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        first = shown(await open_graph(pilot, app))[0]
        await pilot.press("escape", "a")  # back, and an ablation in the inspector
        await settle(pilot)
        screen = await open_graph(pilot, app)
        assert len(calls(engine, "graph")) == 1 and screen.graph is first
        text = screen_text(app)
        assert "built before" in text and "the clean model: 1 intervention not applied" in text
        await pilot.press("escape", "left")
        screen = await open_graph(pilot, app)  # another position: another prompt, built
        assert len(calls(engine, "graph")) == 2 and shown(screen)[0].prompt != first.prompt


class GatedEngine(FakeEngine):
    """The first graph waits for `gate`: it comes back after the graphs asked for after it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.first = True

    def graph(self, prompt: str, *, targets: Sequence[str] = (), wrong: str | None = None, **options: Any) -> Any:
        first, self.first = self.first, False
        if first:
            self.gate.wait(10)
        return super().graph(prompt, targets=targets, wrong=wrong, **options)


async def test_a_graph_of_a_prompt_no_longer_asked_for_is_never_shown() -> None:
    engine = GatedEngine()
    app, _ = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        position = app.inspector.position
        await pilot.press("G")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GraphScreen) and screen.graph is None
        await pilot.press("comma")  # the token before: another prompt, built at once
        for _ in range(50):
            await pilot.pause(0.02)
            if screen.graph is not None:
                break
        later = screen.graph
        assert later is not None and later.prompt == screen.cut and screen.position == position - 1
        engine.gate.set()  # the first graph, of the whole prompt, comes back last
        await settle(pilot)
        assert sorted(c[0] for c in calls(engine, "graph")) == sorted([PROMPT, later.prompt])
        assert screen.graph is later and f"after pos {position - 1}" in screen_text(app)


class FailingEngine(FakeEngine):
    def graph(self, prompt: str, *, targets: Sequence[str] = (), wrong: str | None = None, **options: Any) -> Any:
        raise UsageError("a replacement needs transcoders; this model has SAEs only")


async def test_a_failed_graph_is_one_line_and_the_app_stays_up() -> None:
    app, _ = make_app(FailingEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await open_graph(pilot, app)
        text = screen_text(app)
        assert "error: a replacement needs transcoders" in text and "no graph:" in text
        for key in ("tab", "enter", "p", "a", "x", "f", "r"):
            await pilot.press(key)
            await pilot.pause()
            if not isinstance(app.screen, GraphScreen):
                await pilot.press("escape")
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.inspector


async def test_help_and_footers_name_the_graph_keys() -> None:
    app, _ = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        assert "G graph" in screen_text(app)  # the inspector's footer
        await open_graph(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for does in ("follow the strongest input", "pin or unpin the node", "re-prune", "ablate the feature"):
            assert does in text
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert app.screen is app.inspector


async def test_markup_and_control_characters_in_tokens_are_shown_as_text() -> None:
    app, _ = make_app(prompt="x [bold]y[/] \x1b]52;c;aGk=\x07 z")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        assert screen.graph is not None
        for _ in range(6):
            await pilot.press("left")
        await pilot.pause()
        text = screen_text(app)
        assert "[" in text and "\x1b" not in text and "\x07" not in text


async def test_a_label_from_a_stranger_is_shown_not_obeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    monkeypatch.setitem(fake_engine.LABELS, 42, "[bold]x[/] \x1b]52;c;aGk=\x07 [link=http://e]y")
    app, _ = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_graph(pilot, app)
        graph = shown(screen)[0]
        labelled = next(i for i, n in enumerate(graph.nodes) if n.feature == 42 and n.kind == "feature")
        screen.selected = labelled
        screen.draw()
        await pilot.pause()
        text = screen_text(app)
        assert "[bold]x[/]" in text and "[link=http://e]y" in text and "\x1b" not in text and "\x07" not in text


async def test_the_pinned_features_are_ablated_together() -> None:
    app, engine = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_graph(pilot, app)
        await pilot.press("A")
        await settle(pilot)
        assert calls(engine, "intervene_graph") == [] and "pin the features" in screen_text(app)
        first = await select_feature(pilot, screen)
        await pilot.press("p", "tab")
        second = await select_feature(pilot, screen)
        await pilot.press("p", "A")
        await settle(pilot)
        graph = shown(screen)[0]
        settings = calls(engine, "intervene_graph")[-1][1]
        assert isinstance(settings, tuple)
        assert [(s.layer, s.position, s.feature, s.value) for s in settings] == [
            (graph.nodes[i].layer, graph.nodes[i].position, graph.nodes[i].feature, 0.0) for i in (first, second)
        ]
        assert "ablate 2 pinned features (attention frozen)" in screen_text(app)


class TestGraphSnapshots:
    def test_graph_view_at_80x24(self, snap_compare) -> None:  # type: ignore[no-untyped-def]
        app, _ = make_app(show_timings=False)

        async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
            await settle(pilot)
            await pilot.press("G")
            await settle(pilot)

        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)

    def test_pinned_and_ablated_at_80x24(self, snap_compare) -> None:  # type: ignore[no-untyped-def]
        app, _ = make_app(show_timings=False)

        async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
            await settle(pilot)
            await pilot.press("G")
            await settle(pilot)
            await pilot.press("down", "p", "left", "p", "a")
            await settle(pilot)

        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
