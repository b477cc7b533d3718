"""What an analysis keeps of each layer's attention, computed on the device while the
pattern exists: each head's strongest keys from each query, and its previous-token,
duplicate-token and induction scores. The (heads, query, key) square itself is let go
(unless asked for), so what an analysis keeps grows with the prompt, not its square.

The scores are those of `lenstop.models.head_scores` (numpy, the reference in tests),
computed with the same masks in torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
import torch

from lenstop.models.head_scores import HeadScores
from lenstop.models.interventions import Intervention
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


AttentionKey = tuple[tuple[int, ...], tuple[Intervention, ...], int]  # token ids, the interventions before it, layer


class AttentionCache:
    """Layers' attention already read, by prompt, the interventions that can reach the layer, and layer;
    the least recently used let go past `budget` bytes. Moving through layers and back, or toggling an
    intervention downstream of the layer on screen, then costs no pass."""

    def __init__(self, budget: int = 256 * 2**20) -> None:
        self.budget = budget
        self._entries: OrderedDict[AttentionKey, LayerAttention] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the engine's threads share it

    def get(self, key: AttentionKey, *, full: bool = False) -> LayerAttention | None:
        """The layer's reading, with the whole square only when `full` (None if that was never read)."""
        with self._lock:
            found = self._entries.get(key)
            if found is None or (full and found.pattern is None):
                return None
            self._entries.move_to_end(key)
        return found if full or found.pattern is None else replace(found, pattern=None)

    def put(self, key: AttentionKey, attention: LayerAttention) -> None:
        size = attention.nbytes
        if size > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += size - (old.nbytes if old is not None else 0)
            self._entries[key] = attention
            while self._bytes > self.budget:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._entries)


class EnoughRead(Exception):
    """Raised from a hook once a pass has read what it came for: the layers after it need not run."""
