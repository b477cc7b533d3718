"""The inspector driven by Textual's pilot against a fake engine: what the screen
shows and which engine calls the app makes, for each thing a user does."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from textual.widgets import Input, Label, Static

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import NotFoundError, OutOfMemoryError
from lenstop.models.interventions import FeatureAblation, FeatureSteer, HeadKnockout
from lenstop.tui.app import LenstopApp
from lenstop.tui.messages import PositionsOutside
from lenstop.tui.session import Session
from lenstop.tui.widgets.effects import ShiftView
from lenstop.tui.widgets.features import FeatureTable

from fake_engine import FakeEngine, FakeFactory
from pilot import PROMPT, analyses, make_app, marked_rows, screen_text, settle


async def test_loads_and_shows_the_prompt_at_the_first_dictionary_layer() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert analyses(engine) == [(PROMPT, ())]
        header = str(app.inspector.query_one("#header").render())
        assert "fake" in header and "layer [0] 1 2" in header
        table = app.inspector.query_one(FeatureTable)
        assert table.row_count > 0 and table.feature_ids[0] == 13  # " second" is repeated: feature 13 leads
        assert "argument name, repeated" in screen_text(app)


async def test_typing_is_debounced_and_only_the_latest_analysis_counts() -> None:
    engine = FakeEngine(delay_s=0.05)
    app, _ = make_app(engine, prompt="")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press(*"x = 1")
        await pilot.pause(0.6)
        await settle(pilot)
        prompts = [p for p, _ in analyses(engine)]
        assert prompts[-1] == "x = 1"
        assert len(prompts) <= 2  # five keystrokes, one debounced analysis
        assert app.inspector.analysis.prompt == "x = 1"


async def test_escaped_newlines_reach_the_engine_as_newlines() -> None:
    app, engine = make_app(prompt=r"def f():\n    pass")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert analyses(engine)[-1][0] == "def f():\n    pass"


async def test_tokens_and_layers_are_stepped_with_keys() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        last = len(app.inspector.analysis.tokens) - 1
        assert app.inspector.position == last
        await pilot.press("left", "h")
        assert app.inspector.position == last - 2
        await pilot.press("l")
        assert app.inspector.position == last - 1
        await pilot.press("right_square_bracket")
        assert app.inspector.current_layer == 1
        assert "layer 0 [1] 2" in str(app.inspector.query_one("#header").render())
        assert "features · L1" in str(app.inspector.query_one("#features-pane").border_title)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert app.inspector.current_layer == 0


async def test_ablate_toggles_and_reruns_with_the_intervention() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)
        shot = screen_text(app)
        assert "ablate L0 #13 all positions" in shot and "KL(clean‖intervened)" in shot
        await pilot.press("a")  # again: restored
        await settle(pilot)
        assert analyses(engine)[-1][1] == ()


async def test_scope_restricts_an_intervention_to_the_selected_token() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("left", "at", "a")
        await settle(pilot)
        position = app.inspector.position
        assert analyses(engine)[-1][1] == (FeatureAblation(0, app.inspector.feature, position),)
        assert "this token" in str(app.inspector.query_one("#header").render())


async def test_steer_is_entered_and_nudged() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("8", "enter")  # typing replaces the default strength
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureSteer(0, 13, 8.0),)
        await pilot.press("plus")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureSteer(0, 13, 9.0),)
        assert "steer L0 #13 +9 all positions" in screen_text(app)


async def test_a_steer_that_makes_the_output_nan_is_reported_and_rolled_back() -> None:
    engine = FakeEngine(fail_steer_above=50)
    app, _ = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        await pilot.press(*"40", "enter")  # a steer that works, kept
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureSteer(0, 13, 40.0),)
        await pilot.press(*"+" * 11)  # nudged past what the model takes: 51
        await settle(pilot)
        status = str(app.inspector.query_one("#status").render())
        assert "NaN or infinite" in status and "rolled back" in status
        assert app.is_running
        steers = [call[1] for call in analyses(engine)]
        assert steers[-1] == (FeatureSteer(0, 13, 50.0),)  # the run before the bad change, again
        assert app.inspector.interventions.active == (FeatureSteer(0, 13, 50.0),)
        assert app.inspector.analysis is not None and app.inspector.analysis.interventions == steers[-1]


async def test_knock_out_the_selected_head() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2", "j", "x")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (HeadKnockout(0, 1),)
        shot = screen_text(app)
        assert "knock out L0.H1" in shot and "prev-token" in shot  # head 0 of the fake attends to the previous token


async def test_interventions_list_toggle_and_clear() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a", "4")
        await settle(pilot)
        await pilot.press("space")
        await settle(pilot)
        assert analyses(engine)[-1][1] == ()
        assert "(off)" in screen_text(app)
        await pilot.press("space")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)
        await pilot.press("C")
        await settle(pilot)
        assert app.inspector.interventions.entries == () and analyses(engine)[-1][1] == ()


async def test_feature_card_opens_on_enter() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert ("card", (0, 13)) in engine.calls
        shot = screen_text(app)
        assert "argument name, repeated" in shot and "top contexts" in shot and "promotes" in shot
        await pilot.press("escape")
        await pilot.pause()
        assert "top contexts" not in screen_text(app)


async def test_help_lists_every_binding_with_its_id() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 70)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        shot = screen_text(app)
        for binding_id in ("ablate", "steer", "clamp", "knockout", "generate", "undo", "scope", "effects.toggle"):
            assert binding_id in shot, binding_id


async def test_generate_shows_clean_and_intervened_continuations() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a", "g")
        await settle(pilot)
        assert engine.calls[-1] == ("generate", (PROMPT, (FeatureAblation(0, 13),)))
        shot = screen_text(app)
        assert "·return·+" in shot and "·first·second" in shot


async def test_a_load_failure_is_shown_and_the_app_stays_up() -> None:
    error = NotFoundError("no model named 'nowhere' on disk or on the hub; check the name or pass a local directory")
    factory = FakeFactory(error=error, steps=("loading model nowhere",))
    app = LenstopApp(EngineSpec("nowhere"), factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        shot = screen_text(app)
        assert "no model named 'nowhere'" in shot and "press enter to load again" in shot
        assert app.is_running
        await pilot.press("q")  # types into the box (its text selected, so it replaces the model's name)
        assert app.screen.query_one("#loading-retry", Input).value == "q" and app.is_running
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running


async def test_session_saves_and_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket", "a", "w")
        await settle(pilot)
    doc = json.loads((tmp_path / "lenstop-session.json").read_text())
    assert doc["prompt"] == PROMPT and doc["selection"]["layer"] == 1
    restored = Session.load(tmp_path / "lenstop-session.json")
    engine = FakeEngine()
    again = LenstopApp(EngineSpec("fake"), session=restored, factory=FakeFactory(engine))
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert analyses(engine)[0] == (PROMPT, (FeatureAblation(1, restored.entries[0].intervention.feature),))
        assert again.inspector.current_layer == 1


async def test_ctrl_s_saves_an_svg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
    svgs = list(tmp_path.glob("lenstop-*.svg"))
    assert len(svgs) == 1 and "<svg" in svgs[0].read_text()[:500]


async def test_small_terminal_shows_one_pane_at_a_time() -> None:
    app, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.inspector.compact
        assert app.inspector.query_one("#features-pane").display and not app.inspector.query_one("#heads-pane").display
        assert "next" in str(app.inspector.query_one("#summary").render())
        await pilot.press("2")
        await pilot.pause()
        assert app.inspector.query_one("#heads-pane").display and not app.inspector.query_one("#features-pane").display


async def test_panes_zoom_and_resize() -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2", "z")
        await pilot.pause()
        heads = app.inspector.query_one("#heads-pane")
        assert app.inspector.maximized is heads and heads.size.width > 100
        await pilot.press("z")
        await pilot.pause()
        assert app.inspector.maximized is None and heads.size.width < 70
        left = app.inspector.query_one("#features-pane").size.width
        await pilot.press("greater_than_sign")
        await pilot.pause()
        assert app.inspector.query_one("#features-pane").size.width > left


def test_every_binding_has_an_id_for_remapping() -> None:
    from textual.binding import Binding

    from lenstop.tui.app import scopes
    from lenstop.tui.widgets.field import Field

    classes = {node for scope in scopes() for node in (*scope.always, *scope.focused)} - {Field}  # Textual's keys
    assert len(classes) >= 13
    bindings = [b for cls in classes for b in cls.__dict__.get("BINDINGS", ())]
    assert bindings and all(isinstance(b, Binding) and b.id for b in bindings)
    ids = [b.id for b in bindings]
    assert len(ids) == len(set(ids))


async def test_keymap_file_remaps_a_binding_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lenstop.tui import app as app_module

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"ablate": "A"}))
    monkeypatch.setattr(app_module, "KEYMAP_FILE", keys)
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert analyses(engine)[-1][1] == ()  # a no longer ablates
        await pilot.press("A")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)


async def test_retry_after_a_failed_load_keeps_the_loading_options() -> None:
    spec = EngineSpec("nowhere", device="cpu", dtype="bfloat16", labels=("1=x.json",))
    factory = FakeFactory(error=NotFoundError("no model named 'nowhere'"))
    app = LenstopApp(spec, factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert "load again" in screen_text(app)
        retry = app.screen.query_one("#loading-retry", Input)
        assert retry.value == "nowhere"
        retry.value = "also-nowhere --sae x"
        await pilot.press("enter")
        await settle(pilot)
        assert factory.specs[-1] == EngineSpec("also-nowhere", ("x",), "cpu", "bfloat16", labels=("1=x.json",))
        assert "also-nowhere" in screen_text(app)
        factory.error = None  # the next try loads
        retry.value = "fake --sae a --sae 'b c'"
        await pilot.press("enter")
        await settle(pilot)
        assert app.spec == EngineSpec("fake", ("a", "b c"), "cpu", "bfloat16", labels=("1=x.json",))
        assert app.screen is app.inspector and app.inspector.analysis is not None
        assert "lenstop fake" in str(app.inspector.query_one("#header", Static).render())


async def test_a_retry_that_cannot_be_read_says_why_and_waits() -> None:
    factory = FakeFactory(error=NotFoundError("no model named 'nowhere'"))
    app = LenstopApp(EngineSpec("nowhere"), factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.screen.query_one("#loading-retry", Input).value = "gpt2 --device cuda"
        await pilot.press("enter")
        await settle(pilot)
        assert "unexpected '--device'" in screen_text(app) and len(factory.specs) == 1


async def test_with_a_prompt_keys_navigate_from_the_start() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert str(app.inspector.query_one("#mode", Label).render()).strip() == "KEYS"
        await pilot.press("right_square_bracket", "h")  # these used to type themselves into the prompt
        await settle(pilot)
        assert app.inspector.prompt == PROMPT and app.inspector.current_layer == 1
        assert app.inspector.position == len(app.inspector.analysis.tokens) - 2
        await pilot.press("slash")
        assert str(app.inspector.query_one("#mode", Label).render()).strip() == "EDIT"
        await pilot.press("end", "!")
        assert app.inspector.prompt == PROMPT + "!"
        await pilot.press("escape", "l")
        assert str(app.inspector.query_one("#mode", Label).render()).strip() == "KEYS"
        assert app.inspector.prompt == PROMPT + "!"


async def test_without_a_prompt_the_prompt_has_the_focus() -> None:
    app, engine = make_app(prompt="")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.inspector.query_one("#prompt", Input).has_focus
        assert str(app.inspector.query_one("#mode", Label).render()).strip() == "EDIT"
        await pilot.press("a")
        assert app.inspector.prompt == "a"


async def test_the_lens_shown_belongs_to_the_analysis_shown() -> None:
    """A new analysis drops the last one's logit lens: if the new lens never comes, none is shown, not a stale one."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.inspector.lens is not None and app.inspector.lens.position == app.inspector.position

        def unavailable(*args: object, **kwargs: object) -> None:
            raise RuntimeError("no lens")

        engine.logit_lens = unavailable  # type: ignore[method-assign]
        await pilot.press("a")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)
        assert app.inspector.lens is None


