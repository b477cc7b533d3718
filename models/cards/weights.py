"""What a feature's weights alone say about it, for any dictionary, the moment it loads: no corpus pass.

- **Logit effects**: the decoder direction through the unembedding (`direction @ W_U`), as SAEDashboard and
  Neuronpedia compute them, its most promoted and most suppressed tokens. Tokens the tokenizer never produces
  are left out, and counted (`produced_tokens`): their unembedding columns never trained, so they crowd the
  lists with equal, meaningless values (`\\xde +0.45 \\xf9 +0.45 ...`).
- **Decoder norm**, and the **nearest features** by decoder cosine, in the same dictionary and the
  dictionaries of the neighbouring layers.

A direction is what a feature adds to the residual stream: an SAE's or a transcoder's decoder row, a
cross-layer feature's rows summed over the layers it writes to (what the graph viewer's feature files show).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from lenstop.models.feature_cards import FeatureCard, FromWeights, Neighbour

N_LOGITS = 10  # promoted and suppressed tokens on a card, as SAEDashboard shows
N_NEIGHBOURS = 5  # nearest features per dictionary compared


@dataclass(frozen=True)
class Decoders:
    """The directions of one dictionary's features (n_features, d_model) at `layer`, and their labels."""

    layer: int
    directions: torch.Tensor
    label: Callable[[int], str | None]


NEVER_IN_UTF8 = (0xC0, 0xC1, *range(0xF5, 0x100))  # bytes no valid UTF-8 text contains
UNTRAINED_COSINE = 0.99  # the demo's untrained tokens sit above 0.999, its rarest trained ones below 0.96

_produced: weakref.WeakKeyDictionary[Any, tuple[int, torch.Tensor]] = weakref.WeakKeyDictionary()


def produced_tokens(tokenizer: Any, w_u: torch.Tensor) -> torch.Tensor:
    """A (vocab,) bool mask of the tokens the model was seen to produce, computed once per tokenizer and
    unembedding (about half a second for 50k tokens). Left out:

    - special tokens, and ids past the tokenizer's own (a padded unembedding);
    - entries whose text does not encode back to them, alone or after another token (a lone token's leading
      space is dropped by sentencepiece): lone bytes of multi-byte characters, merges never reached;
    - entries that never occurred in training, read from the weights: their unembedding columns all moved
      alike, as those of the bytes no UTF-8 text contains (`NEVER_IN_UTF8`) did, so a column whose cosine
      with theirs (each less the mean column) is `UNTRAINED_COSINE` or more is one of them. Only where the
      vocabulary has such byte tokens (byte-level BPE, sentencepiece's byte fallback)."""
    vocab = int(w_u.shape[-1])
    cached = _produced.get(tokenizer)
    if cached is not None and cached[0] == w_u.data_ptr():
        return cached[1]
    n = min(len(tokenizer), vocab)
    ids = list(range(n))
    alone = _round_trips(tokenizer, [[i] for i in ids])
    prefix = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
    todo = [i for i in ids if not alone[i]]
    in_context = _round_trips(tokenizer, [prefix + [i] for i in todo]) if prefix and todo else []
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[[i for i in ids if alone[i]]] = True
    mask[[i for i, ok in zip(todo, in_context, strict=True) if ok]] = True
    mask[[i for i in getattr(tokenizer, "all_special_ids", ()) or () if 0 <= i < vocab]] = False
    mask &= ~untrained_tokens(tokenizer, w_u)
    _produced[tokenizer] = (w_u.data_ptr(), mask)
    return mask


def untrained_tokens(tokenizer: Any, w_u: torch.Tensor) -> torch.Tensor:
    """A (vocab,) bool mask of the entries that moved in training as the never-valid bytes did (see
    `produced_tokens`); all False when the vocabulary has fewer than three such bytes."""
    never = [i for i in byte_tokens(tokenizer, NEVER_IN_UTF8) if i < w_u.shape[-1]]
    if len(never) < 3:
        return torch.zeros(int(w_u.shape[-1]), dtype=torch.bool)
    cols = w_u.detach().float()
    cols = cols - cols.mean(1, keepdim=True)
    ref = cols[:, never].mean(1)
    cosine = (ref @ cols) / (cols.norm(dim=0) * ref.norm()).clamp_min(1e-12)
    return (cosine >= UNTRAINED_COSINE).cpu()


