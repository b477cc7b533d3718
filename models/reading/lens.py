"""The logit lens: what a residual stream would predict, through the final norm and the unembedding.

Made a block of positions at a time: the top-k of each block's raw logits, normalised by their
logsumexp, so no (seq, vocab) log-softmax is ever held (`distribution.ranked`). A block's logits are
bounded in bytes rather than in rows: the unembedding streams its whole (d_model, vocab) matrix once a
block, so blocks of a few rows would make a long prompt's lens slower than one product over all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lenstop.models.prompts import resolve_position
from lenstop.models.reading.distribution import logsumexp, ranked, top_tokens
from lenstop.models.results import TopTokens

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle


BLOCK_BYTES = 64 * 2**20  # of float32 logits a block: some 330 positions of GPT-2's vocabulary, 65 of Gemma's


def layer_lens(handle: ModelHandle, resid: torch.Tensor, n: int, rows: int | None = None) -> TopTokens:
    """The top `n` tokens that each row of residual stream (rows, d_model) would predict, `rows` positions a
    block (by default as many as `BLOCK_BYTES` of logits hold)."""
    rows = rows or max(1, BLOCK_BYTES // (4 * int(handle.model.cfg.d_vocab)))
    ids, logprobs = [], []
    with handle.guard(resid.shape[0]):
        for block in resid.split(rows):
            x = block.to(handle.out_device).unsqueeze(0)  # (1, rows, d_model)
            logits = handle.model.unembed(handle.model.ln_final(x))[0]  # (rows, vocab)
            top_ids, top_logprobs = ranked(logits, n, logsumexp(logits, rows))
            ids.append(top_ids)
            logprobs.append(top_logprobs)
    return top_tokens(handle, torch.cat(ids), torch.cat(logprobs))


def positions_asked(lens: bool | Sequence[int], seq: int) -> tuple[int, ...] | None:
    """The positions a lens of `lens` covers in a `seq`-token prompt: None for every one (True), none for
    False, else those named, sorted, negative ones counted from the end (a UsageError for one outside)."""
    if isinstance(lens, bool):
        return None if lens else ()
    found = (resolve_position(int(p), seq) for p in lens)
    return tuple(sorted({at for at in found if at is not None}))


def every_layer(
    handle: ModelHandle, resid: dict[int, torch.Tensor], n: int, positions: tuple[int, ...] | None
) -> tuple[TopTokens, ...]:
    """Each layer's lens, in layer order, from its residual stream (seq, d_model) at `positions` (None: at
    every position)."""
    if positions == ():
        return ()
    if positions is None:
        return tuple(layer_lens(handle, resid[layer], n) for layer in sorted(resid))
    rows = torch.tensor(positions, dtype=torch.long)
    return tuple(layer_lens(handle, resid[layer][rows.to(resid[layer].device)], n) for layer in sorted(resid))
