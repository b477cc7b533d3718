"""Which engine to load, as one frozen value: the CLI builds it from its options,
the app from its command line, and the app keeps it to load again after a failure.

Loading imports torch, TransformerLens and SAELens only when called, so a front
end can hold an `EngineSpec` (and paint its first screen) long before.
"""

from __future__ import annotations

import gc
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lenstop.models.demo import DEMO_NAME
from lenstop.models.errors import UsageError
from lenstop.models.protocol import Progress

if TYPE_CHECKING:
    from lenstop.models.engine import Engine


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while loading, then freeze what was loaded.

    The imports and the load allocate about a million objects that live as long as the
    process; each full collection during the load walks all of them again, which cost a
    quarter of the load's time here. Frozen afterwards, later collections skip them too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class EngineSpec:
    model: str = DEMO_NAME  # a hub name, a local Hugging Face directory, or demo
    saes: tuple[str, ...] = ()  # --sae specs; the demo brings its own when none are named
    device: str = "auto"
    dtype: str = "float32"
    n_devices: int | None = None
    device_map: str | None = None  # as typed: auto, balanced, JSON, or module=device pairs
    labels: tuple[str, ...] = ()  # [LAYER=]PATH label files

    def load(self, progress: Progress | None = None) -> Engine:
        """Import the engine's libraries, then load the model and its dictionaries, telling `progress` each step."""
        say = progress or (lambda _step: None)
        with collector_paused():
            say("importing torch, TransformerLens and SAELens")
            import sae_lens  # noqa: F401 - here, where the step says so, not inside the model's load
            import transformer_lens  # noqa: F401 - likewise

            from lenstop.models.engine import Engine
            from lenstop.models.loading import parse_device_map

            return Engine.load(
                self.model,
                list(self.saes),
                device=self.device,
                dtype=self.dtype,
                n_devices=self.n_devices,
                device_map=parse_device_map(self.device_map),
                labels=list(self.labels),
                progress=say,
            )

    def command_line(self) -> str:
        """`MODEL --sae SPEC ...`: what the app's retry box shows and `retarget` reads back."""
        return shlex.join([self.model, *(word for sae in self.saes for word in ("--sae", sae))])

    def retarget(self, command_line: str) -> EngineSpec:
        """The same device, dtype and labels, with the model and dictionaries of `MODEL [--sae SPEC]...`."""
        try:
            words = shlex.split(command_line)
        except ValueError as err:
            raise UsageError(f"cannot read {command_line!r}: {err}") from None
        if not words or words[0].startswith("-"):
            raise UsageError("type a model first, then any --sae SPEC, e.g. gpt2 --sae gpt2-small-res-jb")
        model, rest, saes = words[0], words[1:], []
        while rest:
            option = rest.pop(0)
            if option != "--sae" or not rest:
                raise UsageError(f"unexpected {option!r}: only MODEL and --sae SPEC can be changed here")
            saes.append(rest.pop(0))
        return replace(self, model=model, saes=tuple(saes))