async def test_superseded_analyses_and_generations_never_paint() -> None:
    """An analysis and a generation run at once, each superseded before it ends: only the latest of each is
    shown, and each with its own interventions (worker threads cannot be stopped, so their results are ignored)."""
    engine = FakeEngine(delay_s=1.0)  # the four presses take about 0.4 s here: each run must outlast them
    app, _ = make_app(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.inspector
        painted: list[tuple[object, ...]] = []
        generated: list[tuple[object, ...]] = []
        screen.watch(screen, "analysis", lambda a: painted.append(a.interventions), init=False)
        view = screen.query_one(ShiftView)
        show = view.show_generation

        def record(generation, busy=""):  # type: ignore[no-untyped-def]
            if generation is not None:
                generated.append(generation.interventions)
            show(generation, busy)

        view.show_generation = record  # type: ignore[method-assign]
        await pilot.press("g")  # a generation of the clean prompt...
        await pilot.press("1", "a")  # ...an ablation analysed beside it...
        await pilot.press("g")  # ...and a generation with the ablation, before either has finished
        await pilot.press("a")  # the ablation undone: its analysis is superseded too, and its generation
        await settle(pilot)
        await pilot.pause(1.0)
        await settle(pilot)
        assert [call[0] for call in engine.calls].count("generate") == 2
        assert generated == []  # each was for interventions that had changed by the time it came
        assert painted == [()] and screen.analysis is not None and screen.analysis.interventions == ()
        await pilot.press("g")
        await settle(pilot)
        await pilot.pause(1.0)
        await settle(pilot)
        assert generated == [()]


class _SmallMemoryEngine(FakeEngine):
    """Runs out of memory on prompts longer than `room` characters, as a GPU does on long prompts."""

    room = 60

    def analyse(self, prompt: str, *args: object, **kwargs: object):  # type: ignore[override]
        if len(prompt) > self.room:
            raise OutOfMemoryError(
                f"out of memory on cuda running a {len(prompt)}-token prompt (tried to allocate 2.50 GiB); "
                "shorten the prompt, load with --dtype bfloat16, or spread the model with --n-devices"
            )
        return super().analyse(prompt, *args, **kwargs)  # type: ignore[arg-type]


async def test_out_of_memory_is_a_status_line_and_a_shorter_prompt_works() -> None:
    app, engine = make_app(engine=_SmallMemoryEngine())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        shown = app.inspector.analysis
        assert shown is not None and shown.prompt == PROMPT
        await pilot.press("slash", *" and then some more text", "enter")
        await settle(pilot)
        await pilot.pause(0.3)
        await settle(pilot)
        assert app.is_running
        shot = screen_text(app)
        assert "out of memory on cuda running a" in shot and "tried to allocate 2.50 GiB" in shot
        assert "Traceback" not in shot
        await pilot.press("escape", "slash", *["backspace"] * 30, "enter")
        await settle(pilot)
        await pilot.pause(0.3)
        await settle(pilot)
        assert app.inspector.analysis is not None and app.inspector.analysis.prompt == app.inspector.prompt
        assert len(app.inspector.prompt) < _SmallMemoryEngine.room and "out of memory" not in screen_text(app)


async def test_whitespace_is_a_prompt_in_the_app_too() -> None:
    app, engine = make_app(prompt=r"\n\n    ")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert analyses(engine)[-1][0] == "\n\n    "
        assert app.inspector.analysis is not None and "type a prompt" not in screen_text(app)


def attention_reads(engine: FakeEngine) -> list[tuple[object, ...]]:
    return [args for name, args in engine.calls if name == "attention"]


async def test_the_layer_on_screen_has_its_attention_read_and_another_layer_is_fetched_when_selected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The analysis reads the attention of the layer on screen alone; another layer's is read apart once the
    layer keys rest (one read for a run of presses), and the analysis's own layer costs none."""
    from lenstop.tui.screens import inspector

    monkeypatch.setattr(inspector, "LAYER_DEBOUNCE_S", 1.0)  # two presses fall inside it on a loaded machine
    app, engine = make_app()
    arrived = threading.Event()
    read = engine.attention

    def held(*args: object) -> object:  # until the test has seen the pane wait for it
        arrived.wait(10)
        return read(*args)  # type: ignore[arg-type]

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert [att.layer for att in app.inspector.analysis.attention] == [0] and attention_reads(engine) == []
        assert "H0" in str(app.inspector.query_one("#heads").render())
        engine.attention = held  # type: ignore[method-assign]
        await pilot.press("right_square_bracket", "right_square_bracket")  # through 1 to 2 without resting on 1
        assert "reading attention…" in str(app.inspector.query_one("#heads").render())
        arrived.set()
        await settle(pilot)
        assert attention_reads(engine) == [(PROMPT, 2, ())]
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert attention_reads(engine) == [(PROMPT, 2, ()), (PROMPT, 1, ())]
        drawn = str(app.inspector.query_one("#heads").render())
        assert "H0" in drawn and "prev-token" in drawn
        assert "heads · L1" in str(app.inspector.query_one("#heads-pane").border_title)
        await pilot.press("left_square_bracket", "right_square_bracket")  # the analysis's layer, then 1 again
        await settle(pilot)
        assert len(attention_reads(engine)) == 2
        await pilot.press("a")  # a new analysis, at layer 1, reads layer 1 in its pass
        await settle(pilot)
        assert [att.layer for att in app.inspector.analysis.attention] == [1] and len(attention_reads(engine)) == 2


async def test_attention_that_cannot_be_read_is_said_in_its_pane_and_the_app_stays_up() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)

        tried = threading.Event()

        def out_of_memory(*args: object, **kwargs: object) -> None:
            tried.wait(10)  # until the test has seen the pane wait
            raise OutOfMemoryError("out of memory on cpu running a 12-token prompt; shorten the prompt")

        engine.attention = out_of_memory  # type: ignore[method-assign]
        tried.set()
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert "attention unavailable: out of memory on cpu" in str(app.inspector.query_one("#heads").render())
        await pilot.press("left_square_bracket")  # the analysis's layer is still drawn
        await settle(pilot)
        assert "H0" in str(app.inspector.query_one("#heads").render())
        tried.clear()
        await pilot.press("right_square_bracket")  # and the next try says it again, fresh
        assert "reading attention…" in str(app.inspector.query_one("#heads").render())
        tried.set()
        await settle(pilot)
        assert "attention unavailable" in str(app.inspector.query_one("#heads").render())


