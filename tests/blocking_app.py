"""The app on a fake engine that never finishes one phase (load, analyse or generate), run as the CLI runs it.

tests/test_interrupt.py starts this in tmux and presses ctrl+c while the phase hangs:
the process must end at once, not when the work would have finished."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from lenstop.commands.cli import run_app
from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: the tests' folder is not on the path
from fake_engine import FakeEngine, FakeFactory  # noqa: E402 - importable only once the line above ran

HANG_S = 600


class HangingEngine(FakeEngine):
    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def analyse(self, *args: Any, **kwargs: Any) -> Any:
        if self.phase == "analyse":
            time.sleep(HANG_S)
        return super().analyse(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.phase == "generate":
            time.sleep(HANG_S)
        return super().generate(*args, **kwargs)


class HangingFactory(FakeFactory):
    def __call__(self, spec: EngineSpec, progress: Any) -> Any:
        if self.engine is not None and getattr(self.engine, "phase", None) == "load":
            progress("loading model fake")
            time.sleep(HANG_S)
        return super().__call__(spec, progress)


if __name__ == "__main__":
    engine = HangingEngine(sys.argv[1])
    app = LenstopApp(
        EngineSpec("fake"), session=Session(model="fake", prompt="def add(a, b):"), factory=HangingFactory(engine)
    )
    sys.exit(run_app(app))
