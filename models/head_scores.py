"""What an attention head is doing on this prompt, from its pattern alone.

Scores are mean attention weights, so they read as "how much of this head's
attention goes where the pattern predicts":
- previous-token: from each token to the one before it;
- duplicate-token: from a repeated token to its earlier occurrences;
- induction: from a repeated token to the token after its earlier occurrences.
The last two need a token that occurs twice, so they are None on prompts without one.
Plain numpy: the app computes these on its own thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def head_scores(pattern: np.ndarray, token_ids: Sequence[int]) -> list[HeadScores]:
    """pattern: (heads, query, key). One HeadScores per head."""
    heads, seq, _ = pattern.shape
    ids = list(token_ids)
    prev = pattern[:, np.arange(1, seq), np.arange(0, seq - 1)].mean(axis=1) if seq > 1 else np.full(heads, np.nan)
    dup_q, dup_k, ind_q, ind_k = [], [], [], []
    for q in range(1, seq):
        earlier = [k for k in range(q) if ids[k] == ids[q]]
        for k in earlier:
            dup_q.append(q)
            dup_k.append(k)
            if k + 1 < q:
                ind_q.append(q)
                ind_k.append(k + 1)
    dup_queries = sorted(set(dup_q))
    ind_queries = sorted(set(ind_q))

    def mean_over_queries(qs: list[int], ks: list[int], queries: list[int]) -> np.ndarray | None:
        if not queries:
            return None
        mass = np.zeros((heads, seq))
        np.add.at(mass, (slice(None), qs), pattern[:, qs, ks])
        return mass[:, queries].mean(axis=1)

    dup = mean_over_queries(dup_q, dup_k, dup_queries)
    ind = mean_over_queries(ind_q, ind_k, ind_queries)
    return [
        HeadScores(
            previous=None if seq < 2 else float(prev[h]),
            duplicate=None if dup is None else float(dup[h]),
            induction=None if ind is None else float(ind[h]),
        )
        for h in range(heads)
    ]
