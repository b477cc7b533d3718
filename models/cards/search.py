"""Finding features, over every loaded dictionary: by label (substring, then fuzzy) or id, by the text they fire
on (a span of a prompt), and by the token they promote. Each answer is a ranked list of `FeatureHit`s, whose
card then opens like any other."""

from __future__ import annotations

import difflib
import re
from typing import Any

import torch

from lenstop.models.cards.api import Features, features_at, features_of, unembedding
from lenstop.models.errors import UsageError
from lenstop.models.feature_cards import FeatureHit
from lenstop.models.runtime.handle import ModelHandle

LIMIT = 20
FUZZY = 0.75  # a query word matches a label word this similar (difflib's ratio)
FEATURE_ID = re.compile(r"^\s*L?(\d+)\s*[:#]\s*(\d+)\s*$", re.IGNORECASE)  # 8:1234, L8:1234, L8#1234


def _all_features(handle: ModelHandle) -> list[Features]:
    """Every dictionary's features, several at a layer included, and a cross-layer transcoder's layers."""
    found = [features_of(handle, d) for d in handle.dictionaries]
    clt = handle.dictionaries.cross_layer
    taken = set(handle.dictionaries.layers)
    if clt is not None:
        found += [features_at(handle, layer) for layer in range(clt.n_layers) if layer not in taken]
    return found


def by_label(handle: ModelHandle, query: str, limit: int = LIMIT) -> list[FeatureHit]:
    """Features whose label holds `query` (case aside; score 1), else whose label's words come close to each of
    its words (the mean of each word's best difflib ratio, at least `FUZZY`). `L:F` is a feature by id."""
    if (m := FEATURE_ID.match(query)) is not None:
        layer, feature = int(m[1]), int(m[2])
        here = features_at(handle, layer)
        if not 0 <= feature < here.size:
            raise UsageError(f"feature {feature} does not exist in {here.key}, which has {here.size} features")
        return [FeatureHit(layer, feature, here.key, 1.0, here.cards.label(feature), "id")]
    words = _words(query)
    if not words:
        raise UsageError("--search needs a word to look for in the labels, or LAYER:FEATURE")
    wanted = query.strip().lower()
    hits: list[FeatureHit] = []
    for here in _all_features(handle):
        for feature, label in here.cards.all_labels().items():
            text = label.lower()
            if wanted in text:
                hits.append(FeatureHit(here.layer, feature, here.key, 1.0, label, "label holds it"))
                continue
            score = _fuzzy(words, _words(text))
            if score >= FUZZY:
                hits.append(FeatureHit(here.layer, feature, here.key, score, label, "label is close"))
    hits.sort(key=lambda h: (-h.score, h.layer, h.feature))
    return hits[:limit]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _fuzzy(query: list[str], label: list[str]) -> float:
    if not label:
        return 0.0
    best = [max(difflib.SequenceMatcher(None, q, w).ratio() for w in label) for q in query]
    return sum(best) / len(best)


def fires_on(handle: ModelHandle, prompt: str, start: int, stop: int, limit: int = LIMIT) -> list[FeatureHit]:
    """The features most active over tokens `start`..`stop - 1` of `prompt` (positions as `lenstop trace` numbers
    them, BOS 0), across every dictionary: scored by their mean activation there as a share of their largest on
    the corpus where cards give one (so layers compare), else of their largest on this prompt."""
    tokens = handle.tokenize(prompt)
    n = tokens.shape[-1]
    if not 0 <= start < stop <= n:
        raise UsageError(f"--span {start}:{stop} is outside the prompt's {n} tokens (0..{n}, BOS at 0)")
    acts = _activations(handle, tokens)
    hits: list[FeatureHit] = []
    for here in _all_features(handle):
        seen = acts[(here.layer, here.key)].float()  # (seq, features)
        mean = seen[start:stop].mean(0)
        maxima = {f: v for f, v in here.cards.max_acts().items() if v > 0}  # a feature that never fired has none
        if maxima:  # its largest on the corpus; a feature without one is left at 0 (inf)
            scale = torch.full((here.size,), float("inf"))
            scale[list(maxima)] = torch.tensor(list(maxima.values()))
            of = "of its max"
        else:  # no corpus pass: its largest on this prompt, so that this dictionary's scores compare too
            scale = seen.max(0).values.clamp_min(1e-6).cpu()
            of = "of its max on this prompt"
        score = mean / scale.to(mean)
        top = torch.topk(score, min(limit, here.size))
        for s, f in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if s > 0:
                why = f"mean {float(mean[f]):.2f} here, {s:.0%} {of}"
                hits.append(FeatureHit(here.layer, f, here.key, float(s), here.cards.label(f), why))
    hits.sort(key=lambda h: (-h.score, h.layer, h.feature))
    return hits[:limit]


def _activations(handle: ModelHandle, tokens: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Every dictionary's activations (seq, features) on `tokens`, by (layer, `Features.key`)."""
    from lenstop.models.cards.build import read_all, readers

    out: dict[tuple[int, str], torch.Tensor] = {}

    def keep(r: Any, acts: torch.Tensor) -> None:
        out[(r.layer, r.dictionary)] = acts[0].detach()

    read_all(handle, readers(handle), tokens, keep)
    return out


def promotes_token(handle: ModelHandle, token_id: int, limit: int = LIMIT) -> list[FeatureHit]:
    """The features whose decoder direction raises token `token_id`'s logit most (the card's logit effect of it),
    across every dictionary that writes to the residual stream."""
    unembed = unembedding(handle)
    column = unembed.w_u[:, token_id].float() - unembed.w_u.float().mean(1)  # (d_model,)
    if unembed.norm_weight is not None:
        column = column * unembed.norm_weight.to(column)
    hits: list[FeatureHit] = []
    for here in _all_features(handle):
        if here.decoders is None:
            continue
        d = here.decoders.directions.float().to(column.device)
        if unembed.centred:
            d = d - d.mean(1, keepdim=True)
        effect = d @ column
        top = torch.topk(effect, min(limit, here.size))
        for v, f in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            hits.append(FeatureHit(here.layer, f, here.key, float(v), here.cards.label(f), f"logit effect {v:+.3f}"))
    hits.sort(key=lambda h: (-h.score, h.layer, h.feature))
    return hits[:limit]


def find(
    handle: ModelHandle,
    *,
    search: str | None = None,
    prompt: str | None = None,
    span: tuple[int, int] | None = None,
    promotes: str | None = None,
    limit: int = LIMIT,
) -> list[FeatureHit]:
    """One of the three searches, as `Engine.find_features` and `lenstop features` take them."""
    from lenstop.models.circuits.metric import token_id

    asked = [search is not None, span is not None, promotes is not None]
    if sum(asked) != 1:
        raise UsageError("say one of --search TEXT, --span A:B (with --prompt), or --promotes TOKEN")
    if search is not None:
        return by_label(handle, search, limit)
    if span is not None:
        if prompt is None:
            raise UsageError("--span A:B needs the --prompt it is a span of")
        return fires_on(handle, prompt, span[0], span[1], limit)
    assert promotes is not None
    return promotes_token(handle, token_id(handle.model.tokenizer, promotes, "--promotes"), limit)
