"""Next-token distributions: their top tokens, normalised without a (seq, vocab) log-softmax, and the
clean prompt's distribution that every intervened analysis compares with (KL, shifts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from lenstop.models.results import Floats, TokenShift, TopTokens, frozen_array

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle

ROWS = 32  # positions a block: what is made at once is (ROWS, vocab), never (seq, vocab) beside the logits


def logsumexp(logits: torch.Tensor, rows: int = ROWS) -> torch.Tensor:
    """(seq, vocab) -> (seq, 1) in float32, a block of positions at a time: the whole at once would hold
    another (seq, vocab) tensor, as large as the logits themselves (twice, from half precision)."""
    return torch.cat([block.float().logsumexp(-1, keepdim=True) for block in logits.split(rows)])


def ranked(logits: torch.Tensor, n: int, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top `n` ids (seq, n) of raw logits (seq, vocab) and their log-probabilities (seq, n) in float32,
    normalised by their logsumexp `lse` (seq, 1) after the top-k: a log-softmax over the whole vocabulary
    costs as much as the top-k."""
    top = logits.topk(min(n, logits.shape[-1]), dim=-1)
    return top.indices, top.values.float() - lse


def top_tokens(handle: ModelHandle, ids: torch.Tensor, logprobs: torch.Tensor) -> TopTokens:
    """Ids (seq, n) and their log-probabilities (seq, n) as a frozen result, each token spelled."""
    found = ids.cpu().numpy()
    strings = handle.token_strings(found.reshape(-1).tolist())
    width = found.shape[1]
    return TopTokens(
        ids=frozen_array(found, np.int64),
        probs=frozen_array(logprobs.exp().cpu().numpy(), np.float32),
        strings=tuple(tuple(strings[r * width : (r + 1) * width]) for r in range(found.shape[0])),
    )


class CleanLogits(NamedTuple):
    """A clean analysis's logits as it made them, kept until an intervened analysis needs the distribution."""

    logits: torch.Tensor  # (seq, vocab), in the model's dtype
    lse: torch.Tensor  # (seq, 1), float32
    top: TopTokens


class CleanDistribution(NamedTuple):
    """The clean prompt's next-token distribution, as the intervened analyses of that prompt need it: held as
    the clean analysis's own logits, p = exp(logits - lse), not as probabilities, which would be another
    (seq, vocab) tensor in float32."""

    logits: torch.Tensor  # (seq, vocab), in the model's dtype
    lse: torch.Tensor  # (seq, 1), float32
    neg_entropy: torch.Tensor  # (seq,): Σ p log p = Σ p · logits - lse, the first term of every KL from it
    top: TopTokens

    @classmethod
    def of(cls, logits: torch.Tensor, lse: torch.Tensor, top: TopTokens) -> CleanDistribution:
        made = cls(logits, lse, lse[:, 0], top)
        return made._replace(neg_entropy=made.expect(logits) - lse[:, 0])

    def expect(self, values: torch.Tensor, rows: int = ROWS) -> torch.Tensor:
        """Σ p · values at each position, (seq, vocab) -> (seq,), with p made a block of positions at a time."""
        blocks = zip(self.logits.split(rows), self.lse.split(rows), values.split(rows), strict=True)
        return torch.cat([((c.float() - m).exp_() * v.float()).sum(-1) for c, m, v in blocks])

    def probs_at(self, ids: torch.Tensor) -> torch.Tensor:
        """The probabilities of the tokens `ids` (seq, k) at each position."""
        return (self.logits.gather(1, ids).float() - self.lse).exp()

    def kl(self, logits: torch.Tensor, lse: torch.Tensor) -> Floats:
        """KL(clean ‖ intervened) at each position (seq,), of intervened `logits` with their `lse` (seq, 1):
        Σ p log p (kept) − Σ p · logits + logsumexp(logits), with no log-softmax and no probabilities kept."""
        found = self.neg_entropy - self.expect(logits) + lse[:, 0]
        return frozen_array(found.clamp_min(0).cpu().numpy(), np.float32)


def shifts(
    handle: ModelHandle, clean: CleanDistribution, logits: torch.Tensor, lse: torch.Tensor, top: TopTokens
) -> tuple[tuple[TokenShift, ...], ...]:
    """Per position: the union of both top lists, with each token's probability before (`clean`) and
    after (`logits`, normalised by their `lse` (seq,)), gathered in one go."""
    both = torch.from_numpy(np.concatenate([clean.top.ids, top.ids], axis=1)).to(clean.logits.device)
    before = clean.probs_at(both).cpu().numpy()
    after = (logits.float().gather(1, both.to(logits.device)) - lse[:, None].to(logits.device)).exp().cpu().numpy()
    out = []
    for pos, row in enumerate(both.cpu().numpy().tolist()):
        order = list(dict.fromkeys(row))  # the clean top list, then what the new one adds
        first = {i: row.index(i) for i in order}
        out.append(
            tuple(
                TokenShift(s, i, float(before[pos, first[i]]), float(after[pos, first[i]]))
                for s, i in zip(handle.token_strings(order), order, strict=True)
            )
        )
    return tuple(out)
