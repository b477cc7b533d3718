"""Nothing from a file reaches the terminal raw, in the app, and no input crashes it.

The app is opened on an engine whose every string (labels, tokens, cards, names, the
continuation) is an attack or a random string from any Unicode plane, and walked through
its panes and screens; every frame it would send is read segment by segment. What a user
types (markup as a steer value, a target, a corrupted prompt) is shown as typed. And every
module of tui/ draws text through lenstop.tui.safe, never through Textual's raw widgets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from textual.widgets import Input

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import NotFoundError
from lenstop.tui.app import LenstopApp
from lenstop.tui.safe import SafeInput
from lenstop.tui.screens.circuit import CircuitScreen, ContributorTable
from lenstop.tui.screens.feature_card import CardScreen
from lenstop.tui.screens.value import TextScreen, ValueScreen
from lenstop.tui.session import Session

from fake_engine import FakeFactory
from hostile import ATTACKS, CLIPBOARD, HostileEngine, hostile_text, nets_must_not_fire, unsafe_segments
from pilot import answer, make_app, screen_segments, screen_text, settle

TUI = Path(__file__).resolve().parent.parent / "tui"


@pytest.fixture(autouse=True)
def _builders_sanitise(monkeypatch: pytest.MonkeyPatch) -> None:
    nets_must_not_fire(monkeypatch)


PROMPT = f"def add(first, second): {CLIPBOARD} return first [/] + second"


async def _frame_is_safe(pilot, app: LenstopApp, where: str) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)
    assert app.is_running, f"the app ended at {where}"
    assert unsafe_segments(screen_segments(app)) == [], where


async def _walk(app: LenstopApp, size: tuple[int, int]) -> None:
    """Every pane and screen that draws what the engine hands over, one frame read after each step."""
    async with app.run_test(size=size) as pilot:
        await _frame_is_safe(pilot, app, "the inspector")
        for keys, where in (
            (("left", "left", "right_square_bracket"), "another token and layer"),
            (("j", "enter"), "a feature's card"),
            (("escape", "a", "g"), "an ablation and a continuation"),
            (("4",), "the effects pane"),
            (("2", "j"), "the heads pane"),
            (("t",), "the circuit view"),
            (("enter",), "a node followed"),
        ):
            await pilot.press(*keys)
            await _frame_is_safe(pilot, app, where)
        circuit = app.screen
        assert isinstance(circuit, CircuitScreen)
        await pilot.press("backspace", "f")  # features and error nodes
        await _frame_is_safe(pilot, app, "the features filter")
        table = circuit.query_one(ContributorTable)
        table.move_cursor(row=next(i for i, s in enumerate(table.scores) if s.node.kind == "feature"))
        await pilot.press("o")
        await _frame_is_safe(pilot, app, "a card from the circuit view")
        assert isinstance(app.screen, CardScreen)
        await pilot.press("escape", "p")
        await _frame_is_safe(pilot, app, "the corrupted prompt's box")
        assert isinstance(app.screen, TextScreen)
        await pilot.press("escape")
        await answer(pilot, app, "p", PROMPT.replace("first", "other"))
        await _frame_is_safe(pilot, app, "the patching grids")
        assert app.screen is circuit and circuit.patching is not None


# Each example walks the whole app (seconds): a few, and no shrinking, whose minutes a failure's example does not need.
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.generate])
@given(words=st.lists(hostile_text, min_size=1, max_size=5))
async def test_every_pane_draws_hostile_strings_as_text(words: list[str]) -> None:
    app, _ = make_app(HostileEngine(words=words), prompt=PROMPT)
    await _walk(app, (120, 40))


async def test_errors_from_a_failing_engine_are_shown_visibly_in_every_pane() -> None:
    """An engine whose every call but the analysis fails, its message naming files and values: the heads and
    features panes, the continuation, the card, the circuit view and the patching say why, as text."""
    app, _ = make_app(HostileEngine(words=ATTACKS, failing=True), prompt=PROMPT)
    async with app.run_test(size=(120, 40)) as pilot:
        await _frame_is_safe(pilot, app, "the inspector")
        for keys, where in (
            (("a", "right_square_bracket"), "another layer's features and attention, under an ablation"),
            (("g",), "a failed continuation"),
            (("left_square_bracket", "enter"), "a failed card"),
            (("t",), "a failed attribution and circuit"),
        ):
            await pilot.press(*keys)
            await _frame_is_safe(pilot, app, where)
        assert isinstance(app.screen, CircuitScreen)
        assert "attribution failed on" in screen_text(app)
        await answer(pilot, app, "p", PROMPT.replace("first", "other"))
        await _frame_is_safe(pilot, app, "a failed patching")


async def test_the_attacks_are_shown_visibly_in_the_compact_layout_too() -> None:
    app, _ = make_app(HostileEngine(words=ATTACKS), prompt=PROMPT)
    await _walk(app, (80, 24))


async def test_a_label_is_shown_as_its_characters() -> None:
    app, _ = make_app(HostileEngine(words=[CLIPBOARD, "[/] [link=file:///etc/passwd]x[/link]"]), prompt=PROMPT)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "␛]52;c;" in text and "[link=file:///etc/passwd]x[/link]" in text


async def test_markup_typed_by_the_user_is_a_value_not_a_crash() -> None:
    """`[/]` typed as a steer value, a target, a wrong token and a corrupted prompt crashed the app."""
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, ValueScreen)
        app.screen.query_one(Input).value = "[/]"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ValueScreen) and "'[/]' is not a number" in screen_text(app)
        await pilot.press("escape", "t")
        await settle(pilot)
        for key in ("t", "w", "p"):
            await answer(pilot, app, key, "[/][bold]x")
            assert app.is_running and isinstance(app.screen, CircuitScreen)
        assert "[/][bold]x" in screen_text(app)  # the corrupted prompt, in the settings line
        assert unsafe_segments(screen_segments(app)) == []


async def test_a_session_and_a_model_path_from_a_stranger_are_shown_not_obeyed() -> None:
    """A session file's prompt and model path reach the loading screen, its retry box and the header."""
    model = f"/models/{CLIPBOARD}[/]x"
    session = Session(model=model, prompt=PROMPT)
    factory = FakeFactory(error=NotFoundError(f"no model directory at {model}; pass a Hugging Face directory"))
    app = LenstopApp(EngineSpec(model), session=session, factory=factory)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.is_running
        assert unsafe_segments(screen_segments(app)) == []
        text = screen_text(app)
        assert "/models/␛]52;c;" in text and "[/]x" in text  # the title, the error and the retry box


