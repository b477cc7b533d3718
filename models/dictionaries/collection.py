"""The dictionaries loaded beside a model, and the one answer to "which is at layer L".

A cross-layer transcoder spans every layer and is no `Dictionary`: it rides along as `cross_layer`, at most
one a model; the sequence itself holds the per-layer dictionaries only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, overload

from lenstop.models.dictionaries.dictionary import Dictionary
from lenstop.models.errors import UsageError

if TYPE_CHECKING:
    from lenstop.models.dictionaries.cross_layer import CrossLayerTranscoder


class Dictionaries(Sequence[Dictionary]):
    """The loaded dictionaries in layer order, looked up by layer or key."""

    def __init__(
        self, dictionaries: Iterable[Dictionary] = (), cross_layer: CrossLayerTranscoder | None = None
    ) -> None:
        self._all = sorted(dictionaries, key=lambda d: (d.layer, d.key))
        self.by_key = {d.key: d for d in self._all}
        self.cross_layer = cross_layer

    @classmethod
    def joined(cls, parts: Iterable[Dictionaries]) -> Dictionaries:
        """Several specs' dictionaries as one collection; two cross-layer transcoders are a usage error."""
        parts = list(parts)
        clts = [p.cross_layer for p in parts if p.cross_layer is not None]
        if len(clts) > 1:
            raise UsageError(
                f"two cross-layer transcoders ({clts[0].key}, {clts[1].key}); a model takes one, load them separately"
            )
        return cls([d for p in parts for d in p], clts[0] if clts else None)

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