def byte_tokens(tokenizer: Any, values: Sequence[int]) -> list[int]:
    """The ids of the tokens that stand for one raw byte among `values`: byte-level BPE's one-character pieces
    that decode to no text (GPT-2's alphabet), or sentencepiece's `<0xF5>` byte fallback."""
    from lenstop.models.tokens import _unicode_to_byte

    wanted = set(values)
    to_byte = _unicode_to_byte()
    found = []
    for piece, i in tokenizer.get_vocab().items():
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            value = int(piece[3:5], 16) if all(c in "0123456789ABCDEFabcdef" for c in piece[3:5]) else -1
        elif len(piece) == 1 and piece in to_byte:
            value = to_byte[piece]
        else:
            continue
        if value in wanted:
            found.append(i)
    if not found:
        return []
    texts = tokenizer.batch_decode([[i] for i in found], clean_up_tokenization_spaces=False)
    return [i for i, text in zip(found, texts, strict=True) if "\ufffd" in text or not text]


def _round_trips(tokenizer: Any, sequences: list[list[int]]) -> list[bool]:
    texts = tokenizer.batch_decode(sequences, clean_up_tokenization_spaces=False)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(e) == s for e, s in zip(encoded, sequences, strict=True)]


@dataclass(frozen=True)
class Unembedding:
    """The direct effect on the logits of adding a direction to the final residual stream, the final norm's
    scale held at 1: `((d - mean d) * w) @ (W_U - its mean column)`, where `w` is the final norm's weight and
    the centring of `d` is LayerNorm's (not RMSNorm's). That is SAEDashboard's `W_dec @ W_U` on TransformerLens's
    default processing (fold_ln, centred writing weights and unembedding), and the graph's logit vectors."""

    w_u: torch.Tensor  # (d_model, vocab), as the model holds it
    norm_weight: torch.Tensor | None  # (d_model,); None when folded into w_u
    centred: bool

    def __call__(self, direction: torch.Tensor) -> torch.Tensor:
        d = direction.to(self.w_u.device).float()
        if self.centred:
            d = d - d.mean()
        if self.norm_weight is not None:
            d = d * self.norm_weight.to(d)
        w_u = self.w_u.float()
        return d @ w_u - d @ w_u.mean(1)


def logit_effects(
    direction: torch.Tensor, unembed: Unembedding, produced: torch.Tensor, names: Callable[[Sequence[int]], list[str]]
) -> tuple[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]]:
    """The `N_LOGITS` tokens `direction` (d_model,) promotes and suppresses most, among the `produced` ones."""
    effect = unembed(direction)
    keep = produced.to(effect.device)
    k = min(N_LOGITS, int(keep.sum()))
    top = torch.topk(effect.masked_fill(~keep, float("-inf")), k)
    bottom = torch.topk((-effect).masked_fill(~keep, float("-inf")), k)

    def named(ids: torch.Tensor, values: torch.Tensor, sign: float) -> tuple[tuple[str, float], ...]:
        strings = names(ids.tolist())
        return tuple((s, sign * float(v)) for s, v in zip(strings, values.tolist(), strict=True))

    return named(top.indices, top.values, 1.0), named(bottom.indices, bottom.values, -1.0)


def nearest(direction: torch.Tensor, among: Sequence[Decoders], own: tuple[int, int]) -> tuple[Neighbour, ...]:
    """The `N_NEIGHBOURS` features of each of `among` closest to `direction` by cosine, the feature `own`
    (layer, feature) itself left out; highest cosine first."""
    unit = direction.float() / direction.float().norm().clamp_min(1e-12)
    found: list[Neighbour] = []
    for d in among:
        dirs = d.directions.float().to(unit.device)
        cos = (dirs @ unit) / dirs.norm(dim=1).clamp_min(1e-12)
        if d.layer == own[0]:
            cos[own[1]] = float("-inf")
        top = torch.topk(cos, min(N_NEIGHBOURS, cos.numel() - (d.layer == own[0])))
        found += [Neighbour(d.layer, int(i), float(c), d.label(int(i))) for c, i in zip(*top, strict=True)]
    return tuple(sorted(found, key=lambda n: -n.cosine))


def with_weights(
    card: FeatureCard,
    layer: int,
    decoders: Decoders,
    neighbours: Sequence[Decoders],
    unembed: Unembedding,
    produced: torch.Tensor,
    names: Callable[[Sequence[int]], list[str]],
) -> FeatureCard:
    """`card` (of feature `card.id` of `decoders`, at `layer`) with what the weights say: its logit effects
    as its promoted and suppressed tokens, its decoder norm, its nearest features here and in `neighbours`."""
    direction = decoders.directions[card.id]
    promoted, suppressed = logit_effects(direction, unembed, produced, names)
    facts = FromWeights(
        decoder_norm=float(direction.float().norm()),
        left_out=int((~produced).sum()),
        neighbours=nearest(direction, [decoders, *neighbours], (layer, card.id)),
    )
    return replace(card, promoted=promoted, suppressed=suppressed, weights=facts)
