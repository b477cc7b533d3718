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
    `union_*` its nonzero activations (a sparse column per feature, so what is
    kept grows with the prompt, not with its square), so a front end can shade a
    feature across the whole prompt without another forward pass.
    """

    layer: int
    hook: str
    dictionary: str
    top_ids: Ints  # (seq, k); entries with act 0 are padding
    top_acts: Floats  # (seq, k), descending
    union_ids: Ints  # (n,), sorted
    union_offsets: Ints  # (n + 1,): feature union_ids[i]'s entries are [offsets[i], offsets[i + 1])
    union_positions: Ints  # (nnz,), ascending within each feature
    union_values: Floats  # (nnz,)
    error_norm: Floats  # (seq,) |x - x_hat|
    relative_error: Floats  # (seq,) |x - x_hat| / |x|
    l0: Ints  # (seq,) number of active features
    # Labels, where known, of the features in union_ids and of those the interventions name.
    labels: Mapping[int, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        arrays = (self.top_ids, self.top_acts, self.union_ids, self.union_offsets, self.union_positions)
        rest = (self.union_values, self.error_norm, self.relative_error, self.l0)
        return sum(a.nbytes for a in (*arrays, *rest))

    def features(self, position: int) -> tuple[FeatureActivation, ...]:
        """The top features at `position`, descending, positive only."""
        return tuple(
            FeatureActivation(int(i), float(a))
            for i, a in zip(self.top_ids[position], self.top_acts[position], strict=True)
            if a > 0
        )

    def activation_of(self, feature: int) -> Floats | None:
        """The feature's activation at every position, if it is in the top k anywhere."""
        index = int(np.searchsorted(self.union_ids, feature))
        if index < len(self.union_ids) and self.union_ids[index] == feature:
            start, stop = self.union_offsets[index], self.union_offsets[index + 1]
            dense = np.zeros(len(self.top_ids), dtype=np.float32)
            dense[self.union_positions[start:stop]] = self.union_values[start:stop]
            return dense
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


def sparse_columns(dense: NDArray[np.floating]) -> tuple[Ints, Ints, Floats]:
    """The nonzero entries of each column of a (positions, n) matrix: offsets, positions, values."""
    columns, positions = np.nonzero(dense.T)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(columns, minlength=dense.shape[1]))])
    return (
        frozen_array(offsets, np.int64),
        frozen_array(positions, np.int64),
        frozen_array(dense.T[columns, positions], np.float32),
    )


ATTENTION_TOP = 32  # keys kept per query: every weight of at least 1/32 is among them, and 0.05 is the faintest shade


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class LayerAttention:
    """Each head's strongest keys from each query, not the whole (query, key) square: what an analysis keeps
    grows with the prompt. Every weight of at least 1/`ATTENTION_TOP` is kept, so a view that shades from
    0.05 up (as the heads pane does) is exact. `pattern` is the whole square, when it was asked for."""

    layer: int
    keys: Ints  # (heads, query, k), strongest first
    weights: Floats  # (heads, query, k)
    scores: tuple[HeadScores, ...] = ()  # per head: previous-token, duplicate-token and induction scores
    pattern: Floats | None = None  # (heads, query, key), rows sum to 1

    @property
    def n_heads(self) -> int:
        return int(self.keys.shape[0])

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.weights.nbytes + (self.pattern.nbytes if self.pattern is not None else 0)

    def row(self, head: int, query: int) -> Floats:
        """The head's attention from `query` (negative counts from the end) over keys 0..query: exact with
        `pattern`, else its strongest keys."""
        query = query % self.keys.shape[1]
        if self.pattern is not None:
            return self.pattern[head, query, : query + 1]
        dense = np.zeros(query + 1, dtype=np.float32)
        keys, weights = self.keys[head, query], self.weights[head, query]
        causal = keys <= query
        dense[keys[causal]] = weights[causal]
        return dense

    @classmethod
    def from_pattern(
        cls, layer: int, pattern: Floats, scores: tuple[HeadScores, ...] = (), *, keep: bool = False
    ) -> LayerAttention:
        """From a whole (heads, query, key) pattern; `keep` keeps the square too."""
        k = min(ATTENTION_TOP, pattern.shape[-1])
        keys = np.argsort(-pattern, axis=-1, kind="stable")[..., :k]
        weights = np.take_along_axis(pattern, keys, -1)
        return cls(
            layer,
            frozen_array(keys, np.int64),
            frozen_array(weights, np.float32),
            scores,
            frozen_array(pattern, np.float32) if keep else None,
        )


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Analysis:
    """Everything one forward pass says about a prompt (plus its clean twin when intervening)."""

    model: str
    prompt: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    layers: tuple[LayerFeatures, ...]  # one per dictionary, in layer order
    attention: tuple[LayerAttention, ...]  # one per model layer
    # The logit lens of each layer's resid_post, empty unless asked for (see Engine.logit_lens): each row that of
    # a position, every position's in order unless `lens_positions` names the positions the rows are of.
    lens: tuple[TopTokens, ...]
    predictions: TopTokens
    interventions: tuple[Intervention, ...] = ()
    clean_predictions: TopTokens | None = None
    kl: Floats | None = None  # (seq,) KL(clean || intervened) in nats
    shifts: tuple[tuple[TokenShift, ...], ...] | None = None  # per position
    lens_positions: tuple[int, ...] | None = None  # ascending, when the lens was asked for some positions only

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
        if self.lens_positions is not None:  # each "top" list is of these positions, not of every one
            doc["logit_lens_positions"] = list(self.lens_positions)
        if self.clean_predictions is not None:
            doc["clean_predictions"] = self.clean_predictions.to_json()
        if self.kl is not None:
            doc["kl"] = [round(float(k), 6) for k in self.kl]
        return doc


@dataclass(frozen=True)
class LogitLens:
    """What each layer's residual stream would predict after one position: its top tokens, layer by layer."""

    position: int
    layers: tuple[tuple[TokenPrediction, ...], ...]


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
