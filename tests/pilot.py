"""What the app's tests share: an app on a fake engine, waiting for it to settle,
and reading the screen as a person would."""

from __future__ import annotations

import io

from rich.console import Console
from rich.segment import Segment
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

from fake_engine import FakeEngine, FakeFactory

PROMPT = "def add(first, second): return first + second"


def make_app(
    engine: FakeEngine | None = None, prompt: str = PROMPT, **options: object
) -> tuple[LenstopApp, FakeEngine]:
    """The app on a fake engine, opened on `prompt`; `options` go to LenstopApp."""
    engine = engine or FakeEngine()
    session = Session(model="fake", prompt=prompt)
    app = LenstopApp(EngineSpec("fake"), session=session, factory=FakeFactory(engine), **options)  # type: ignore[arg-type]
    return app, engine


async def settle(pilot: Pilot[object]) -> None:
    """Wait until the workers are done and the screen has caught up; stop cursors blinking,
    so that snapshots do not depend on the clock."""
    for _ in range(3):
        for screen in pilot.app.screen_stack:
            for field in screen.query(Input):
                field.cursor_blink = False
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def answer(pilot: Pilot[object], app: LenstopApp, key: str, text: str) -> None:
    """Press `key`, type `text` into the dialog it opens, and wait for what it starts."""
    await pilot.press(key)
    await pilot.pause()
    app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await settle(pilot)


def screen_text(app: LenstopApp) -> str:
    """The screen as plain text, as a person reads it."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def screen_segments(app: LenstopApp) -> list[Segment]:
    """What the app would send the terminal for a whole frame, as Rich segments: text, and Rich's own
    control segments (cursor moves, styles)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="256")
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return list(console.render(update))


def analyses(engine: FakeEngine) -> list[tuple[object, ...]]:
    return [args for name, args in engine.calls if name == "analyse"]


def marked_rows(table: DataTable[object]) -> list[int]:
    """The rows of a table whose first cell starts with the selection mark."""
    return [row for row in range(table.row_count) if str(table.get_cell_at(Coordinate(row, 0))).startswith("▶")]
