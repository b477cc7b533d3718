"""The dictionaries loaded beside a model, and the one answer to "which is at layer L"."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from lenstop.models.dictionaries.dictionary import Dictionary
from lenstop.models.errors import UsageError


class Dictionaries(Sequence[Dictionary]):
    """The loaded dictionaries in layer order, looked up by layer or key."""

    def __init__(self, dictionaries: Iterable[Dictionary] = ()) -> None:
        self._all = sorted(dictionaries, key=lambda d: (d.layer, d.key))
        self.by_key = {d.key: d for d in self._all}

    @overload
    def __getitem__(self, index: int) -> Dictionary: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Dictionary]: ...
    def __getitem__(self, index: int | slice) -> Dictionary | Sequence[Dictionary]:
        return self._all[index]

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Dictionary]:
        return iter(self._all)

    @property
    def layers(self) -> list[int]:
        """The layers that have a dictionary, in order."""
        return sorted({d.layer for d in self._all})

    def at(self, layer: int, *, first: bool = False) -> Dictionary:
        """The dictionary at `layer`, or a usage error naming the layers that have one. Where a layer has
        several, only reading may take the `first`: an edit or a followed feature must name one."""
        found = [d for d in self._all if d.layer == layer]
        if not found:
            have = ", ".join(str(k) for k in self.layers) or "none"
            raise UsageError(f"no dictionary at layer {layer}; dictionaries are loaded at layers: {have}")
        if len(found) > 1 and not first:
            raise UsageError(
                f"layer {layer} has {len(found)} dictionaries ({', '.join(d.key for d in found)}); "
                "load one per layer to intervene"
            )
        return found[0]

    def at_layers(self, layers: Iterable[int]) -> list[Dictionary]:
        """Every dictionary at one of `layers`, in order."""
        wanted = set(layers)
        return [d for d in self._all if d.layer in wanted]
