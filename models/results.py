"""What the engine hands to front ends: frozen values on the CPU, never a live
tensor, cache or hook, so a result can cross threads, be kept, and be printed
or serialised after the model has moved on.

Arrays are read-only numpy arrays; `to_json` gives the documented JSON shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lenstop.models.interventions import Intervention, to_dict


def frozen_array(values: Any, dtype: Any) -> np.ndarray:
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


@dataclass(frozen=True)
class TopTokens:
    """The `n` most likely next tokens at every position."""

    ids: np.ndarray  # (seq, n) int64
    probs: np.ndarray  # (seq, n) float32, descending along n
    strings: tuple[tuple[str, ...], ...]  # (seq, n)

    def at(self, position: int) -> tuple[TokenPrediction, ...]:
        return tuple(
            TokenPrediction(s, int(i), float(p))
            for s, i, p in zip(self.strings[position], self.ids[position], self.probs[position], strict=True)
        )

    def to_json(self) -> list[list[dict[str, Any]]]:
        return [
            [{"token": p.token, "id": p.id, "prob": round(p.prob, 6)} for p in self.at(pos)]
            for pos in range(len(self.strings))
        ]


@dataclass(frozen=True)
class LayerFeatures:
    """One dictionary's reading of the prompt.

    `union_ids` holds every feature that is in the top k at some position, and
    `union_acts` its activation at every position, so a front end can shade a
    feature across the whole prompt without another forward pass.
    """

    layer: int
    hook: str
    dictionary: str
    top_ids: np.ndarray  # (seq, k) int64; entries with act 0 are padding
    top_acts: np.ndarray  # (seq, k) float32, descending
    union_ids: np.ndarray  # (n,) int64, sorted
    union_acts: np.ndarray  # (seq, n) float32
    error_norm: np.ndarray  # (seq,) |x - x_hat|
    relative_error: np.ndarray  # (seq,) |x - x_hat| / |x|
    l0: np.ndarray  # (seq,) number of active features
    labels: Mapping[int, str] = field(default_factory=dict)  # labels of the features in union_ids, where known

    def features(self, position: int) -> tuple[FeatureActivation, ...]:
        """The top features at `position`, descending, positive only."""
        return tuple(
            FeatureActivation(int(i), float(a))
            for i, a in zip(self.top_ids[position], self.top_acts[position], strict=True)
            if a > 0
        )

    def activation_of(self, feature: int) -> np.ndarray | None:
        """The feature's activation at every position, if it is in the top k anywhere."""
        index = np.searchsorted(self.union_ids, feature)
        if index < len(self.union_ids) and self.union_ids[index] == feature:
            return self.union_acts[:, index]
        return None

    def to_json(self) -> dict[str, Any]:
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


@dataclass(frozen=True)
class LayerAttention:
    layer: int
    pattern: np.ndarray  # (heads, query, key) float32, rows sum to 1


@dataclass(frozen=True)
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
    kl: np.ndarray | None = None  # (seq,) KL(clean || intervened) in nats
    shifts: tuple[tuple[TokenShift, ...], ...] | None = None  # per position
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, layer: int) -> LayerFeatures | None:
        return next((lf for lf in self.layers if lf.layer == layer), None)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
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

    def to_json(self) -> dict[str, Any]:
        def cont(c: Continuation | None) -> dict[str, Any] | None:
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

    def to_json(self) -> dict[str, Any]:
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

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "dictionaries"}
        doc["dictionaries"] = [d.to_json() for d in self.dictionaries]
        return doc
