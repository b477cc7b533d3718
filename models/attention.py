"""What an analysis keeps of each layer's attention, computed on the device while the
pattern exists: each head's strongest keys from each query, and its previous-token,
duplicate-token and induction scores. The (heads, query, key) square itself is let go
(unless asked for), so what an analysis keeps grows with the prompt, not its square.

The scores are those of `lenstop.models.head_scores` (numpy, the reference in tests),
computed with the same masks in torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from lenstop.models.head_scores import HeadScores
from lenstop.models.layer_cache import LayerCache, LayerKey
from lenstop.models.results import ATTENTION_TOP, LayerAttention, frozen_array


@dataclass(frozen=True)
class Pairs:
    """The (query, key) pairs one score reads, as index lists: they are few, the square is large."""

    queries: torch.Tensor  # (pairs,)
    keys: torch.Tensor  # (pairs,)
    seq: int

    @classmethod
    def where(cls, mask: torch.Tensor) -> Pairs:
        queries, keys = mask.nonzero(as_tuple=True)
        return cls(queries, keys, mask.shape[0])

    def mean_mass(self, pattern: torch.Tensor) -> list[float] | None:
        """Per head: attention from each query onto its keys, summed, then averaged over the queries that have any."""
        if self.queries.numel() == 0:
            return None
        mass = torch.zeros(pattern.shape[0], self.seq, device=pattern.device, dtype=torch.float32)
        mass.index_add_(1, self.queries, pattern[:, self.queries, self.keys].float())
        return mass[:, self.queries.unique()].mean(-1).tolist()


@dataclass(frozen=True)
class ScoreMasks:
    """Which (query, key) pairs each score reads, for one prompt; shared by every layer."""

    previous: Pairs  # the key just before the query
    duplicate: Pairs  # earlier copies of the query's token
    induction: Pairs  # the tokens after earlier copies of the query's token

    @classmethod
    def of(cls, ids: torch.Tensor) -> ScoreMasks:
        seq = ids.shape[-1]
        earlier = torch.ones(seq, seq, dtype=torch.bool, device=ids.device).tril(-1)
        same = ids[:, None] == ids[None, :]
        induction = torch.zeros_like(earlier)
        induction[:, 1:] = same[:, :-1] & earlier[:, 1:]
        previous = torch.zeros_like(earlier)
        previous[torch.arange(1, seq), torch.arange(seq - 1)] = True
        return cls(Pairs.where(previous), Pairs.where(same & earlier), Pairs.where(induction))


def summarise(layer: int, pattern: torch.Tensor, masks: ScoreMasks, *, keep: bool = False) -> LayerAttention:
    """One layer's pattern (heads, query, key) as its strongest keys and its heads' scores."""
    heads = pattern.shape[0]
    previous, duplicate, induction = (
        pairs.mean_mass(pattern) for pairs in (masks.previous, masks.duplicate, masks.induction)
    )
    scores = tuple(
        HeadScores(
            None if previous is None else previous[h],
            None if duplicate is None else duplicate[h],
            None if induction is None else induction[h],
        )
        for h in range(heads)
    )
    top = pattern.topk(min(ATTENTION_TOP, pattern.shape[-1]), dim=-1)
    return LayerAttention(
        layer,
        frozen_array(top.indices.cpu().numpy(), np.int64),
        frozen_array(top.values.float().cpu().numpy(), np.float32),
        scores,
        frozen_array(pattern.float().cpu().numpy(), np.float32) if keep else None,
    )


class AttentionCache(LayerCache[LayerAttention]):
    """Layers' attention already read (see `layer_cache`); a reading keeps its whole square only when that
    was asked for, and is given without it otherwise."""

    def __init__(self, budget: int = 256 * 2**20) -> None:
        super().__init__(lambda attention: attention.nbytes, budget)

    def get(self, key: LayerKey, *, full: bool = False) -> LayerAttention | None:
        """The layer's reading, with the whole square only when `full` (None if that was never read)."""
        found = super().get(key)
        if found is None or (full and found.pattern is None):
            return None
        return found if full or found.pattern is None else replace(found, pattern=None)
