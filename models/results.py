"""What the engine hands to front ends: frozen values on the CPU, never a live
tensor, cache or hook, so a result can cross threads, be kept, and be printed
or serialised after the model has moved on.

Arrays are read-only numpy arrays; `to_json` gives the documented JSON shape.
These types, with `lenstop.models.protocol.EngineProtocol`, are the whole seam
between the engine and its front ends: nothing typed `Any` crosses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lenstop.models.head_scores import HeadScores
from lenstop.models.interventions import Intervention, to_dict

Floats = NDArray[np.float32]
Ints = NDArray[np.int64]
JsonObject = dict[str, object]
Scalar = TypeVar("Scalar", bound=np.generic)


def frozen_array(values: ArrayLike, dtype: type[Scalar]) -> NDArray[Scalar]:
    """A read-only copy, so a shared result cannot be edited behind a reader's back."""
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class FeatureActivation:
    id: int
    act: float


@dataclass(frozen=True)
class TokenPrediction:
    token: str
    id: int
    prob: float


@dataclass(frozen=True)
class TokenShift:
    """One token's probability with and without the interventions."""

    token: str
    id: int
    clean_prob: float
    prob: float

    @property
    def delta_logprob(self) -> float:
        tiny = 1e-30
        return float(np.log(max(self.prob, tiny)) - np.log(max(self.clean_prob, tiny)))


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class TopTokens:
    """The `n` most likely next tokens at every position."""

    ids: Ints  # (seq, n)
    probs: Floats  # (seq, n), descending along n
    strings: tuple[tuple[str, ...], ...]  # (seq, n)

    def at(self, position: int) -> tuple[TokenPrediction, ...]:
        return tuple(
            TokenPrediction(s, int(i), float(p))
            for s, i, p in zip(self.strings[position], self.ids[position], self.probs[position], strict=True)
        )

    def to_json(self) -> list[list[JsonObject]]:
        return [
            [{"token": p.token, "id": p.id, "prob": round(p.prob, 6)} for p in self.at(pos)]
            for pos in range(len(self.strings))
        ]


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class LayerFeatures:
    """One dictionary's reading of the prompt.

    `union_ids` holds every feature that is in the top k at some position, and
    `union_acts` its activation at every position, so a front end can shade a
    feature across the whole prompt without another forward pass.
    """

    layer: int
    hook: str
    dictionary: str
    top_ids: Ints  # (seq, k); entries with act 0 are padding
    top_acts: Floats  # (seq, k), descending
    union_ids: Ints  # (n,), sorted
    union_acts: Floats  # (seq, n)
    error_norm: Floats  # (seq,) |x - x_hat|
    relative_error: Floats  # (seq,) |x - x_hat| / |x|
    l0: Ints  # (seq,) number of active features
    # Labels, where known, of the features in union_ids and of those the interventions name.
    labels: Mapping[int, str] = field(default_factory=dict)

    def features(self, position: int) -> tuple[FeatureActivation, ...]:
        """The top features at `position`, descending, positive only."""
        return tuple(
            FeatureActivation(int(i), float(a))
            for i, a in zip(self.top_ids[position], self.top_acts[position], strict=True)
            if a > 0
        )

    def activation_of(self, feature: int) -> Floats | None:
        """The feature's activation at every position, if it is in the top k anywhere."""
        index = np.searchsorted(self.union_ids, feature)
        if index < len(self.union_ids) and self.union_ids[index] == feature:
            return self.union_acts[:, index]
        return None

    def to_json(self) -> JsonObject:
        return {
            "layer": self.layer,
            "hook": self.hook,
            "dictionary": self.dictionary,
            "features": [
                [
                    {
                        "id": f.id,
                        "act": round(f.act, 6),
                        **({"label": self.labels[f.id]} if f.id in self.labels else {}),
                    }
                    for f in self.features(pos)
                ]
                for pos in range(len(self.top_ids))
            ],
            "reconstruction_error": [round(float(e), 6) for e in self.error_norm],
            "relative_error": [round(float(e), 6) for e in self.relative_error],
            "l0": [int(n) for n in self.l0],
        }


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class LayerAttention:
    layer: int
    pattern: Floats  # (heads, query, key), rows sum to 1
    scores: tuple[HeadScores, ...] = ()  # per head: previous-token, duplicate-token and induction scores


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Analysis:
    """Everything one forward pass says about a prompt (plus its clean twin when intervening)."""

    model: str
    prompt: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    layers: tuple[LayerFeatures, ...]  # one per dictionary, in layer order
    attention: tuple[LayerAttention, ...]  # one per model layer
    lens: tuple[TopTokens, ...]  # logit lens of each layer's resid_post
    predictions: TopTokens
    interventions: tuple[Intervention, ...] = ()
    clean_predictions: TopTokens | None = None
    kl: Floats | None = None  # (seq,) KL(clean || intervened) in nats
    shifts: tuple[tuple[TokenShift, ...], ...] | None = None  # per position

    def layer(self, layer: int) -> LayerFeatures | None:
        return next((lf for lf in self.layers if lf.layer == layer), None)

    def attention_at(self, layer: int) -> LayerAttention | None:
        return next((att for att in self.attention if att.layer == layer), None)

    def to_json(self) -> JsonObject:
        doc: JsonObject = {
            "model": self.model,
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": list(self.token_ids),
            "layers": [lf.to_json() for lf in self.layers],
            "predictions": self.predictions.to_json(),
            "logit_lens": [
                {"layer": layer, "top": [pos[0] for pos in top.to_json()]} for layer, top in enumerate(self.lens)
            ],
            "interventions": [to_dict(i) for i in self.interventions],
        }
        if self.clean_predictions is not None:
            doc["clean_predictions"] = self.clean_predictions.to_json()
        if self.kl is not None:
            doc["kl"] = [round(float(k), 6) for k in self.kl]
        return doc


@dataclass(frozen=True)
class Continuation:
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Generation:
    """The same prompt continued with and without the interventions, same seed."""

    model: str
    prompt: str
    clean: Continuation
    intervened: Continuation | None
    interventions: tuple[Intervention, ...]
    temperature: float
    seed: int

    def to_json(self) -> JsonObject:
        def cont(c: Continuation | None) -> JsonObject | None:
            if c is None:
                return None
            return {"text": c.text, "tokens": list(c.tokens), "token_ids": list(c.token_ids)}

        return {
            "model": self.model,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "seed": self.seed,
            "clean": cont(self.clean),
            "intervened": cont(self.intervened),
            "interventions": [to_dict(i) for i in self.interventions],
        }


@dataclass(frozen=True)
class DictionaryInfo:
    key: str
    layer: int
    hook: str
    hook_out: str
    d_in: int
    d_sae: int
    architecture: str
    l0: float | None  # declared or recorded mean L0, None when unknown
    source: str

    def to_json(self) -> JsonObject:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int
    n_params: int
    device: str
    dtype: str
    memory_bytes: int
    processing: str
    prepend_bos: bool
    dictionaries: tuple[DictionaryInfo, ...] = ()

    def to_json(self) -> JsonObject:
        doc = {k: v for k, v in self.__dict__.items() if k != "dictionaries"}
        doc["dictionaries"] = [d.to_json() for d in self.dictionaries]
        return doc