async def test_coming_back_to_a_layer_read_before_keeps_its_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a layer and straight back, before its read begins: the read for the layer passed by is
    dropped, and the pane keeps the attention of the layer it shows."""
    from lenstop.tui.screens import inspector

    monkeypatch.setattr(inspector, "LAYER_DEBOUNCE_S", 1.0)
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert attention_reads(engine) == [(PROMPT, 1, ())]
        await pilot.press("right_square_bracket", "left_square_bracket")  # to 2 and back to 1 within the wait
        await settle(pilot)
        assert attention_reads(engine) == [(PROMPT, 1, ())]
        assert app.inspector.current_layer == 1
        assert "H0" in str(app.inspector.query_one("#heads").render())


def feature_reads(engine: FakeEngine) -> list[tuple[object, ...]]:
    return [args for name, args in engine.calls if name == "features"]


def features_text(app: LenstopApp) -> str:
    table = app.inspector.query_one(FeatureTable)
    return "\n".join(" ".join(str(cell) for cell in table.get_row_at(row)) for row in range(table.row_count))


async def test_under_interventions_the_layer_on_screen_has_its_features_read_and_others_are_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A clean analysis reads every dictionary; an intervened one reads the layer on screen alone, and another
    layer's features are read apart once the layer keys rest, equal to what a whole analysis reads there."""
    from lenstop.tui.screens import inspector

    monkeypatch.setattr(inspector, "LAYER_DEBOUNCE_S", 1.0)
    app, engine = make_app()
    arrived = threading.Event()
    read = engine.features

    def held(*args: object, **kwargs: object) -> object:  # until the test has seen the pane wait for it
        arrived.wait(10)
        return read(*args, **kwargs)  # type: ignore[arg-type]

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert [lf.layer for lf in app.inspector.analysis.layers] == [0, 1, 2]
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert feature_reads(engine) == []  # the clean analysis read them all
        await pilot.press("a")
        await settle(pilot)
        ablation = app.inspector.analysis.interventions
        assert len(ablation) == 1 and [lf.layer for lf in app.inspector.analysis.layers] == [2]
        engine.features = held  # type: ignore[method-assign]
        await pilot.press("left_square_bracket", "left_square_bracket")  # through 1 to 0 without resting on 1
        assert "reading features…" in features_text(app)
        arrived.set()
        await settle(pilot)
        assert feature_reads(engine) == [(PROMPT, 0, ablation)]
        whole = engine.analyse(PROMPT, ablation, top_k=inspector.TOP_K).layer(0)
        shown = app.inspector._layer_features()
        assert shown is not None and whole is not None
        assert shown.top_ids.tolist() == whole.top_ids.tolist()
        top = whole.features(app.inspector.position)[0]
        assert str(top.id) in features_text(app) and "reading" not in features_text(app)
        await pilot.press("right_square_bracket", "right_square_bracket")  # past 1, to the analysis's own layer
        await settle(pilot)
        assert len(feature_reads(engine)) == 1 and "reading" not in features_text(app)
        await pilot.press("left_square_bracket")  # resting on 1 reads it
        await settle(pilot)
        assert feature_reads(engine)[1:] == [(PROMPT, 1, ablation)]


