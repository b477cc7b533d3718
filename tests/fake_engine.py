"""A fake engine for the app's edge cases: deterministic, instant (or as slow as
asked), no torch; it records every call so tests can assert on what the app asked."""

from __future__ import annotations

import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lenstop.models.cards import Context, FeatureCard
from lenstop.models.errors import LenstopError, NumericError
from lenstop.models.results import (
    Analysis,
    Continuation,
    DictionaryInfo,
    Generation,
    LayerAttention,
    LayerFeatures,
    ModelInfo,
    TokenShift,
    TopTokens,
    frozen_array,
)

VOCAB = ["\n", " return", " +", " first", " second", "(", ")", ":", ",", " def", " x", " y"]
LABELS = {7: "a keyword", 13: "argument name, repeated", 21: "inside a docstring", 42: "after a binary operator"}


def tokenize(prompt: str) -> list[str]:
    return ["<bos>"] + re.findall(r"\s+|\w+|[^\w\s]", prompt)


def _hash(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


@dataclass
class FakeEngine:
    n_layers: int = 3
    n_heads: int = 4
    d_sae: int = 64
    n_ctx: int = 64
    delay_s: float = 0.0
    fail_steer_above: float | None = None  # a steer stronger than this raises a NumericError
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> ModelInfo:
        return ModelInfo(
            name="fake",
            architecture="GPT2LMHeadModel",
            n_layers=self.n_layers,
            d_model=32,
            n_heads=self.n_heads,
            d_head=8,
            n_ctx=self.n_ctx,
            d_vocab=len(VOCAB),
            n_params=1000,
            device="cpu",
            dtype="float32",
            memory_bytes=4000,
            processing="raw",
            prepend_bos=True,
            dictionaries=tuple(
                DictionaryInfo(
                    f"L{layer}",
                    layer,
                    f"blocks.{layer}.hook_resid_post",
                    f"blocks.{layer}.hook_resid_post",
                    32,
                    self.d_sae,
                    "topk",
                    8.0,
                    "fake",
                )
                for layer in range(self.n_layers)
            ),
        )

    def _features(self, tokens: list[str], layer: int, interventions: tuple) -> np.ndarray:
        acts = np.zeros((len(tokens), self.d_sae), dtype=np.float32)
        for pos, tok in enumerate(tokens):
            for rank in range(3):
                acts[pos, (_hash(tok, layer, rank) % (self.d_sae - 1)) + 1] = (
                    3.0 - rank + (_hash(tok, rank) % 100) / 100
                )
            acts[pos, 13] = 4.5 if tokens.count(tok) > 1 and tok.strip() else 0.0
        for iv in interventions:
            if iv.layer == layer and iv.kind in ("ablate", "clamp"):
                sl = slice(None) if iv.position is None else iv.position
                acts[sl, iv.feature] = 0.0 if iv.kind == "ablate" else iv.value
        return acts

    def _predictions(self, tokens: list[str], shift: float, n: int) -> tuple[TopTokens, np.ndarray]:
        logits = np.array([[((_hash(tok, v) % 1000) / 250.0) for v in VOCAB] for tok in tokens], dtype=np.float64)
        logits[:, 1] += shift
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        order = np.argsort(-probs, axis=-1)[:, :n]
        top = TopTokens(
            ids=frozen_array(order, np.int64),
            probs=frozen_array(np.take_along_axis(probs, order, -1), np.float32),
            strings=tuple(tuple(VOCAB[i] for i in row) for row in order),
        )
        return top, probs

    def analyse(
        self, prompt: str, interventions: tuple = (), *, top_k: int = 10, n_predictions: int = 10, **_: Any
    ) -> Analysis:
        with self.lock:
            self.calls.append(("analyse", (prompt, tuple(interventions))))
        if self.delay_s:
            time.sleep(self.delay_s)
        tokens = tokenize(prompt)
        if len(tokens) > self.n_ctx:
            raise LenstopError(f"the prompt is {len(tokens)} tokens but fake's context is {self.n_ctx}; shorten it")
        for iv in interventions:
            if iv.kind == "steer" and self.fail_steer_above is not None and abs(iv.strength) > self.fail_steer_above:
                raise NumericError(
                    "the interventions made the model's output NaN or infinite ("
                    + iv.describe()
                    + "); use a smaller strength or value"
                )
        layers = []
        for layer in range(self.n_layers):
            acts = self._features(tokens, layer, tuple(interventions))
            k = min(top_k, self.d_sae)
            top_ids = np.argsort(-acts, axis=-1, kind="stable")[:, :k]
            top_acts = np.take_along_axis(acts, top_ids, -1)
            union = np.unique(top_ids[top_acts > 0])
            layers.append(
                LayerFeatures(
                    layer=layer,
                    hook=f"blocks.{layer}.hook_resid_post",
                    dictionary=f"L{layer}",
                    top_ids=frozen_array(top_ids, np.int64),
                    top_acts=frozen_array(top_acts, np.float32),
                    union_ids=frozen_array(union, np.int64),
                    union_acts=frozen_array(acts[:, union], np.float32),
                    error_norm=frozen_array(np.linspace(0.1, 1.0, len(tokens)), np.float32),
                    relative_error=frozen_array(np.linspace(0.05, 0.5, len(tokens)), np.float32),
                    l0=frozen_array((acts > 0).sum(-1), np.int64),
                    labels={int(i): LABELS[int(i)] for i in union if int(i) in LABELS},
                )
            )
        seq = len(tokens)
        attention = []
        for layer in range(self.n_layers):
            pattern = np.zeros((self.n_heads, seq, seq), dtype=np.float32)
            for q in range(seq):
                pattern[0, q, max(0, q - 1)] = 1.0  # head 0: previous token
                pattern[1, q, 0] = 1.0  # head 1: BOS
                pattern[2:, q, : q + 1] = 1.0 / (q + 1)
            attention.append(LayerAttention(layer, frozen_array(pattern, np.float32)))
        steer = sum(getattr(iv, "strength", 0.0) for iv in interventions) + 2.0 * sum(
            iv.kind == "ablate" for iv in interventions
        )
        predictions, probs = self._predictions(tokens, steer, n_predictions)
        lens = tuple(
            self._predictions(tokens, steer * (layer + 1) / self.n_layers, n_predictions)[0]
            for layer in range(self.n_layers)
        )
        clean = kl = shifts = None
        if interventions:
            clean, clean_probs = self._predictions(tokens, 0.0, n_predictions)
            kl = frozen_array((clean_probs * (np.log(clean_probs) - np.log(probs))).sum(-1), np.float32)
            shifts = tuple(
                tuple(
                    TokenShift(VOCAB[i], i, float(clean_probs[pos, i]), float(probs[pos, i]))
                    for i in sorted(set(clean.ids[pos]) | set(predictions.ids[pos]))
                )
                for pos in range(seq)
            )
        return Analysis(
            model="fake",
            prompt=prompt,
            tokens=tuple(tokens),
            token_ids=tuple(_hash(t) % 1000 for t in tokens),
            layers=tuple(layers),
            attention=tuple(attention),
            lens=lens,
            predictions=predictions,
            interventions=tuple(interventions),
            clean_predictions=clean,
            kl=kl,
            shifts=shifts,
        )

    def generate(self, prompt: str, interventions: tuple = (), **kwargs: Any) -> Generation:
        with self.lock:
            self.calls.append(("generate", (prompt, tuple(interventions))))
        clean = Continuation((1, 2), (" return", " +"), " return +")
        changed = Continuation((3, 4), (" first", " second"), " first second") if interventions else None
        return Generation("fake", prompt, clean, changed, tuple(interventions), 0.0, 0)

    def label(self, layer: int, feature: int) -> str | None:
        return LABELS.get(feature)

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        with self.lock:
            self.calls.append(("card", (layer, feature)))
        if feature not in LABELS:
            return None
        context = Context(("def", " add", "(", "first", ",", " second"), (0.0, 0.0, 0.0, 1.2, 0.0, 4.5), 5, 4.5)
        return FeatureCard(
            feature, LABELS[feature], 0.012, 2.0, 4.5, (context,), ((" second", 1.5),), ((" def", -0.9),)
        )
