"""How the app gets its engine: a callable it runs in a worker, reporting steps.

The real one imports the engine (and with it torch, TransformerLens and SAELens)
only when called, so the app has painted its first screen long before. It is a
frozen value, so a retry with another model keeps the device, dtype and labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Progress = Callable[[str], None]
Loader = Callable[[Progress], Any]


@dataclass(frozen=True)
class EngineLoader:
    model: str
    saes: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "float32"
    n_devices: int | None = None
    device_map: str | None = None
    labels: tuple[str, ...] = ()

    def __call__(self, progress: Progress) -> Any:
        progress("importing torch, TransformerLens and SAELens")
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
            progress=progress,
        )


def engine_loader(model: str, saes: Any = (), *, labels: Any = (), **options: Any) -> EngineLoader:
    """The loader of `model` with its dictionaries; `options` are EngineLoader's other fields."""
    return EngineLoader(model, tuple(saes), labels=tuple(labels), **options)