async def test_features_that_cannot_be_read_are_said_in_their_pane_and_the_app_stays_up() -> None:
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)

        def out_of_memory(*args: object, **kwargs: object) -> None:
            raise OutOfMemoryError("out of memory on cpu running a 12-token prompt; shorten the prompt")

        engine.features = out_of_memory  # type: ignore[method-assign]
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert "features unavailable: out of memory on cpu" in features_text(app)
        assert "H0" in str(app.inspector.query_one("#heads").render())  # the layer's attention was still read
        await pilot.press("left_square_bracket")  # the analysis's layer is still drawn
        await settle(pilot)
        assert "reading" not in features_text(app) and "unavailable" not in features_text(app)
        assert app.inspector._layer_features() is not None


async def burst(app: LenstopApp, keys: str) -> None:
    """Keys as one burst (a paste, tmux send-keys): all posted before the app handles the first."""
    from textual import events

    for character in keys:
        key = "backspace" if character == "\x7f" else character
        app.post_message(events.Key(key, character))


async def test_keys_in_one_burst_edit_a_dialog_in_the_order_they_came() -> None:
    """Textual's Input ran a backspace only once it had bubbled up to the app, after the keys behind it:
    `12⌫3` became `12` (Textual issue #6605). lenstop's fields run their own bindings in order."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        await burst(app, "12\x7f3")
        await pilot.pause(0.3)
        assert app.screen.query_one("#value-input", Input).value == "13"
        await pilot.press("escape", "slash", "end")
        await burst(app, "ab\x7fc")
        await pilot.pause(0.3)
        assert app.inspector.prompt == PROMPT + "ac"


async def test_the_selected_row_is_marked_without_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under NO_COLOR the cursor's shading is gone: a ▶ marks the selected feature, head and intervention."""
    from lenstop.tui.widgets.effects import InterventionTable

    monkeypatch.setenv("NO_COLOR", "1")
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.inspector.query_one(FeatureTable)
        assert marked_rows(table) == [0]
        await pilot.press("j", "j")
        assert marked_rows(table) == [2]
        await pilot.press("a", "k", "a")  # two ablations
        await settle(pilot)
        await pilot.press("4")
        interventions = app.inspector.query_one(InterventionTable)
        assert marked_rows(interventions) == [0]
        await pilot.press("j")
        assert marked_rows(interventions) == [1]
        await pilot.press("2", "j")
        heads = [line for line in str(app.inspector.query_one("#heads").render()).splitlines() if "H" in line[:4]]
        assert heads[1].startswith("▶H1") and not heads[0].startswith("▶")


