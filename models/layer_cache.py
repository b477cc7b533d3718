"""What the engine has read of a prompt's layers, kept by what can change it.

A layer's reading (its attention, its dictionary's features) depends on the prompt and on the
interventions at that layer and before it; those downstream cannot reach it. Keyed that way,
stepping through layers and back, or toggling an intervention downstream of the layer on screen,
costs no pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from lenstop.models.interventions import Intervention

T = TypeVar("T")

LayerKey = tuple[tuple[int, ...], tuple[Intervention, ...], int, Hashable]  # ids, upstream, layer, what was read


def layer_key(ids: tuple[int, ...], interventions: Sequence[Intervention], layer: int, what: Hashable) -> LayerKey:
    """The key of a reading at `layer`: every hook lenstop edits is inside a block, so the interventions at
    its layer and before are all that can reach it."""
    return ids, tuple(iv for iv in interventions if iv.layer <= layer), layer, what


class LayerCache(Generic[T]):
    """Readings by key, the least recently used let go past `budget` bytes (as `size` counts them)."""

    def __init__(self, size: Callable[[T], int], budget: int = 256 * 2**20) -> None:
        self.budget = budget
        self._size = size
        self._entries: OrderedDict[LayerKey, T] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the engine's threads share it

    def get(self, key: LayerKey) -> T | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: LayerKey, value: T) -> None:
        size = self._size(value)
        if size > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += size - (self._size(old) if old is not None else 0)
            self._entries[key] = value
            while self._bytes > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self._size(dropped)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
