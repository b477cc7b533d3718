"""The lenstop app: a thin `App` that shows the inspector and, over it, the
loading screen until the engine is ready. The screens do the work:
`screens/loading.py` loads the engine in a worker, `screens/inspector.py` is
the inspector itself. Nothing here imports torch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.files import write_atomically
from lenstop.tui.messages import EngineLoaded
from lenstop.tui.screens.inspector import InspectorScreen
from lenstop.tui.screens.loading import EngineFactory, LoadingScreen, load_engine
from lenstop.tui.session import Session

KEYMAP_FILE = Path("~/.config/lenstop/keys.json").expanduser()


class LenstopApp(App[None]):
    TITLE = "lenstop"
    CSS_PATH = "lenstop.tcss"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("ctrl+c", "quit", "quit", show=False, priority=True, id="interrupt"),
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
        self._load_keymap()

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
        yield from super().get_system_commands(screen)
        if screen is self.inspector:
            yield from self.inspector.system_commands()

    def _load_keymap(self) -> None:
        """Remap keys by binding id from ~/.config/lenstop/keys.json, e.g. {"ablate": "A"}."""
        try:
            mapping = json.loads(KEYMAP_FILE.read_text()) if KEYMAP_FILE.is_file() else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            mapping = {}
        if isinstance(mapping, dict) and mapping:
            self.set_keymap({str(k): str(v) for k, v in mapping.items()})
