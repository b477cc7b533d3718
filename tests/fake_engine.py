"""A fake engine for the app's edge cases: deterministic, instant (or as slow as
asked), no torch; it records every call so tests can assert on what the app asked.

It implements `EngineProtocol`, and tests/test_conformance.py holds it to the
same contract as the real engine, so the app's tests cannot drift from it.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from lenstop.models.cards.spec import PassOptions, PassResult
from lenstop.models.cards.texts import Corpus
from lenstop.models.circuits.results import (
    Attribution,
    Circuit,
    DirectAttribution,
    Edge,
    FeaturePatch,
    HeadRoles,
    MetricValue,
    NodeScore,
    Patching,
)
from lenstop.models.circuits.spec import CIRCUIT_KINDS, Direction, Metric, Node, NodeKind
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import CancelledError, IncompatibleError, LengthMismatchError, NumericError, UsageError
from lenstop.models.feature_cards import Context, FeatureCard, FeatureHit
from lenstop.models.head_scores import HeadScores, head_scores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout, Intervention
from lenstop.models.protocol import EngineProtocol, Progress

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph, GraphIntervention, GraphNode, LogitTarget, NodeSetting
    from lenstop.models.graphs.influence import Edges
from lenstop.models.results import (
    Analysis,
    Continuation,
    DictionaryInfo,
    Generation,
    LayerAttention,
    LayerFeatures,
    LogitLens,
    ModelInfo,
    TokenShift,
    TopTokens,
    frozen_array,
    sparse_columns,
)

VOCAB = ["\n", " return", " +", " first", " second", "(", ")", ":", ",", " def", " x", " y"]
LABELS = {7: "a keyword", 13: "argument name, repeated", 21: "inside a docstring", 42: "after a binary operator"}
Call = tuple[str, tuple[object, ...]]


def tokenize(prompt: str) -> list[str]:
    return ["<bos>", *re.findall(r"\s+|\w+|[^\w\s]", prompt)]


def _hash(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def _at(position: int | None, seq: int) -> slice | int:
    if position is None:
        return slice(None)
    resolved = position + seq if position < 0 else position
    if not 0 <= resolved < seq:
        raise UsageError(f"position {position} is outside the prompt, which has {seq} tokens")
    return resolved


def _row(position: int, seq: int) -> int:
    at = _at(position, seq)
    assert isinstance(at, int)
    return at


def _from(position: int | None, seq: int) -> int:
    """The first position an intervention can change: itself, or 0 when it applies everywhere."""
    at = _at(position, seq)
    return 0 if isinstance(at, slice) else at


@dataclass
class FakeEngine:
    n_layers: int = 3
    n_heads: int = 4
    d_sae: int = 64
    n_ctx: int = 64
    delay_s: float = 0.0
    full_attention: bool = True  # keep the whole pattern, as the real engine does when asked
    fail_steer_above: float | None = None  # a steer stronger than this raises a NumericError
    calls: list[Call] = field(default_factory=list)
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

    def _check(self, interventions: Sequence[Intervention], seq: int) -> None:
        for iv in interventions:
            if not 0 <= iv.layer < self.n_layers:
                raise UsageError(f"no dictionary at layer {iv.layer}; dictionaries are loaded at layers 0..2")
            if isinstance(iv, HeadKnockout):
                if not 0 <= iv.head < self.n_heads:
                    raise UsageError(f"head {iv.layer}.{iv.head} does not exist")
            elif not 0 <= iv.feature < self.d_sae:
                raise UsageError(f"feature {iv.feature} does not exist in L{iv.layer}, which has {self.d_sae} features")
            _at(iv.position, seq)
            if isinstance(iv, FeatureSteer) and self.fail_steer_above is not None:
                if abs(iv.strength) > self.fail_steer_above:
                    raise NumericError(
                        f"the interventions made the model's output NaN or infinite ({iv.describe()}); "
                        "use a smaller strength or value"
                    )

    def _features(self, tokens: list[str], layer: int, interventions: Sequence[Intervention]) -> NDArray[np.float32]:
        acts = np.zeros((len(tokens), self.d_sae), dtype=np.float32)
        for pos, tok in enumerate(tokens):
            for rank in range(3):
                feature = (_hash(tok, layer, rank) % (self.d_sae - 1)) + 1
                acts[pos, feature] = 3.0 - rank + (_hash(tok, rank) % 100) / 100
            acts[pos, 13] = 4.5 if tokens.count(tok) > 1 and tok.strip() else 0.0
        for iv in interventions:
            if iv.layer == layer and isinstance(iv, FeatureAblation | FeatureClamp):
                acts[_at(iv.position, len(tokens)), iv.feature] = 0.0 if isinstance(iv, FeatureAblation) else iv.value
        return acts

    def _logits(self, tokens: list[str], interventions: Sequence[Intervention], layers: int) -> NDArray[np.float64]:
        """Hash logits, shifted towards " return" by the interventions of the first `layers` layers, from the
        position each applies at onwards (as a causal model would)."""
        logits = np.array([[(_hash(tok, v) % 1000) / 250.0 for v in VOCAB] for tok in tokens], dtype=np.float64)
        for iv in interventions:
            if iv.layer < layers:
                shift = iv.strength if isinstance(iv, FeatureSteer) else 2.0 if isinstance(iv, FeatureAblation) else 1.0
                logits[_from(iv.position, len(tokens)) :, 1] += shift
        return logits

    @staticmethod
    def _top(logits: NDArray[np.float64], n: int) -> tuple[TopTokens, NDArray[np.float64]]:
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :n]
        top = TopTokens(
            ids=frozen_array(order, np.int64),
            probs=frozen_array(np.take_along_axis(probs, order, -1), np.float32),
            strings=tuple(tuple(VOCAB[i] for i in row) for row in order),
        )
        return top, probs

    def _layer(self, tokens: list[str], layer: int, interventions: Sequence[Intervention], top_k: int) -> LayerFeatures:
        acts = self._features(tokens, layer, interventions)
        k = min(top_k, self.d_sae)
        top_ids = np.argsort(-acts, axis=-1, kind="stable")[:, :k]
        top_acts = np.take_along_axis(acts, top_ids, -1)
        union = np.unique(top_ids[top_acts > 0])
        named = {iv.feature for iv in interventions if iv.layer == layer and not isinstance(iv, HeadKnockout)}
        offsets, positions, values = sparse_columns(acts[:, union])
        return LayerFeatures(
            layer=layer,
            hook=f"blocks.{layer}.hook_resid_post",
            dictionary=f"L{layer}",
            top_ids=frozen_array(top_ids, np.int64),
            top_acts=frozen_array(top_acts, np.float32),
            union_ids=frozen_array(union, np.int64),
            union_offsets=offsets,
            union_positions=positions,
            union_values=values,
            error_norm=frozen_array(np.linspace(0.1, 1.0, len(tokens)), np.float32),
            relative_error=frozen_array(np.linspace(0.05, 0.5, len(tokens)), np.float32),
            l0=frozen_array((acts > 0).sum(-1), np.int64),
            labels={i: LABELS[i] for i in sorted({*union.tolist(), *named}) if i in LABELS},
        )

    def _attention(self, seq: int, layer: int, ids: tuple[int, ...]) -> LayerAttention:
        pattern = np.zeros((self.n_heads, seq, seq), dtype=np.float32)
        for q in range(seq):
            pattern[0, q, max(0, q - 1)] = 1.0  # head 0: previous token
            pattern[1, q, 0] = 1.0  # head 1: BOS
            pattern[2:, q, : q + 1] = 1.0 / (q + 1)
        return LayerAttention.from_pattern(layer, pattern, head_scores(pattern, ids), keep=self.full_attention)

    def analyse(
        self,
        prompt: str,
        interventions: Sequence[Intervention] = (),
        *,
        top_k: int = 10,
        n_predictions: int = 10,
        features: bool | Sequence[int] = True,
        attention: bool | Sequence[int] = False,
        lens: bool | Sequence[int] = False,
    ) -> Analysis:
        with self.lock:
            self.calls.append(("analyse", (prompt, tuple(interventions))))
        if self.delay_s:
            time.sleep(self.delay_s)
        tokens = tokenize(prompt)
        seq = len(tokens)
        if seq > self.n_ctx:
            raise IncompatibleError(f"the prompt is {seq} tokens but fake's context is {self.n_ctx}; shorten it")
        self._check(interventions, seq)
        ids = tuple(_hash(t) % 1000 for t in tokens)
        predictions, probs = self._top(self._logits(tokens, interventions, self.n_layers), n_predictions)
        positions = None if isinstance(lens, bool) else tuple(sorted({_row(p, seq) for p in lens}))
        rows = slice(None) if positions is None else list(positions)
        lens_tops = tuple(
            self._top(self._logits(tokens, interventions, layer + 1)[rows], n_predictions)[0]
            for layer in range(self.n_layers)
            if lens is True or positions
        )
        clean = kl = shifts = None
        if interventions:
            clean, clean_probs = self._top(self._logits(tokens, (), self.n_layers), n_predictions)
            kl = frozen_array((clean_probs * (np.log(clean_probs) - np.log(probs))).sum(-1).clip(0), np.float32)
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
            token_ids=ids,
            layers=tuple(self._layer(tokens, layer, interventions, top_k) for layer in self._layers(features)),
            attention=tuple(self._attention(seq, layer, ids) for layer in self._layers(attention)),
            lens=lens_tops,
            predictions=predictions,
            interventions=tuple(interventions),
            clean_predictions=clean,
            kl=kl,
            shifts=shifts,
            lens_positions=positions or None,
        )

    def _layers(self, attention: bool | Sequence[int]) -> list[int]:
        layers = (
            list(range(self.n_layers)) if attention is True else [] if attention is False else sorted(set(attention))
        )
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise UsageError(f"layer {layer} does not exist: fake has layers 0..{self.n_layers - 1}")
        return layers

    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        with self.lock:
            self.calls.append(("features", (prompt, layer, tuple(interventions))))
        if self.delay_s:
            time.sleep(self.delay_s)
        tokens = tokenize(prompt)
        self._check(interventions, len(tokens))
        (layer,) = self._layers([layer])
        return self._layer(tokens, layer, interventions, top_k)

    def attention(self, prompt: str, layer: int, interventions: Sequence[Intervention] = ()) -> LayerAttention:
        with self.lock:
            self.calls.append(("attention", (prompt, layer, tuple(interventions))))
        if self.delay_s:
            time.sleep(self.delay_s)
        tokens = tokenize(prompt)
        self._check(interventions, len(tokens))
        (layer,) = self._layers([layer])
        return self._attention(len(tokens), layer, tuple(_hash(t) % 1000 for t in tokens))

    def logit_lens(
        self, prompt: str, position: int, interventions: Sequence[Intervention] = (), *, n: int = 10
    ) -> LogitLens:
        with self.lock:
            self.calls.append(("logit_lens", (prompt, position, tuple(interventions))))
        tokens = tokenize(prompt)
        at = _at(position, len(tokens))
        assert isinstance(at, int)
        tops = [self._top(self._logits(tokens, interventions, layer + 1), n)[0] for layer in range(self.n_layers)]
        return LogitLens(at, tuple(top.at(at) for top in tops))

    def generate(
        self,
        prompt: str,
        interventions: Sequence[Intervention] = (),
        *,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        with self.lock:
            self.calls.append(("generate", (prompt, tuple(interventions))))
        if max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        self._check(interventions, len(tokenize(prompt)))
        if self.delay_s:
            time.sleep(self.delay_s)
        clean = _continuation(((1, " return"), (2, " +")), max_new_tokens)
        changed = _continuation(((3, " first"), (4, " second")), max_new_tokens) if interventions else None
        return Generation("fake", prompt, clean, changed, tuple(interventions), temperature, seed)

    def find_features(
        self,
        *,
        search: str | None = None,
        prompt: str | None = None,
        span: tuple[int, int] | None = None,
        promotes: str | None = None,
        limit: int = 20,
    ) -> list[FeatureHit]:
        """Label search over the fake's few labels at every layer (the other searches find nothing)."""
        with self.lock:
            self.calls.append(("find_features", (search, prompt, span, promotes)))
        if sum(x is not None for x in (search, span, promotes)) != 1:
            raise UsageError("say one of --search TEXT, --span A:B (with --prompt), or --promotes TOKEN")
        if search is None:
            return []
        hits = [
            FeatureHit(layer, f, f"L{layer}", 1.0, label, "label holds it")
            for layer in range(self.n_layers)
            for f, label in LABELS.items()
            if search.lower() in label.lower()
        ]
        return hits[:limit]

    def build_cards(
        self, corpus: Corpus, options: PassOptions | None = None, progress: Callable[[int, int], None] | None = None
    ) -> PassResult:
        """Reads the corpus's texts and writes nothing: the fake has no weights to make cards of."""
        with self.lock:
            self.calls.append(("build_cards", (corpus.name, options)))
        n = sum(len(text.split()) for text in corpus.texts())
        if progress is not None:
            progress(1, 1)
        return PassResult({}, n, 0, 1, 0.0)

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        with self.lock:
            self.calls.append(("card", (layer, feature)))
        if not 0 <= feature < self.d_sae:
            raise UsageError(f"feature {feature} does not exist in L{layer}, which has {self.d_sae} features")
        if feature not in LABELS:
            return None
        context = Context(("def", " add", "(", "first", ",", " second"), (0.0, 0.0, 0.0, 1.2, 0.0, 4.5), 5, 4.5)
        return FeatureCard(
            feature, LABELS[feature], 0.012, 2.0, 4.5, (context,), ((" second", 1.5),), ((" def", -0.9),)
        )

    # ---------------------------------------------------------------- circuits
    def _metric_value(self, prompt: str, metric: Metric) -> MetricValue:
        tokens = tokenize(prompt)
        at = _at(metric.position, len(tokens))
        assert isinstance(at, int)
        logits = self._logits(tokens, (), self.n_layers)[at]

        def token(text: str | None, what: str) -> int | None:
            if text is None:
                return None
            if text.startswith("#") and text[1:].isdigit() and int(text[1:]) < len(VOCAB):
                return int(text[1:])
            if text not in VOCAB:
                raise UsageError(f"{what} {text!r} is not one token; name a single token or #ID")
            return VOCAB.index(text)

        target = token(metric.target, "--target")
        target = int(np.argmax(logits)) if target is None else target
        wrong = token(metric.wrong, "--wrong")
        if wrong == target:
            raise UsageError("the wrong token is the target itself; name another token")
        if wrong is not None:
            value = float(logits[target] - logits[wrong])
        else:
            value = float(logits[target] - np.log(np.exp(logits).sum()))
        return MetricValue(at, VOCAB[target], target, None if wrong is None else VOCAB[wrong], wrong, value)

    def _pair(self, prompt: str, corrupt: str | None) -> None:
        if corrupt is not None and len(tokenize(corrupt)) != len(tokenize(prompt)):
            raise LengthMismatchError(
                f"the clean prompt is {len(tokenize(prompt))} tokens and the corrupted one {len(tokenize(corrupt))}",
                tokenize(prompt),
                tokenize(corrupt),
            )

    def _nodes(self, prompt: str, limit: Node | None, metric: MetricValue) -> list[NodeScore]:
        """Every node upstream of `limit` (or of the metric's position), with a deterministic attribution."""
        tokens = tokenize(prompt)
        last = metric.position if limit is None or limit.position is None else limit.position
        top_layer = self.n_layers if limit is None or limit.layer is None else limit.layer
        out: list[NodeScore] = []
        for pos in range(last + 1):
            acts = {layer: self._features(tokens, layer, ()) for layer in range(top_layer)}
            for layer in range(top_layer):
                for feature in np.nonzero(acts[layer][pos])[0].tolist():
                    node = Node("feature", layer, pos, feature=feature)
                    out.append(
                        NodeScore(node, self._score(node), float(acts[layer][pos, feature]), LABELS.get(feature))
                    )
                out.append(NodeScore(Node("error", layer, pos), self._score(Node("error", layer, pos))))
                out.append(NodeScore(Node("mlp", layer, pos), self._score(Node("mlp", layer, pos))))
                for head in range(self.n_heads):
                    node = Node("head", layer, pos, head=head)
                    out.append(NodeScore(node, self._score(node)))
            out.append(NodeScore(Node("embed", None, pos), self._score(Node("embed", None, pos))))
        return [s for s in out if s.node != limit]

    @staticmethod
    def _score(node: Node) -> float:
        base = ((_hash(node) % 2001) - 1000) / 500.0
        if node.kind == "head" and (node.layer, node.head) in ((1, 1), (0, 0)):
            base = 3.0 + base / 10  # the fake's circuit: L0.H0 feeds L1.H1, as the real demo's
        if node.kind == "embed" and node.position == 1:
            base = 4.0 + base / 10  # and one strong input
        return base

    def attribute(
        self,
        prompt: str,
        metric: Metric = Metric(),
        *,
        corrupt: str | None = None,
        path: Sequence[Node] = (),
        top: int | None = 30,
        steps: int = 0,
        real: int = 0,
    ) -> Attribution:
        with self.lock:
            self.calls.append(("attribute", (prompt, metric, corrupt, tuple(path), steps)))
        return self._attribute(prompt, metric, corrupt=corrupt, path=path, top=top, steps=steps, real=real)

    def _attribute(
        self,
        prompt: str,
        metric: Metric,
        *,
        corrupt: str | None = None,
        path: Sequence[Node] = (),
        top: int | None = 30,
        steps: int = 0,
        real: int = 0,
    ) -> Attribution:
        if self.delay_s:
            time.sleep(self.delay_s)
        self._pair(prompt, corrupt)
        mv = self._metric_value(prompt, metric)
        target = path[-1] if path else None
        if target is not None and not target.followable:
            raise UsageError(f"{target.describe()} is an input of the graph: nothing upstream explains it")
        if real and path:
            raise UsageError("real effects are measured on the metric; go back to it to measure them")
        scores = sorted(self._nodes(prompt, target, mv), key=lambda s: -abs(s.attribution))
        totals = np.zeros((self.n_layers, self.n_heads))
        for sc in scores:
            if sc.node.kind == "head" and sc.node.layer is not None and sc.node.head is not None:
                totals[sc.node.layer, sc.node.head] += sc.attribution
        kept = scores[:top] if top is not None else scores
        real_of = {sc.node: sc.attribution * 1.25 for sc in kept[:real]}  # the fake's "measured" effects
        if corrupt is not None:  # a feature's activation on the corrupted run too, as the engine gives it
            theirs = {layer: self._features(tokenize(corrupt), layer, ()) for layer in range(self.n_layers)}
            kept = [
                replace(sc, corrupt_activation=float(theirs[sc.node.layer][sc.node.position, sc.node.feature]))
                if sc.node.kind == "feature"
                and sc.node.layer is not None
                and sc.node.position is not None
                and sc.node.feature is not None
                else sc
                for sc in kept
            ]
        return Attribution(
            model="fake",
            prompt=prompt,
            tokens=tuple(tokenize(prompt)),
            metric=mv,
            path=tuple(path),
            method=f"integrated-gradients:{steps}" if steps else "gradient",
            corrupt_prompt=corrupt,
            nodes=tuple(kept),
            head_totals=frozen_array(totals, np.float32),
            target_value=mv.clean if target is None else self._score(target),
        ).with_real(real_of)

    def effects(
        self, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
    ) -> tuple[float, ...]:
        with self.lock:
            self.calls.append(("effects", (prompt, tuple(nodes))))
        self._pair(prompt, corrupt)
        return tuple(self._score(n) * 1.25 for n in nodes)

    def direct(self, prompt: str, metric: Metric = Metric(), *, sources: bool = False) -> DirectAttribution:
        mv = self._metric_value(prompt, metric)
        heads = np.array(
            [
                [self._score(Node("head", lay, mv.position, head=h)) for h in range(self.n_heads)]
                for lay in range(self.n_layers)
            ]
        )
        mlps = np.array([self._score(Node("mlp", lay, mv.position)) for lay in range(self.n_layers)])
        embed, bias = 0.5, -0.25
        normaliser = mv.clean - (embed + heads.sum() + mlps.sum() + bias)
        seq = len(tokenize(prompt))
        spread = np.repeat(heads[:, :, None] / seq, seq, axis=2) if sources else None
        return DirectAttribution(
            mv,
            mv.clean,
            embed,
            frozen_array(heads, np.float32),
            frozen_array(mlps, np.float32),
            bias,
            normaliser,
            None if spread is None else frozen_array(spread, np.float32),
        )

    def patch(
        self,
        clean: str,
        corrupt: str,
        metric: Metric = Metric(),
        *,
        direction: Direction = "clean->corrupt",
        head_positions: bool = True,
        features: int = 50,
        progress: Callable[[float], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Patching:
        with self.lock:
            self.calls.append(("patch", (clean, corrupt, metric, direction)))
        if direction not in ("clean->corrupt", "corrupt->clean"):
            raise UsageError(f"--direction {direction!r}: expected clean->corrupt or corrupt->clean")
        self._pair(clean, corrupt)
        mv = self._metric_value(clean, metric)
        # The fake reads each token alone, so the corrupted prompt's metric is made to differ by hand.
        other = self._metric_value(corrupt, Metric(metric.position, mv.target, mv.wrong)).clean
        other -= 0.0 if corrupt == clean else 1.0 + (_hash(corrupt) % 100) / 100
        if abs(mv.clean - other) < 1e-6:
            raise UsageError(f"{mv.describe()} is the same on both prompts: there is no difference to patch")
        seq = len(tokenize(clean))
        steps = 4
        for step in range(steps):
            if cancelled is not None and cancelled():
                raise CancelledError("patching cancelled")
            if self.delay_s:
                time.sleep(self.delay_s / steps)
            if progress is not None:
                progress((step + 1) / steps)

        def grid(*shape: int) -> NDArray[np.float32]:
            values = np.array([(_hash(clean, shape, i) % 1000) / 1000.0 for i in range(int(np.prod(shape)))])
            return frozen_array(values.reshape(shape), np.float32)

        heads = np.zeros((self.n_layers, self.n_heads))
        heads[0, 0], heads[1, 1] = 0.95, 0.9
        runs = [self._features(tokenize(p), 0, ()) for p in (clean, corrupt)]

        def acts(feature: int) -> tuple[float, float]:
            return float(runs[0][seq - 1, feature]), float(runs[1][seq - 1, feature])

        return Patching(
            clean_prompt=clean,
            corrupt_prompt=corrupt,
            tokens=tuple(tokenize(clean)),
            corrupt_tokens=tuple(tokenize(corrupt)),
            metric=mv,
            clean_metric=mv.clean,
            corrupt_metric=other,
            direction=direction,
            resid=grid(self.n_layers, seq),
            resid_estimate=grid(self.n_layers, seq),
            heads=frozen_array(heads, np.float32),
            heads_estimate=frozen_array(heads * 0.8, np.float32),
            head_positions=grid(self.n_layers, self.n_heads, seq) if head_positions else None,
            head_positions_estimate=grid(self.n_layers, self.n_heads, seq) if head_positions else None,
            features=tuple(
                FeaturePatch(0, seq - 1, f, 0.5, 0.4, LABELS.get(f), *acts(f)) for f in sorted(LABELS)[:features]
            ),
        )

    def head_roles(self, *, refresh: bool = False) -> HeadRoles:
        def scores(layer: int, head: int) -> HeadScores:
            if (layer, head) == (0, 0):
                return HeadScores(0.9, 0.0, 0.0)
            if (layer, head) == (1, 1):
                return HeadScores(0.05, 0.02, 0.8)
            return HeadScores(0.1, 0.01, 0.01)

        return HeadRoles(
            "fake", tuple(tuple(scores(lay, h) for h in range(self.n_heads)) for lay in range(self.n_layers)), 8, 30
        )

    def _graph_targets(self, tokens: list[str], targets: Sequence[str]) -> tuple[list[float], list[LogitTarget]]:
        """The last position's logits, and the targets: the tokens named, or the top ones up to 95%."""
        from lenstop.models.graphs import LogitTarget

        logits = self._logits(tokens, (), self.n_layers)[-1]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if targets:
            unknown = [t for t in targets if t not in VOCAB]
            if unknown:
                raise UsageError(f"{unknown[0]!r} is not a token of the fake's vocabulary")
            ids = [VOCAB.index(t) for t in targets]
        else:
            order = np.argsort(-probs, kind="stable")
            cut = int(np.searchsorted(np.cumsum(probs[order]), 0.95)) + 1
            ids = [int(i) for i in order[: min(cut, 3)]]
        chosen = [LogitTarget(VOCAB[i], i, float(probs[i]), float(probs[i])) for i in ids]
        return [float(x) for x in logits], chosen

    def graph(
        self,
        prompt: str,
        *,
        targets: Sequence[str] = (),
        wrong: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options: float | None,
    ) -> AttributionGraph:
        """A synthetic graph (`fake_graph`) of the prompt's tokens, for the targets named or the top ones."""
        with self.lock:
            self.calls.append(("graph", (prompt, tuple(targets), wrong, tuple(sorted(options.items())))))
        if self.delay_s:
            time.sleep(self.delay_s)
        tokens = tokenize(prompt)
        if len(tokens) < 2:
            raise UsageError("a graph needs a token after the BOS: its features are zero at position 0")
        _, chosen = self._graph_targets(tokens, targets)
        ids = [_hash(t) % 1000 for t in tokens]
        return fake_graph(prompt, tokens, ids, chosen, self.n_layers, self.d_sae)

    def intervene_graph(
        self, graph: AttributionGraph, settings: Sequence[NodeSetting], *, freeze_attention: bool = True
    ) -> GraphIntervention:
        with self.lock:
            self.calls.append(("intervene_graph", (graph.prompt, tuple(settings), freeze_attention)))
        logits, _ = self._graph_targets(list(graph.tokens), ())
        return fake_intervention(graph, settings, freeze_attention, logits, VOCAB)

    def export_graph(self, graph: AttributionGraph | Circuit, path: Path, neuronpedia: str | None = None) -> list[Path]:
        """A circuit's graph JSON, or a graph's `lenstop graph --json` document, at `path` (the real engine writes
        the viewer's files, with feature files the fake's features, having no decoder, cannot have)."""
        from lenstop.models.circuits.export import graph_json
        from lenstop.models.files import write_json

        with self.lock:
            self.calls.append(("export_graph", (graph.prompt, path, neuronpedia)))
        return [write_json(path, graph_json(graph, path.stem) if isinstance(graph, Circuit) else graph.as_json())]

    def circuit(
        self,
        prompt: str,
        metric: Metric = Metric(),
        *,
        corrupt: str | None = None,
        node_threshold: float = 0.1,
        edge_threshold: float = 0.1,
        max_children: int = 6,
        max_nodes: int = 24,
        kinds: Sequence[NodeKind] = CIRCUIT_KINDS,
        steps: int = 0,
    ) -> Circuit:
        with self.lock:
            self.calls.append(("circuit", (prompt, metric, corrupt, steps)))
        found = self._attribute(prompt, metric, corrupt=corrupt, top=None)
        ranked = [sc for sc in found.nodes if sc.node.kind in kinds]
        floor = node_threshold * abs(ranked[0].attribution) if ranked else 0.0
        chosen = [sc for sc in ranked[:max_nodes] if abs(sc.attribution) >= floor]
        picked = {sc.node for sc in chosen}
        edges = []
        feeding: set[Node] = set()
        for sc in chosen:
            if sc.node.followable:
                upstream = [u for u in self._nodes(prompt, sc.node, found.metric) if u.node in picked][:max_children]
                edges += [Edge(u.node, sc.node, u.attribution) for u in upstream]
                feeding |= {u.node for u in upstream}
        edges += [Edge(sc.node, None, sc.attribution) for sc in chosen if sc.node not in feeding]
        return Circuit(
            "fake",
            prompt,
            tuple(tokenize(prompt)),
            tuple(_hash(t) % 1000 for t in tokenize(prompt)),
            found.metric,
            0.5,
            tuple(chosen),
            tuple(edges),
            node_threshold,
            edge_threshold,
            self.n_layers,
        )


def _continuation(pairs: tuple[tuple[int, str], ...], n: int) -> Continuation:
    ids, strings = zip(*pairs[:n], strict=True)
    return Continuation(tuple(ids), tuple(strings), "".join(strings))


@dataclass
class FakeFactory:
    """Stands in for `EngineSpec.load` in the app: hands over `engine`, or raises `error`, and remembers each spec."""

    engine: EngineProtocol | None = None
    error: Exception | None = None
    steps: tuple[str, ...] = ()
    specs: list[EngineSpec] = field(default_factory=list)

    def __call__(self, spec: EngineSpec, progress: Progress) -> EngineProtocol:
        self.specs.append(spec)
        for step in self.steps:
            progress(step)
        if self.error is not None:
            raise self.error
        return self.engine if self.engine is not None else FakeEngine()


if TYPE_CHECKING:  # .ci/typecheck holds the fake to the Protocol statically, test_conformance.py at run time
    _conforms: type[EngineProtocol] = FakeEngine


# ---------------------------------------------------------------- a synthetic attribution graph
# Real `AttributionGraph` values (influence, pruning and scores by lenstop's own influence.py) from the fake's
# tokens, so that the app's graph view runs end to end without a model. torch is imported here only.


def _weight(*parts: object) -> float:
    return ((_hash(*parts) % 200) - 50) / 100  # mostly positive, some negative


def _graph_features(tokens: Sequence[str], n_layers: int, d_sae: int) -> list[GraphNode]:
    from lenstop.models.graphs import GraphNode

    nodes = []
    for layer in range(n_layers):
        for position in range(1, len(tokens)):
            ids = sorted({(_hash(tokens[position], layer, rank) % (d_sae - 1)) + 1 for rank in range(2)})
            if layer == n_layers - 1 and position == len(tokens) - 1:
                ids = sorted({*ids, 42})  # a labelled feature where the logits read
            for feature in ids:
                act = 1.0 + (_hash(tokens[position], layer, feature) % 300) / 100
                nodes.append(GraphNode("feature", layer, position, feature, act, 0.0, LABELS.get(feature, "")))
    return nodes


def _graph_edges(nodes: list[GraphNode], n_features: int, n_layers: int, n_pos: int) -> Edges:
    """Sources always sit lower (or are inputs) and no later: the graph is acyclic."""
    import torch

    from lenstop.models.graphs.influence import Edges

    error = lambda layer, pos: n_features + layer * n_pos + pos  # noqa: E731
    embed = lambda pos: n_features + n_layers * n_pos + pos  # noqa: E731
    edges: list[tuple[int, int, float]] = []
    for t, node in enumerate(nodes[:n_features]):
        layer, pos = node.layer, node.position
        for p in {pos, pos - 1}:
            edges.append((t, embed(p), _weight(t, "emb", p) + 0.6))
        if layer > 0:
            edges.append((t, error(layer - 1, pos), _weight(t, "err")))
        for s, below in enumerate(nodes[:n_features]):
            if below.layer < layer and below.position <= pos and _hash(t, s) % 3 == 0:
                edges.append((t, s, _weight(t, s)))
    first_logit = n_features + (n_layers + 1) * n_pos
    for t in range(first_logit, len(nodes)):
        for s, source in enumerate(nodes[:n_features]):
            if source.position == n_pos - 1 or (_hash(t, s) % 5 == 0):
                edges.append((t, s, _weight(t, s) + 0.3))
        for layer in range(n_layers):
            edges.append((t, error(layer, n_pos - 1), _weight(t, "err", layer) / 2))
        edges.append((t, embed(n_pos - 1), 0.4))
    targets, sources, weights = ([e[i] for e in edges] for i in range(3))
    return Edges(torch.tensor(targets), torch.tensor(sources), torch.tensor(weights, dtype=torch.float32), len(nodes))


def fake_graph(
    prompt: str,
    tokens: Sequence[str],
    token_ids: Sequence[int],
    targets: Sequence[LogitTarget],
    n_layers: int,
    d_sae: int,
) -> AttributionGraph:
    """A synthetic graph of `tokens`: two features at every (layer, position) past the first, each fed by
    the embeddings at its position and the one before, by some features and the error below it; the logits
    read the last position's features and errors and a few others. Every weight is a hash of its ends."""
    import torch

    from lenstop.models.graphs import AttributionGraph, GraphNode, Pruned
    from lenstop.models.graphs.influence import logit_weights, node_influence, prune, scores

    n_pos = len(tokens)
    features = _graph_features(tokens, n_layers, d_sae)
    n_features = len(features)
    errors = [GraphNode("error", layer, p, None, None, 0.0) for layer in range(n_layers) for p in range(n_pos)]
    embeds = [GraphNode("embed", 0, p, token_ids[p], None, 0.0, tokens[p]) for p in range(n_pos)]
    logits = [GraphNode("logit", n_layers, n_pos - 1, t.id, None, 0.0, t.token) for t in targets]
    nodes = [*features, *errors, *embeds, *logits]
    edges = _graph_edges(nodes, n_features, n_layers, n_pos)
    weights = logit_weights(len(nodes), torch.tensor([t.weight for t in targets]))
    influence = node_influence(edges, weights)
    nodes = [
        GraphNode(n.kind, n.layer, n.position, n.feature, n.activation, float(i), n.label)
        for n, i in zip(nodes, influence.tolist(), strict=True)
    ]
    error_slice = slice(n_features, n_features + n_layers * n_pos)
    token_slice = slice(error_slice.stop, error_slice.stop + n_pos)
    replacement, completeness = scores(edges, weights, error_slice, token_slice)
    pruning = prune(edges, weights, n_features, n_pos + len(targets), 0.8, 0.98)
    kept = scores(edges.where(pruning.edges), weights, error_slice, token_slice)
    pruned = Pruned(
        tuple(torch.nonzero(pruning.nodes).squeeze(1).tolist()), pruning.edges, pruning.cumulative, *kept, 0.8, 0.98
    )
    return AttributionGraph(
        prompt,
        tuple(tokens),
        tuple(token_ids),
        tuple(targets),
        tuple(nodes),
        edges,
        n_layers,
        n_features,
        replacement,
        completeness,
        pruned,
        "fake-scan",
        "transcoder_set",
    )


def fake_intervention(
    graph: AttributionGraph,
    settings: Sequence[NodeSetting],
    freeze_attention: bool,
    logits: list[float],
    vocab: Sequence[str],
) -> GraphIntervention:
    """The targets moved by each setting's change of activation times its node's influence (less when
    attention is recomputed, which lets some of the change spread elsewhere)."""
    import torch

    from lenstop.models.graphs import GraphIntervention, TargetChange

    shift = 0.0
    for s in settings:
        node = next(
            (
                n
                for n in graph.nodes
                if n.kind == "feature" and (n.layer, n.position, n.feature) == (s.layer, s.position, s.feature)
            ),
            None,
        )
        if node is None or node.activation is None:
            raise UsageError(f"L{s.layer} #{s.feature}@{s.position} is not a feature node of this graph")
        shift += (s.value - node.activation) * (1.0 + 10 * node.influence)
    shift *= 1.0 if freeze_attention else 0.7
    new = list(logits)
    for rank, t in enumerate(graph.targets):
        new[t.id] += shift if rank == 0 else -shift / 2
    clean_p, new_p = torch.tensor(logits).softmax(-1), torch.tensor(new).softmax(-1)
    changes = tuple(
        TargetChange(t.token, t.id, logits[t.id], new[t.id], float(clean_p[t.id]), float(new_p[t.id]))
        for t in graph.targets
    )
    top = torch.topk(new_p, min(5, len(vocab)))
    tops = tuple((vocab[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True))
    return GraphIntervention(tuple(settings), freeze_attention, changes, tops)
