"""Measurements of the demo that the model card reports and the tests check:
the induction circuit, and how well each dictionary stands in for its layer.

They take a plain Hugging Face GPT-2 (`GPT2LMHeadModel`), so they are
independent of lenstop's own engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Induction:
    loss_first: float  # mean next-token loss on the first copy of a random sequence
    loss_second: float  # ... and on its repetition
    best_induction_head: tuple[int, int]
    induction_score: float
    best_previous_head: tuple[int, int]
    previous_score: float

    @property
    def ratio(self) -> float:
        return self.loss_second / self.loss_first


def repeated_sequences(
    vocab: int, bos: int, n: int = 32, half: int = 50, seed: int = 0, low: int = 256
) -> torch.Tensor:
    """BOS, then `half` random tokens, then the same tokens again: (n, 1 + 2 * half).

    Ids below `low` (single bytes and specials) are avoided, as is usual for this test.
    """
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(low, vocab, (n, half), generator=g)
    return torch.cat([torch.full((n, 1), bos), first, first], dim=1)


@torch.no_grad()
def induction(model: Any, vocab: int, bos: int, n: int = 32, half: int = 50, seed: int = 0) -> Induction:
    model.eval()
    half = min(half, (model.config.n_positions - 1) // 2)
    tokens = repeated_sequences(vocab, bos, n, half, seed).to(_device(model))
    before = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # only eager attention returns its pattern
    try:
        out = model(tokens, output_attentions=True)
    finally:
        model.config._attn_implementation = before
    losses = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(n, -1)
    # losses[:, i] predicts token i + 1: first copy is tokens 2..half, second is half+2..2*half.
    loss_first = losses[:, 1:half].mean().item()
    loss_second = losses[:, half + 1 :].mean().item()
    queries = torch.arange(half + 1, 2 * half + 1)  # second-copy positions
    best_ind, best_prev = ((0, 0), -1.0), ((0, 0), -1.0)
    for layer, att in enumerate(out.attentions):  # (n, heads, q, k)
        ind = att[:, :, queries, queries - half + 1].mean(dim=(0, 2))
        prev = att[:, :, torch.arange(2, 2 * half + 1), torch.arange(1, 2 * half)].mean(dim=(0, 2))
        for head in range(att.shape[1]):
            if ind[head] > best_ind[1]:
                best_ind = ((layer, head), float(ind[head]))
            if prev[head] > best_prev[1]:
                best_prev = ((layer, head), float(prev[head]))
    return Induction(loss_first, loss_second, best_ind[0], best_ind[1], best_prev[0], best_prev[1])


@torch.no_grad()
def mean_loss(model: Any, batches: list[torch.Tensor]) -> float:
    model.eval()
    total, count = 0.0, 0
    for tokens in batches:
        tokens = tokens.to(_device(model))
        logits = model(tokens).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum")
        total += loss.item()
        count += tokens[:, 1:].numel()
    return total / count


def _device(model: Any) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _replace_block_output(model: Any, layer: int, fn: Any) -> Any:
    def hook(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return model.transformer.h[layer].register_forward_hook(hook)


@torch.no_grad()
def resid_post(model: Any, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """blocks.{layer}.hook_resid_post: the output of block `layer`, (batch, seq, d_model)."""
    seen: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x

    handle = _replace_block_output(model, layer, keep)
    try:
        model(tokens.to(_device(model)))
    finally:
        handle.remove()
    return seen[0]


@dataclass(frozen=True)
class DictionaryQuality:
    layer: int
    fvu: float  # fraction of variance unexplained
    mean_l0: float
    dead_fraction: float  # never active on the evaluated tokens
    loss_clean: float
    loss_spliced: float
    loss_zero: float

    @property
    def loss_recovered(self) -> float:
        return (self.loss_zero - self.loss_spliced) / (self.loss_zero - self.loss_clean)


@torch.no_grad()
def dictionary_quality(model: Any, sae: Any, layer: int, batches: list[torch.Tensor]) -> DictionaryQuality:
    """FVU, L0 and dead features of `sae` on the residual after block `layer`, and the
    loss with the dictionary's reconstruction spliced in versus the residual zeroed."""
    model.eval()
    sq_err = sq_var = 0.0
    l0_sum, n_tokens = 0.0, 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    sae = sae.to(_device(model))
    xs = [resid_post(model, t, layer).flatten(0, 1) for t in batches]
    mean = torch.cat(xs).mean(0)
    for x in xs:
        acts = sae.encode(x)
        recon = sae.decode(acts)
        sq_err += (x - recon).pow(2).sum().item()
        sq_var += (x - mean).pow(2).sum().item()
        l0_sum += (acts > 0).sum().item()
        n_tokens += x.shape[0]
        fired |= (acts > 0).any(0).cpu()
    clean = mean_loss(model, batches)
    handle = _replace_block_output(model, layer, lambda x: sae.decode(sae.encode(x)))
    try:
        spliced = mean_loss(model, batches)
    finally:
        handle.remove()
    handle = _replace_block_output(model, layer, torch.zeros_like)
    try:
        zero = mean_loss(model, batches)
    finally:
        handle.remove()
    return DictionaryQuality(
        layer=layer,
        fvu=sq_err / sq_var,
        mean_l0=l0_sum / n_tokens,
        dead_fraction=1.0 - fired.float().mean().item(),
        loss_clean=clean,
        loss_spliced=spliced,
        loss_zero=zero,
    )


def windows(ids: np.ndarray, bos: int, n_ctx: int, n: int, seed: int = 0, batch: int = 16) -> list[torch.Tensor]:
    """`n` random windows of held-out tokens, each starting with BOS as lenstop feeds them."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - n_ctx, size=n)
    rows = [np.concatenate([[bos], ids[s : s + n_ctx - 1]]) for s in starts]
    tokens = torch.tensor(np.stack(rows).astype(np.int64))
    return list(tokens.split(batch))
