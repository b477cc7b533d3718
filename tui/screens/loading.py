"""The loading screen: the heavy imports and the model load run in a worker while
this modal shows each step over the (empty) inspector; a failure stays on screen
with a box to edit the model and dictionaries and load again.

It dismisses itself with the `EngineLoaded` message, which carries the engine,
its facts (read in the worker) and the spec that was loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, LoadingIndicator

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import LenstopError
from lenstop.models.protocol import EngineProtocol, Progress
from lenstop.tui.format import plain
from lenstop.tui.messages import EngineLoaded, LoadFailed, LoadProgressed
from lenstop.tui.safe import SafeLabel
from lenstop.tui.widgets.field import Field
from lenstop.tui.work import EngineWork, Job, Kind

# How the app turns a spec into an engine: `EngineSpec.load` for real, a fake in the app's tests.
RETRY = "edit and press enter to load again, or ctrl+c to quit"  # q would type itself into the box

EngineFactory = Callable[[EngineSpec, Progress], EngineProtocol]


def load_engine(spec: EngineSpec, progress: Progress) -> EngineProtocol:
    return spec.load(progress)


class LoadingScreen(ModalScreen[EngineLoaded]):
    BINDINGS = [Binding("q", "app.quit", "quit", id="loading.quit")]  # while loading; ctrl+c quits anywhere
    DEFAULT_CSS = """
    LoadingScreen { align: center middle; }
    LoadingScreen > Vertical {
        width: 70; height: auto; border: round $accent; padding: 1 2; background: $surface;
    }
    LoadingScreen LoadingIndicator { height: 1; }
    LoadingScreen #loading-step { width: 100%; }
    LoadingScreen #loading-step.-error { color: $error; text-style: bold; }
    LoadingScreen #loading-retry { display: none; }
    LoadingScreen.-failed LoadingIndicator { display: none; }
    LoadingScreen.-failed #loading-retry { display: block; }
    """

    def __init__(self, spec: EngineSpec, factory: EngineFactory = load_engine) -> None:
        super().__init__()
        self.spec = spec
        self.factory = factory
        self.work = EngineWork(self)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield SafeLabel(f"lenstop · loading {self.spec.model}", id="loading-title")
            yield LoadingIndicator()
            yield SafeLabel("starting", id="loading-step")
            yield Field(value=self.spec.command_line(), id="loading-retry")

    def on_mount(self) -> None:
        self.call_after_refresh(self._load, self.spec)  # the first frame first: the imports hold the GIL for seconds

    def _load(self, spec: EngineSpec) -> None:
        factory = self.factory

        def load(job: Job) -> EngineLoaded:
            tic = time.monotonic()
            engine = factory(spec, lambda step: job.post(LoadProgressed(step)))
            return EngineLoaded(engine, engine.info(), spec, time.monotonic() - tic)

        self.work.start(Kind.LOAD, load, LoadFailed)

    def on_load_progressed(self, message: LoadProgressed) -> None:
        self.query_one("#loading-step", Label).update(message.step + "…")

    def on_load_failed(self, message: LoadFailed) -> None:
        self._show_error(message.failure.text)
        self.query_one("#loading-retry", Input).focus()

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        self.dismiss(message)

    @on(Input.Submitted, "#loading-retry")
    def _retry(self, event: Input.Submitted) -> None:
        try:
            self.spec = self.spec.retarget(event.value)
        except LenstopError as err:
            self._show_error(str(err))
            return
        self.remove_class("-failed")
        self.query_one("#loading-step", Label).remove_class("-error")
        self.query_one("#loading-title", Label).update(f"lenstop · loading {self.spec.model}")
        self._load(self.spec)

    def _show_error(self, error: str) -> None:
        self.add_class("-failed")
        step = self.query_one("#loading-step", Label)
        step.update(plain(error) + Text("\n" + RETRY))
        step.add_class("-error")
