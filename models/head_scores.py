"""What an attention head is doing on this prompt, from its pattern alone.

Scores are mean attention weights, so they read as "how much of this head's
attention goes where the pattern predicts":
- previous-token: from each token to the one before it;
- duplicate-token: from a repeated token to its earlier occurrences;
- induction: from a repeated token to the token after its earlier occurrences.
The last two need a token that occurs twice, so they are None on prompts without one.
The engine computes them with each analysis (numpy, vectorised), so a front end only shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CLEAR = 0.3  # a score at least this high is shown as the head's role


@dataclass(frozen=True)
class HeadScores:
    previous: float | None
    duplicate: float | None
    induction: float | None

    def role(self, threshold: float = CLEAR) -> tuple[str, float] | None:
        """The clearest role, if any score passes `threshold`."""
        named = [("prev-token", self.previous), ("duplicate", self.duplicate), ("induction", self.induction)]
        best = max(((n, s) for n, s in named if s is not None), key=lambda x: x[1], default=None)
        return best if best is not None and best[1] >= threshold else None


def _mean_mass(pattern: NDArray[np.float32], targets: NDArray[np.bool_]) -> NDArray[np.float64] | None:
    """Per head: attention from each query onto its targets, summed, then averaged over the queries that have any."""
    queries = targets.any(axis=1)
    if not queries.any():
        return None
    mass = (pattern * targets).sum(axis=-1, dtype=np.float64)  # (heads, query)
    return mass[:, queries].mean(axis=1)


def head_scores(pattern: NDArray[np.float32], token_ids: Sequence[int]) -> tuple[HeadScores, ...]:
    """pattern: (heads, query, key). One HeadScores per head."""
    heads, seq, _ = pattern.shape
    ids = np.asarray(token_ids)
    earlier = np.tri(seq, seq, k=-1, dtype=bool)  # [q, k]: k comes before q
    same = ids[:, None] == ids[None, :]  # [q, k]: the same token
    duplicate = same & earlier
    induction = np.zeros_like(duplicate)  # [q, j]: token j follows an earlier copy of token q
    induction[:, 1:] = same[:, :-1] & earlier[:, 1:]
    previous = pattern[:, np.arange(1, seq), np.arange(seq - 1)].mean(axis=1, dtype=np.float64) if seq > 1 else None
    dup = _mean_mass(pattern, duplicate)
    ind = _mean_mass(pattern, induction)
    return tuple(
        HeadScores(
            previous=None if previous is None else float(previous[h]),
            duplicate=None if dup is None else float(dup[h]),
            induction=None if ind is None else float(ind[h]),
        )
        for h in range(heads)
    )