async def test_labels_use_the_room_the_pane_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels were cut at 80 characters even in a zoomed pane, and at the pane's edge without a mark:
    each is cut to its room now, with … where it goes on."""
    import fake_engine

    label = "a label much longer than the eighty characters the features pane used to allow, " * 2
    monkeypatch.setitem(fake_engine.LABELS, 13, label.strip())
    app, _ = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("z")
        await settle(pilot)
        assert label.strip() in features_text(app)
        await pilot.press("z")
        await settle(pilot)
        first = features_text(app).splitlines()[0]
        assert label[:30] in first and first.endswith("…")


async def test_home_end_and_go_to_a_position() -> None:
    """Reaching the last of 105 tokens took 81 presses: Home, End and # go there at once."""
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        last = len(app.inspector.analysis.tokens) - 1
        await pilot.press("home")
        assert app.inspector.position == 0
        await pilot.press("end")
        assert app.inspector.position == last
        await pilot.press("2", "home")  # the heads pane has the focus now
        assert app.inspector.position == 0
        await pilot.press("1", "number_sign")
        await pilot.pause()
        await pilot.press("3", "enter")
        await pilot.pause()
        assert app.inspector.position == 3
        await pilot.press("number_sign")
        await pilot.pause()
        await pilot.press("minus", "2", "enter")
        await pilot.pause()
        assert app.inspector.position == last - 1
        await pilot.press("number_sign")
        await pilot.pause()
        await pilot.press("9", "9", "enter")
        await pilot.pause()
        assert "'99' is not a position of this prompt" in screen_text(app) and app.inspector.position == last - 1
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.inspector


