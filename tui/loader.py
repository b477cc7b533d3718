"""How the app gets its engine: a function it runs in a worker, reporting steps.

The real one imports the engine (and with it torch, TransformerLens and SAELens)
only when called, so the app has painted its first screen long before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Progress = Callable[[str], None]
Loader = Callable[[Progress], Any]


def engine_loader(
    model: str,
    saes: Sequence[str] = (),
    *,
    device: str = "auto",
    dtype: str = "float32",
    n_devices: int | None = None,
    device_map: str | None = None,
    labels: Sequence[str] = (),
) -> Loader:
    def load(progress: Progress) -> Any:
        progress("importing torch, TransformerLens and SAELens")
        from lenstop.models.engine import Engine
        from lenstop.models.loading import parse_device_map

        return Engine.load(
            model,
            list(saes),
            device=device,
            dtype=dtype,
            n_devices=n_devices,
            device_map=parse_device_map(device_map),
            labels=list(labels),
            progress=progress,
        )

    return load