async def test_a_card_from_a_stranger_is_shown_not_obeyed() -> None:
    app, _ = make_app(HostileEngine(words=ATTACKS), prompt=PROMPT)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CardScreen)
        assert unsafe_segments(screen_segments(app)) == []
        assert any(word.replace("\x1b", "␛") in screen_text(app) for word in ATTACKS[:3])


async def test_a_value_being_edited_keeps_one_cell_for_each_character() -> None:
    """Textual drew BEL, BS, VT, FF and CR as nothing (the cursor then stood a cell off for each) and ESC raw."""
    app, _ = make_app(prompt="a\x07b\x1b]0;x\x07c\rd")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        field = app.inspector.query_one(SafeInput)
        assert field.value == "a\x07b\x1b]0;x\x07c\rd"  # what the analysis reads: the value as it was
        assert field._value.plain == "a␇b␛]0;x␇c␍d"
        line = "".join(s.text for s in field.render_line(0))
        assert line.startswith("a␇b␛]0;x␇c␍d") and unsafe_segments(screen_segments(app)) == []


async def test_the_palettes_screenshot_says_where_it_saved_as_text(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Textual's own Screenshot command said the folder as markup: a link or a style in its name was obeyed."""
    folder = tmp_path / "runs [link=x]y [bold]z"
    folder.mkdir()
    monkeypatch.chdir(folder)
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        (shot,) = [c for c in app.get_system_commands(app.inspector) if c.title == "Screenshot"]
        shot.callback()
        await settle(pilot)
        assert app.is_running and "runs [link=x]y [bold]z" in screen_text(app).replace("\n", "")
        assert len(list(folder.glob("lenstop-*.svg"))) == 1


async def test_text_utf8_cannot_hold_is_saved_escaped_not_a_crash(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A lone surrogate (a session file's `\\ud800` escape) in the prompt, or in a label of an exported
    graph, ended the app with a UnicodeEncodeError on w and x; it is written as the JSON escape it came as."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "session.json"
    path.write_text('{"version": 1, "model": "fake", "prompt": "def f\\ud800(x):"}')
    app = LenstopApp(
        EngineSpec("fake"),
        session=Session.load(path),
        session_path=path,
        factory=FakeFactory(HostileEngine(words=["\ud800 half a pair"])),
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert app.is_running and Session.load(path).prompt == "def f\ud800(x):"
        app.inspector.prompt = "def add(first, second): return first"
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        assert app.is_running and "saved lenstop-circuit-" in screen_text(app)


# ---------------------------------------------------------------- every module of tui/ keeps to it
RAW_WIDGETS = {"Static", "Label", "Input"}  # they read strings as markup and pass control characters on


def _modules() -> list[Path]:
    return [p for p in sorted(TUI.rglob("*.py")) if p.name != "safe.py"]


def test_no_module_of_the_app_builds_a_raw_text_widget() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RAW_WIDGETS:
                found.append(f"{path.relative_to(TUI)}:{node.lineno} {node.func.id}(...)")
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    name = base.value.id if isinstance(base, ast.Subscript) and isinstance(base.value, ast.Name) else ""
                    name = base.id if isinstance(base, ast.Name) else name
                    if name == "DataTable":
                        found.append(f"{path.relative_to(TUI)}:{node.lineno} class {node.name}(DataTable)")
    assert found == [], "use lenstop.tui.safe's SafeStatic, SafeLabel, SafeInput and SafeTable:\n" + "\n".join(found)


def test_widgets_that_draw_their_own_text_draw_it_through_the_net() -> None:
    """A `render()` of its own bypasses the safe widgets (the heads pane drew an error's words raw): such a
    widget is a SafeWidget, which draws what its `draw()` builds through `safe_text`."""
    found = [
        f"{path.relative_to(TUI)}:{node.lineno} {cls.name}.render"
        for path in _modules()
        for cls in ast.walk(ast.parse(path.read_text()))
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name in ("render", "render_line", "render_lines")
    ]
    assert found == [], "subclass lenstop.tui.safe.SafeWidget and build the text in draw():\n" + "\n".join(found)


def test_every_border_title_is_set_through_title() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and target.attr in ("border_title", "border_subtitle"):
                        value = node.value
                        through_title = (
                            isinstance(value, ast.Call)
                            and isinstance(value.func, ast.Name)
                            and value.func.id == "title"
                        )
                        if not through_title:
                            found.append(f"{path.relative_to(TUI)}:{node.lineno}")
    assert found == [], "a border title reads strings as markup: set it to title(...)\n" + "\n".join(found)