async def test_w_asks_before_overwriting_a_file_that_is_not_this_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "lenstop-session.json"
    other.write_text("another session's file\n")
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        assert "is not this session" in screen_text(app) and "overwrite it?" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert other.read_text() == "another session's file\n" and "not saved" in screen_text(app)
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert json.loads(other.read_text())["prompt"] == PROMPT
        await pilot.press("a", "w")  # its own file now: saved without a question
        await settle(pilot)
        assert json.loads(other.read_text())["interventions"] and app.screen is app.inspector


async def test_a_session_loaded_from_a_file_saves_to_it_without_asking_and_keeps_the_scope(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    Session(model="fake", prompt=PROMPT).save(path)
    app = LenstopApp(
        EngineSpec("fake"), session=Session.load(path), session_path=path, factory=FakeFactory(FakeEngine())
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("at", "w")
        await settle(pilot)
        assert app.screen is app.inspector and json.loads(path.read_text())["scope"] == "token"
    again = LenstopApp(EngineSpec("fake"), session=Session.load(path), factory=FakeFactory(FakeEngine()))
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert not again.inspector.scope_all and "this token" in str(again.inspector.query_one("#header").render())


def footer_text(app: LenstopApp) -> str:
    from lenstop.tui.widgets.footer import KeyFooter

    return str(app.screen.query_one(KeyFooter).render())


async def keymapped_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str) -> tuple[LenstopApp, FakeEngine]:
    from lenstop.tui import app as app_module

    path = tmp_path / "keys.json"
    path.write_text(keys)
    monkeypatch.setattr(app_module, "KEYMAP_FILE", path)
    return make_app()


async def test_a_keymap_that_swaps_two_keys_is_applied_whole_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The footer dropped both bindings and ? showed the old keys; both follow the keymap now."""
    app, engine = await keymapped_app(tmp_path, monkeypatch, json.dumps({"ablate": "A", "generate": "a"}))
    async with app.run_test(size=(120, 70)) as pilot:
        await settle(pilot)
        assert " error:" not in str(app.inspector.query_one("#status").render())
        footer = footer_text(app)
        assert "A ablate" in footer and "a generate" in footer
        await pilot.press("a")
        await settle(pilot)
        assert engine.calls[-1][0] == "generate"
        await pilot.press("A")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)
        await pilot.press("question_mark")
        await pilot.pause()
        keys = {row.id: row.keys for row in app.screen.rows}  # type: ignore[attr-defined]
        assert keys["ablate"] == "A" and keys["generate"] == "a" and keys["token.previous"] == "h, ←"
        shown = screen_text(app)
        assert "A         ablate the feature" in shown and "a         continue the prompt" in shown


async def test_a_keymap_entry_that_would_take_a_key_away_or_is_no_key_is_refused_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"ablate": "q", "steer": "steer harder", "nope": "x", "interrupt": "x", "undo": "U"}
    app, engine = await keymapped_app(tmp_path, monkeypatch, json.dumps(keys))
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        status = str(app.inspector.query_one("#status").render())
        assert 'keys.json: refused "ablate" → "q" (q is quit\'s key)' in status
        assert '"steer harder" is not a key' in status and '"nope" (no binding has that id' in status
        assert '"interrupt" (ctrl+c always quits)' in status and "applied undo → U" in status
        await pilot.press("a")  # still ablates: the refused entry was not applied
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)
        await pilot.press("U")
        await settle(pilot)
        assert analyses(engine)[-1][1] == ()
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


@pytest.mark.parametrize(
    "name",
    ["latin_small_letter_a", "QUESTION_MARK", "digit_one", "right-to-left_override", "ctrl+latin_small_letter_x"],
)
async def test_a_keymap_entry_naming_a_key_as_textual_never_reports_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """`latin_small_letter_a` is the name of a's character, not the key Textual reports for it (`a`): bound as
    it was, the footer said it and pressing a did nothing."""
    app, engine = await keymapped_app(tmp_path, monkeypatch, json.dumps({"ablate": name}))
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        assert "is not a key" in str(app.inspector.query_one("#status").render())
        await pilot.press("a")  # the binding kept its key
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)


@pytest.mark.parametrize(("keys", "shown"), [({"token.previous": "b"}, "b/l"), ({"layer.next": "n"}, "[/n")])
async def test_moving_one_key_of_a_pair_shows_each_key_in_the_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, str], shown: str
) -> None:
    """The unmoved binding kept the pair's display: the footer said `b/←/→` and `[ ]/n`."""
    app, _ = await keymapped_app(tmp_path, monkeypatch, json.dumps(keys))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        assert f" {shown} " in footer_text(app)


async def test_a_keymap_note_stays_short_whatever_the_file_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = await keymapped_app(tmp_path, monkeypatch, json.dumps({"x" * 5000: "y" * 5000}))
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        status = str(app.inspector.query_one("#status").render())
        assert "no binding has that id" in status and len(status) < 200


async def test_a_keymap_file_that_is_not_json_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, engine = await keymapped_app(tmp_path, monkeypatch, '{"ablate": ')
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        status = str(app.inspector.query_one("#status").render())
        assert "keys.json not applied:" in status and "not valid JSON" in status
        await pilot.press("a")
        await settle(pilot)
        assert analyses(engine)[-1][1] == (FeatureAblation(0, 13),)


async def test_help_spells_keys_one_way_and_the_palette_says_what_each_does() -> None:
    """? mixed `l,right`, `plus,equals_sign` and `[ ]` beside `]`; the palette described bindings by their ids."""
    app, _ = make_app()
    async with app.run_test(size=(120, 70)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        keys = {row.id: row.keys for row in app.screen.rows}  # type: ignore[attr-defined]
        assert keys["token.next"] == "l, →" and keys["steer.more"] == "+, =" and keys["effects.remove"] == "d, del"
        assert keys["layer.previous"] == "[" and keys["layer.next"] == "]" and keys["quit"] == "q"
        assert all("," not in k or ", " in k for k in keys.values()) and not any("_" in k for k in keys.values())
        commands = list(app.inspector.system_commands())
        assert commands and not any(c.help.startswith("lenstop:") for c in commands)
        ablate = next(c for c in commands if c.title.startswith("Ablate"))
        assert ablate.title == "Ablate the feature (a)" and "zero the selected feature" in ablate.help


def shifts_text_on_screen(app: LenstopApp) -> str:
    return str(app.inspector.query_one(ShiftView).render())


async def test_a_continuation_goes_when_the_interventions_or_the_prompt_change() -> None:
    """After g then C the pane said 'no interventions active' above the old intervened continuation."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a", "g")
        await settle(pilot)
        assert "intervened" in shifts_text_on_screen(app)
        await pilot.press("4", "C")
        await settle(pilot)
        shown = shifts_text_on_screen(app)
        assert "no interventions active" in shown and not any(
            line.startswith(("clean ", "intervened ")) for line in shown.splitlines()
        )
        await pilot.press("g")
        await settle(pilot)
        assert "clean" in shifts_text_on_screen(app)
        await pilot.press("slash", *" x", "enter")
        await settle(pilot)
        assert app.inspector.analysis.prompt == PROMPT + " x" and "clean      " not in shifts_text_on_screen(app)


async def test_shortening_the_prompt_switches_off_what_is_pinned_beyond_it_and_says_so() -> None:
    """A head knockout pinned at position 15, and a prompt cut to three tokens: the analysis failed and the panes
    kept the old prompt's tokens under the new text. The knockout is switched off now, and the prompt analysed."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("left", "left", "left", "at", "2", "x")
        await settle(pilot)
        knockout = HeadKnockout(0, 0, 15)
        assert app.inspector.interventions.active == (knockout,)
        await pilot.press("slash", "ctrl+u", *"def f", "enter")
        await settle(pilot)
        assert app.inspector.analysis.prompt == "def f" and app.inspector.analysis.tokens == ("<bos>", "def", " ", "f")
        assert app.inspector.interventions.entries[0].enabled is False
        status = str(app.inspector.query_one("#status").render())
        assert "switched off 1 intervention beyond the prompt's 4 tokens: knock out L0.H0 at pos 15" in status
        assert "stale" not in str(app.inspector.query_one("#tokens-pane").border_title)
        await pilot.press("slash", "ctrl+u", *PROMPT, "enter", "u")  # long enough again: u brings it back
        await settle(pilot)
        assert app.inspector.interventions.active == (knockout,) and app.inspector.analysis.interventions == (knockout,)


async def test_an_answer_about_a_prompt_no_longer_in_the_box_changes_nothing() -> None:
    """The prompt cut short and typed long again while the short one's analysis ran: the answer that a pinned
    knockout is beyond the short prompt's end came before the long prompt's analysis was asked for (the box
    waits for typing to rest), and switched off a knockout that fits the prompt in the box."""
    app, engine = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("left", "left", "left", "at", "2", "x")
        await settle(pilot)
        knockout = HeadKnockout(0, 0, 15)
        screen = app.inspector
        asked_for_the_short_prompt = screen.request
        screen.prompt = PROMPT + " "  # typed on: the next analysis waits for the typing to rest
        screen.post_message(PositionsOutside(asked_for_the_short_prompt, (knockout,), 4))
        await pilot.pause()
        assert screen.interventions.active == (knockout,)
        await pilot.pause(0.5)  # the typing rests: the long prompt's analysis
        await settle(pilot)
        assert screen.analysis.prompt == PROMPT + " " and screen.analysis.interventions == (knockout,)
        assert "switched off" not in str(screen.query_one("#status").render())


async def test_a_failed_analysis_marks_the_panes_stale_and_says_it_whole() -> None:
    app, engine = make_app(engine=_SmallMemoryEngine())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *" and then some more text", "enter")
        await settle(pilot)
        status = app.inspector.query_one("#status")
        text = str(status.render())
        assert "tried to allocate 2.50 GiB" in text and "the panes show the last analysis that worked" in text
        assert status.size.height > 1  # wrapped where it is read, not cut at the edge
        assert str(app.inspector.query_one("#tokens-pane").border_title).startswith("stale · tokens")
        assert str(app.inspector.query_one("#features-pane").border_title).startswith("stale · features")
        await pilot.press("escape", "slash", "ctrl+u", *"def f", "enter")
        await settle(pilot)
        assert not str(app.inspector.query_one("#tokens-pane").border_title).startswith("stale")
        assert app.inspector.query_one("#status").size.height == 1
        await pilot.press("slash", "ctrl+u", "enter")  # no prompt at all: the panes show the one there was
        await settle(pilot)
        assert str(app.inspector.query_one("#tokens-pane").border_title).startswith("stale · tokens")
