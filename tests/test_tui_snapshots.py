"""SVG snapshots of the inspector's main states, against the fake engine so the
pictures do not depend on floating point: fixed size, no animation, no timings.
Update with `pytest tests/test_tui_snapshots.py --snapshot-update` after a deliberate change."""

from __future__ import annotations

import threading
from collections.abc import Callable

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import NotFoundError
from lenstop.models.protocol import EngineProtocol, Progress
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

from fake_engine import FakeEngine, FakeFactory
from pilot import PROMPT, settle


def app_with(factory: Callable[[EngineSpec, Progress], EngineProtocol]) -> LenstopApp:
    app = LenstopApp(
        EngineSpec("fake"), session=Session(model="fake", prompt=PROMPT), factory=factory, show_timings=False
    )
    app.animation_level = "none"  # the loading indicator draws a static frame
    return app


class TestSnapshots:
    def test_loading(self, snap_compare) -> None:
        gate = threading.Event()

        def slow(spec: EngineSpec, progress: Progress) -> EngineProtocol:
            progress("loading dictionary 3/12 (blocks.2.hook_resid_pre)")
            gate.wait(10)
            return FakeEngine()

        app = app_with(slow)

        async def run_before(pilot) -> None:
            for field in pilot.app.screen.query("Input"):
                field.cursor_blink = False
            await pilot.pause(0.2)

        try:
            assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)
        finally:
            gate.set()

    def test_inspector(self, snap_compare) -> None:
        assert snap_compare(app_with(FakeFactory()), terminal_size=(120, 40), run_before=settle)

    def test_inspector_at_80x24(self, snap_compare) -> None:
        assert snap_compare(app_with(FakeFactory()), terminal_size=(80, 24), run_before=settle)

    def test_feature_card(self, snap_compare) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("enter")
            await settle(pilot)

        assert snap_compare(app_with(FakeFactory()), terminal_size=(120, 40), run_before=run_before)

    def test_active_steer(self, snap_compare) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("s")
            await pilot.pause()
            await pilot.press("6", "enter")
            await settle(pilot)

        assert snap_compare(app_with(FakeFactory()), terminal_size=(120, 40), run_before=run_before)

    def test_error(self, snap_compare) -> None:
        error = NotFoundError("no model named 'gtp2' on disk or on the hub; check the name or pass a local directory")
        assert snap_compare(app_with(FakeFactory(error=error)), terminal_size=(100, 30), run_before=settle)

    def test_circuit_view(self, snap_compare) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("t")
            await settle(pilot)

        assert snap_compare(app_with(FakeFactory()), terminal_size=(120, 40), run_before=run_before)

    def test_circuit_view_at_80x24(self, snap_compare) -> None:
        async def run_before(pilot) -> None:
            await settle(pilot)
            await pilot.press("t")
            await settle(pilot)

        assert snap_compare(app_with(FakeFactory()), terminal_size=(80, 24), run_before=run_before)
