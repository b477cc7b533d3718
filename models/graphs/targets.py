"""The graph's logit nodes: which outputs it explains, and the direction each one reads.

As circuit-tracer 0.5.0: by default the most probable next tokens, the top
`max_n_logits`, cut where their cumulative probability first reaches
`desired_prob` (that token included); or tokens the user names. A logit node's
direction is its unembedding column less the mean column, without the
unembedding's bias. lenstop adds a logit difference (answer minus wrong) as one
target of its own, whose direction is the difference of the two columns and
whose weight in the influence is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lenstop.models.errors import UsageError


@dataclass(frozen=True)
class LogitTarget:
    """One logit node: the token it stands for, its id, its probability on the prompt, its weight."""

    token: str
    id: int
    prob: float
    weight: float  # its weight in the influence: the probability, or 1 for a logit difference
    wrong: int | None = None  # a logit difference's wrong token

    def as_json(self) -> dict:
        out: dict = {"token": self.token, "id": self.id, "prob": self.prob}
        if self.wrong is not None:
            out["wrong"] = self.wrong
        return out


@dataclass(frozen=True)
class Targets:
    targets: tuple[LogitTarget, ...]
    vectors: torch.Tensor  # (n_targets, d_model)

    @property
    def weights(self) -> torch.Tensor:
        return torch.tensor([t.weight for t in self.targets])


def salient(logits: torch.Tensor, max_n_logits: int = 10, desired_prob: float = 0.95) -> torch.Tensor:
    """The ids of the most probable tokens, cut where their cumulative probability first reaches `desired_prob`."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_idx = torch.topk(probs, min(max_n_logits, probs.shape[-1]))
    cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), desired_prob)) + 1
    return top_idx[:cutoff]


def choose(
    logits: torch.Tensor,
    w_u: torch.Tensor,
    decode: Callable[[list[int]], list[str]],
    ids: Sequence[int] = (),
    wrong: int | None = None,
    max_n_logits: int = 10,
    desired_prob: float = 0.95,
) -> Targets:
    """The targets for the last position's `logits` (vocab,), with `w_u` (d_model, vocab) and `decode` naming ids:
    `ids` named by the user, else the salient ones; `wrong` makes one logit difference of the single id."""
    probs = torch.softmax(logits.float(), dim=-1)
    vocab = probs.shape[-1]
    chosen = torch.tensor(list(ids), dtype=torch.long) if ids else salient(logits, max_n_logits, desired_prob)
    bad = [int(i) for i in chosen.tolist() + ([wrong] if wrong is not None else []) if not 0 <= int(i) < vocab]
    if bad:
        raise UsageError(f"target token ids {bad} are outside the vocabulary (0..{vocab - 1})")
    mean = w_u.mean(dim=-1)
    if wrong is not None:
        if len(chosen) != 1:
            raise UsageError("a logit difference takes one --target and one --wrong")
        answer = int(chosen[0])
        vector = (w_u[:, answer] - w_u[:, wrong])[None]
        good, bad_token = decode([answer, wrong])
        target = LogitTarget(f"{good} - {bad_token}", answer, float(probs[answer]), 1.0, wrong)
        return Targets((target,), vector.float())
    vectors = (w_u[:, chosen] - mean[:, None]).T
    names = decode(chosen.tolist())
    targets = tuple(
        LogitTarget(name, int(i), float(probs[i]), float(probs[i]))
        for name, i in zip(names, chosen.tolist(), strict=True)
    )
    return Targets(targets, vectors.float())
