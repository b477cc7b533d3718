"""The lenstop app: a thin `App` that shows the inspector and, over it, the
loading screen until the engine is ready. The screens do the work:
`screens/loading.py` loads the engine in a worker, `screens/inspector.py` is
the inspector itself. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import ExitCode
from lenstop.models.files import write_atomically
from lenstop.tui.keymap import KEYMAP_FILE, Scope, load_keymap
from lenstop.tui.messages import EngineLoaded
from lenstop.tui.screens.circuit import CircuitScreen
from lenstop.tui.screens.feature_card import CardScreen
from lenstop.tui.screens.graph import GraphScreen
from lenstop.tui.screens.help import HelpScreen
from lenstop.tui.screens.inspector import InspectorScreen
from lenstop.tui.screens.loading import EngineFactory, LoadingScreen, load_engine
from lenstop.tui.screens.value import ConfirmScreen, PositionScreen, TextScreen, ValueScreen
from lenstop.tui.session import Session
from lenstop.tui.widgets.contributors import ContributorTable
from lenstop.tui.widgets.effects import InterventionTable
from lenstop.tui.widgets.features import FeatureTable
from lenstop.tui.widgets.field import Field
from lenstop.tui.widgets.heads import HeadsView

T = TypeVar("T")
BACKGROUND_WORK = {"head-roles"}  # worker groups doing what nobody asked for: quitting during them abandons nothing
SETTLE_S = 0.5  # how long quitting waits for running work (a cache write, say) before abandoning it


class WorkThreads(ThreadPoolExecutor):
    """The threads the app's workers run on, tracked, so that quitting can tell whether work is still running.

    A thread cannot be stopped, and both asyncio and Python's exit wait for it: without this,
    ctrl+c during a minutes-long load would leave the terminal hanging until the load ended.
    """

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="lenstop-worker")
        self._pending: set[Future[Any]] = set()
        self._guard = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        with self._guard:
            self._pending.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[Any]) -> None:
        with self._guard:
            self._pending.discard(future)

    @property
    def busy(self) -> bool:
        """A load, analysis or generation is running (or queued) that nobody has waited for."""
        with self._guard:
            return bool(self._pending)

    def settle(self, timeout_s: float) -> bool:
        """Give what is running `timeout_s` to end (a cache being written, say); True if nothing is left."""
        with self._guard:
            pending = list(self._pending)
        return not wait(pending, timeout=timeout_s).not_done


class LenstopApp(App[None]):
    TITLE = "lenstop"
    CSS_PATH = "lenstop.tcss"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("ctrl+c", "interrupt", "quit", show=False, priority=True, id="interrupt"),
        Binding("ctrl+s", "save_svg", "save SVG", show=False, id="screenshot"),
    ]

    def __init__(
        self,
        spec: EngineSpec,
        *,
        session: Session | None = None,
        session_path: Path | None = None,
        factory: EngineFactory = load_engine,
        show_timings: bool = True,
    ) -> None:
        """`spec` says what to load and `factory` loads it (tests pass a fake); `session` is what to show first."""
        super().__init__()
        self.spec = spec
        self.factory = factory
        session = session or Session(model=spec.model, saes=list(spec.saes), labels=list(spec.labels))
        self.inspector = InspectorScreen(session, spec, session_path=session_path, show_timings=show_timings)
        self.work_threads = WorkThreads()
        self._load_keymap()

    def run_in_terminal(self) -> int:
        """Run until the user quits, and return the exit status; return at once even if work is still running.

        The workers' threads are `work_threads`, not asyncio's default executor, whose shutdown
        would wait for them. When `work_threads.busy` afterwards, the caller ends the process
        with os._exit: the terminal is restored and nothing is left that anyone will see.
        """
        loop = asyncio.new_event_loop()
        loop.set_default_executor(self.work_threads)
        # A signal from outside (kill, or ctrl+c where the terminal is not raw) ends the app as `q` does,
        # so the terminal is restored; left to Python, SIGINT would stop the loop where it stands.
        for number, code in ((signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, 128 + signal.SIGTERM)):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not Unix, or not main thread
                loop.add_signal_handler(number, self.exit, None, int(code))
        try:
            self.run(loop=loop)
        finally:
            if self.work_threads.settle(SETTLE_S):
                loop.run_until_complete(loop.shutdown_asyncgens())
                self.work_threads.shutdown()
                loop.close()
        return self.return_code or 0

    def action_interrupt(self) -> None:
        """ctrl+c quits at once, mid-load and mid-generation included; status 130 says work was abandoned."""
        asked_for = [w for w in self.workers if not w.is_finished and w.group not in BACKGROUND_WORK]
        self.exit(return_code=int(ExitCode.INTERRUPTED) if asked_for else 0)

    def get_default_screen(self) -> Screen[None]:
        return self.inspector

    def on_mount(self) -> None:
        self.push_screen(LoadingScreen(self.spec, self.factory), callback=self._loaded)

    def _loaded(self, loaded: EngineLoaded | None) -> None:
        if loaded is not None:
            self.spec = loaded.spec  # a retry may have changed the model
            self.inspector.attach(loaded)

    def action_save_svg(self) -> None:
        path = Path(time.strftime("lenstop-%Y%m%d-%H%M%S.svg"))
        try:
            write_atomically(path, self.export_screenshot())
        except OSError as err:
            self.inspector.status(f"cannot write {path}: {err.strerror or err}", error=True)
            return
        self.inspector.status(f"saved {path.resolve()}")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        # Textual's own Screenshot says where it saved as markup with the folder's path in it ([ in a folder's
        # name broke it); ctrl+s saves the screen and says so as text.
        yield from (c for c in super().get_system_commands(screen) if c.title != "Screenshot")
        yield SystemCommand("Screenshot", "Save the screen as an SVG in this folder (ctrl+s)", self.action_save_svg)
        if screen is self.inspector:
            yield from self.inspector.system_commands()

    def _load_keymap(self) -> None:
        """Remap keys by binding id from ~/.config/lenstop/keys.json, e.g. {"ablate": "A"}: what can be applied
        is (tui/keymap.py checks each entry), and the inspector says once what was refused."""
        self.keymap = load_keymap(scopes(), KEYMAP_FILE)
        if self.keymap.keys:
            self.set_keymap(self.keymap.keys)
        self.inspector.keymap = self.keymap


def scopes() -> list[Scope]:
    """Which bindings are live together, screen by screen, for the keymap's check (tui/keymap.py)."""
    always = (LenstopApp,)
    return [
        Scope((*always, InspectorScreen), (FeatureTable, HeadsView, InterventionTable)),
        Scope((*always, CircuitScreen), (ContributorTable,)),
        Scope((*always, GraphScreen)),
        *(Scope((*always, modal), (Field,)) for modal in (ValueScreen, PositionScreen, TextScreen, LoadingScreen)),
        *(Scope((*always, modal)) for modal in (ConfirmScreen, HelpScreen, CardScreen)),
    ]
