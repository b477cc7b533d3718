"""Everything reading keeps for reuse, in one place, let go of by one `forget()`.

Two shapes of value are kept. A layer's reading (its dictionary's features, its
attention) is kept by the prompt and the interventions that can reach it, the
least recently used let go past a budget (`layer_cache`). What a pass makes of the
whole prompt (the block outputs, the residual streams, the logits) is kept for the
last prompt only, as a `Kept` (key, value) that the next prompt's replaces.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from lenstop.models.attention import AttentionCache
from lenstop.models.layer_cache import LayerCache
from lenstop.models.results import LayerFeatures

if TYPE_CHECKING:
    import torch

    from lenstop.models.interventions import Intervention
    from lenstop.models.reading.distribution import CleanDistribution, CleanLogits
    from lenstop.models.replay import Outputs

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
Ids = tuple[int, ...]  # a prompt's token ids


class Kept(NamedTuple, Generic[K, T]):
    """A value made for one prompt, with the key it was made for."""

    key: K
    value: T


def kept_for(kept: Kept[K, T] | None, key: K) -> T | None:
    """The kept value if it was made for `key`. Callers read the field once and pass it here: another
    thread's analysis may replace it meanwhile."""
    if kept is None:
        return None
    made_for, value = kept
    return value if made_for == key else None


class ReadingCache:
    """The readings of layers, and the last prompt's block outputs, residual streams and logits."""

    def __init__(self) -> None:
        # By (token ids, the interventions that can reach the layer, layer, what was read): bounded in bytes.
        self.features: LayerCache[LayerFeatures] = LayerCache(lambda reading: reading.nbytes)
        self.attention = AttentionCache()
        # The last clean analysis's block outputs, by token ids: a pass under interventions replays those of
        # the layers before the first it touches instead of computing them (see models/replay.py).
        self.blocks: Kept[Ids, Outputs] | None = None
        # The last analysis's residual stream after each layer, layer -> (seq, d_model), by (token ids,
        # interventions): one position's logit lens, later, needs no pass.
        self.lens: Kept[tuple[Ids, tuple[Intervention, ...]], dict[int, torch.Tensor]] | None = None
        # The last clean analysis's logits, by token ids, until the first intervention on its prompt makes the
        # clean distribution from them: else that would unembed the prompt again.
        self.clean_logits: Kept[Ids, CleanLogits] | None = None
        self.clean: Kept[tuple[Ids, int], CleanDistribution] | None = None  # by (token ids, top tokens kept)

    def forget(self) -> None:
        """Let go of everything kept: linear in the prompt, the logits as long as the vocabulary at every
        position. The next reading starts afresh on any prompt."""
        self.features.clear()
        self.attention.clear()
        self.blocks = self.lens = self.clean_logits = self.clean = None
