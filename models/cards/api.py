"""`Engine.card` and `Engine.label`: one card per feature, whatever the dictionary, from its card files where it
has them and from its weights always; what the app, `lenstop card --json` and the graph viewer's feature files
all show."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lenstop.models.cards.weights import Decoders, Unembedding, produced_tokens, with_weights
from lenstop.models.dictionaries import Dictionary
from lenstop.models.errors import UsageError
from lenstop.models.feature_cards import Cards, FeatureCard
from lenstop.models.runtime.handle import ModelHandle


@dataclass(frozen=True)
class Features:
    """The features read at one layer: a dictionary's, or a cross-layer transcoder's at that layer."""

    key: str
    layer: int
    size: int
    cards: Cards
    kind: str  # what neighbouring layers must share to be compared: the hook, its layer left out
    decoders: Decoders | None  # None when a decoder does not write to the residual stream


def features_at(handle: ModelHandle, layer: int) -> Features:
    """The features at `layer`: its dictionary's, else the cross-layer transcoder's, else a usage error naming
    the layers that have some."""
    dictionaries = handle.dictionaries
    clt = dictionaries.cross_layer
    if clt is not None and layer not in dictionaries.layers and 0 <= layer < clt.n_layers:
        cards = clt.cards(layer)
        summed = clt.decoder(layer).sum(1)  # (n, n_out, d): a feature writes to this and every later layer
        return Features(clt.key, layer, clt.d_features, cards, "clt", Decoders(layer, summed, cards.label))
    return features_of(handle, dictionaries.at(layer))


def features_of(handle: ModelHandle, d: Dictionary) -> Features:
    """One dictionary's features."""
    directions = _residual_directions(handle, d.sae.W_dec, d.hook_out, d.layer)
    kind = d.hook_out.replace(f"blocks.{d.layer}.", "blocks.*.", 1)
    decoders = Decoders(d.layer, directions, d.cards.label) if directions is not None else None
    return Features(d.key, d.layer, d.d_sae, d.cards, kind, decoders)


def _residual_directions(handle: ModelHandle, w_dec: torch.Tensor, hook: str, layer: int) -> torch.Tensor | None:
    """What each decoder row adds to the residual stream: the row itself when it is the residual's width, the
    row through the layer's W_O for an SAE on the heads' outputs (`attn.hook_z`), else None."""
    if hook.endswith("attn.hook_z"):  # first: GPT-2's heads concatenated are d_model wide too
        w_o = handle.model.W_O[layer]  # (n_heads, d_head, d_model)
        return torch.einsum("fhd,hdm->fm", w_dec.view(w_dec.shape[0], *w_o.shape[:2]).to(w_o), w_o)
    if w_dec.shape[-1] == int(handle.model.cfg.d_model):
        return w_dec
    return None


def card(handle: ModelHandle, layer: int, feature: int) -> FeatureCard | None:
    """Feature `feature`'s card at `layer`: the card file's where the dictionary has one (or just its label),
    with the tokens its decoder promotes and suppresses, its decoder norm and its nearest features. None only
    for a dictionary that writes elsewhere than the residual stream and has neither card files nor labels."""
    here = features_at(handle, layer)
    if not 0 <= feature < here.size:
        raise UsageError(f"feature {feature} does not exist in {here.key}, which has {here.size} features")
    if here.decoders is None:  # nothing to say from the weights: the card files' card, if any
        return here.cards.card(feature)
    found = here.cards.card(feature) or FeatureCard(feature, here.cards.label(feature), None, None, None)
    neighbours = []
    for other in (layer - 1, layer + 1):
        try:
            near = features_at(handle, other)
        except UsageError:
            continue
        if near.kind == here.kind and near.decoders is not None:
            neighbours.append(near.decoders)
    w_u = handle.model.W_U.detach()
    produced = produced_tokens(handle.model.tokenizer, w_u)
    return with_weights(found, layer, here.decoders, neighbours, unembedding(handle), produced, handle.token_strings)


def unembedding(handle: ModelHandle) -> Unembedding:
    """The model's unembedding as `Unembedding` applies it, the final norm's weight and kind read from the model."""
    cfg = handle.model.cfg
    weight = getattr(handle.model.ln_final, "w", None)
    if isinstance(weight, torch.Tensor):
        weight = weight.detach()
        if getattr(cfg, "rmsnorm_uses_offset", False):  # Gemma's norm scales by 1 + w
            weight = weight + 1
    else:
        weight = None
    kind = getattr(cfg, "normalization_type", None)
    return Unembedding(handle.model.W_U.detach(), weight, centred=kind in ("LN", "LNPre"))


def label(handle: ModelHandle, layer: int, feature: int) -> str | None:
    return features_at(handle, layer).cards.label(feature)
