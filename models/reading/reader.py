"""Reading a prompt: its predictions, its dictionaries' features, its layers' attention and the logit lens,
each kept for reuse in one `ReadingCache`.

An analysis runs in four phases: plan what is kept and what is missing, one pass that reads what is
missing, store what later calls reuse, and assemble the frozen result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch

from lenstop.models.attention import ScoreMasks, summarise
from lenstop.models.dictionaries import Dictionary
from lenstop.models.interventions import Intervention
from lenstop.models.prompts import resolve_position
from lenstop.models.reading import lens as lenses
from lenstop.models.reading.cache import Kept, ReadingCache, kept_for
from lenstop.models.reading.distribution import CleanDistribution, CleanLogits, logsumexp, ranked, shifts, top_tokens
from lenstop.models.reading.features import attention_key, features_key, layer_features, named_features
from lenstop.models.reading.passes import Passes, Replay
from lenstop.models.replay import Outputs, resid_post
from lenstop.models.results import Analysis, LayerAttention, LayerFeatures, LogitLens, TopTokens
from lenstop.models.runtime.handle import EnoughRead, ModelHandle, check_finite_output
from lenstop.models.runtime.run_plan import Capture

K = TypeVar("K")
T = TypeVar("T")


@dataclass
class AnalysisPlan:
    """What an analysis found kept, and what its pass must read (phase 1); the pass fills in the rest."""

    tokens: torch.Tensor  # (1, seq)
    ids: tuple[int, ...]
    interventions: tuple[Intervention, ...]
    top_k: int
    full_attention: bool
    lens: tuple[int, ...] | None  # the positions of the lens asked for; None: every position
    layers: list[int]  # whose attention is asked for, in order
    attention: dict[int, LayerAttention]  # by layer: those kept, then those the pass reads
    missing: list[int]  # the layers whose attention the pass reads
    dictionaries: list[Dictionary]  # whose features are asked for, in layer order
    features: dict[str, LayerFeatures]  # by dictionary key: those kept, then those the pass reads
    to_read: list[Dictionary]  # the dictionaries whose features the pass reads
    replay: Replay | None  # the clean block outputs the pass replays
    record: Outputs | None  # where a clean pass records its block outputs


class Read(NamedTuple):
    """What the pass made (phase 2): the logits, normalised, and what its hooks captured."""

    logits: torch.Tensor  # (seq, vocab), in the model's dtype
    lse: torch.Tensor  # (seq, 1), float32
    predictions: TopTokens
    capture: Capture


class Reader:
    """Reads prompts on one model handle, keeping what it read for the next call."""

    def __init__(self, handle: ModelHandle) -> None:
        self.handle = handle
        self.cache = ReadingCache()
        self.passes = Passes(handle, self.cache)
        handle.on_out_of_memory.append(self.cache.forget)  # what it holds goes with the failed pass's frames

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
        full_attention: bool = False,
    ) -> Analysis:
        """`Engine.analyse`: one pass (two with interventions, the clean one kept per prompt)."""
        tokens = self.handle.tokenize(prompt)
        asked = range(self.handle.n_layers) if attention is True or full_attention else attention
        plan = self._plan(tokens, tuple(interventions), top_k, features, asked, full_attention, lens)
        read = self._pass(plan, n_predictions)
        resid = self._store(plan, read)
        return self._assemble(prompt, plan, read, resid, n_predictions)

    # 1. plan: what is kept, what the pass must read, and which blocks it may replay
    def _plan(
        self,
        tokens: torch.Tensor,
        interventions: tuple[Intervention, ...],
        top_k: int,
        features: bool | Sequence[int],
        attention: bool | Sequence[int],
        full_attention: bool,
        lens: bool | Sequence[int],
    ) -> AnalysisPlan:
        ids = _ids(tokens)
        layers = self._layers_asked(attention)
        kept_attention = _found(
            {
                layer: self.cache.attention.get(attention_key(ids, interventions, layer), full=full_attention)
                for layer in layers
            }
        )
        chosen = self._dictionaries_asked(features)
        kept_features = _found(
            {d.key: self.cache.features.get(features_key(ids, interventions, d, top_k)) for d in chosen}
        )
        missing = [layer for layer in layers if layer not in kept_attention]
        to_read = [d for d in chosen if d.key not in kept_features]
        # Blocks before the first layer this pass must touch (an intervention's, or one still to read) compute
        # what they did on the clean prompt: replayed, if the last clean analysis was of this prompt.
        touched = [*(iv.layer for iv in interventions), *missing, *(d.layer for d in to_read)]
        replay = self.passes.replay(ids, min(touched, default=self.handle.n_layers))
        return AnalysisPlan(
            tokens=tokens,
            ids=ids,
            interventions=interventions,
            top_k=top_k,
            full_attention=full_attention,
            lens=lenses.positions_asked(lens, len(ids)),
            layers=layers,
            attention=kept_attention,
            missing=missing,
            dictionaries=chosen,
            features=kept_features,
            to_read=to_read,
            replay=replay,
            record={} if not interventions and replay is None else None,
        )

    # 2. the pass: one forward pass that reads what is missing, its predictions normalised
    def _pass(self, plan: AnalysisPlan, n_predictions: int) -> Read:
        masks = ScoreMasks.of(plan.tokens[0]) if plan.missing else None

        def on_attention(layer: int, pattern: torch.Tensor) -> None:
            assert masks is not None
            plan.attention[layer] = summarise(layer, pattern, masks, keep=plan.full_attention)  # NaN: in the logits

        logits, run = self.passes.run(
            plan.tokens,
            plan.interventions,
            capture=[d.key for d in plan.to_read],
            top_k=plan.top_k,
            on_attention=on_attention,
            attention_layers=plan.missing,
            lens=True,  # every layer's residual stream: kept, for one position's lens later
            record=plan.record,
            replay=plan.replay,
        )
        lse = logsumexp(logits)  # (seq, 1): normalises the predictions, and the KL's second term
        predictions = top_tokens(self.handle, *ranked(logits, n_predictions, lse))  # in the model's dtype: no copy
        return Read(logits, lse, predictions, run.capture)

    # 3. store: the layers read, the clean blocks and logits, the residual streams
    def _store(self, plan: AnalysisPlan, read: Read) -> dict[int, torch.Tensor]:
        for layer in plan.missing:
            self.cache.attention.put(attention_key(plan.ids, plan.interventions, layer), plan.attention[layer])
        named = named_features(plan.interventions)
        for d in plan.to_read:
            plan.features[d.key] = layer_features(d, read.capture, named.get(d.layer, set()))
            self.cache.features.put(features_key(plan.ids, plan.interventions, d, plan.top_k), plan.features[d.key])
        resid = read.capture.resid
        if plan.replay is not None:  # the replayed blocks' hooks did not run: their residual streams are the clean ones
            outputs, upto = plan.replay
            resid = {**{layer: resid_post(outputs[layer]) for layer in range(upto) if layer not in resid}, **resid}
        if plan.record is not None:
            self.cache.blocks = Kept(plan.ids, plan.record)
        self.cache.lens = Kept((plan.ids, plan.interventions), resid)
        clean = self.cache.clean  # read once: another thread may replace it
        if not plan.interventions and (clean is None or clean.key[0] != plan.ids):
            self.cache.clean_logits = Kept(plan.ids, CleanLogits(read.logits, read.lse, read.predictions))
        return resid

    # 4. assemble: the lens asked for, the comparison with the clean prompt, the frozen result
    def _assemble(
        self, prompt: str, plan: AnalysisPlan, read: Read, resid: dict[int, torch.Tensor], n_predictions: int
    ) -> Analysis:
        clean_predictions = kl = changed = None
        if plan.interventions:
            clean = self._clean_distribution(plan.tokens, plan.ids, n_predictions)
            clean_predictions, kl = clean.top, clean.kl(read.logits, read.lse)
            changed = shifts(self.handle, clean, read.logits, read.lse[:, 0], read.predictions)
        return Analysis(
            model=self.handle.name,
            prompt=prompt,
            tokens=tuple(self.handle.token_strings(plan.ids)),
            token_ids=plan.ids,
            layers=tuple(plan.features[d.key] for d in plan.dictionaries),
            attention=tuple(plan.attention[layer] for layer in plan.layers),
            lens=lenses.every_layer(self.handle, resid, n_predictions, plan.lens),
            predictions=read.predictions,
            interventions=plan.interventions,
            clean_predictions=clean_predictions,
            kl=kl,
            shifts=changed,
            lens_positions=plan.lens or None,
        )

    def _clean_distribution(self, tokens: torch.Tensor, ids: tuple[int, ...], n: int) -> CleanDistribution:
        """The clean prompt's next-token distribution, what every intervened analysis compares with; kept."""
        found = kept_for(self.cache.clean, (ids, n))  # each field read once: another thread may replace it
        if found is not None:
            return found
        kept = kept_for(self.cache.clean_logits, ids)
        if kept is not None:
            logits, lse, top = kept
        else:  # after a clean analysis of another prompt's: its recorded blocks, unembedded
            logits, _ = self.passes.run(tokens, (), replay=self.passes.replay(ids, self.handle.n_layers))
            lse, top = logsumexp(logits), None
        if top is None or top.ids.shape[1] != min(n, logits.shape[-1]):  # the clean analysis's, if as many
            top = top_tokens(self.handle, *ranked(logits, n, lse))
        clean = CleanDistribution.of(logits, lse, top)
        self.cache.clean, self.cache.clean_logits = Kept((ids, n), clean), None
        return clean

    # ------------------------------------------------------------------ one layer, one position
    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        """`Engine.features`: read by a pass that stops once the dictionary has read its input."""
        tokens = self.handle.tokenize(prompt)
        ids = _ids(tokens)
        (layer,) = self._layers_asked([layer])
        d = self.handle.dictionaries.at(layer, first=True)
        key = features_key(ids, interventions, d, top_k)
        if (found := self.cache.features.get(key)) is not None:
            return found
        upstream = key[1]

        def stop(activation: torch.Tensor, hook: Any) -> None:  # after the dictionary's own hooks
            raise EnoughRead(check_finite_output(activation, upstream))

        stops = [(d.hook_out if d.is_transcoder else d.hook_in, stop)]
        run, _ = self.passes.read_at(tokens, ids, d.layer, upstream, stops, capture=[d.key], top_k=top_k)
        found = layer_features(d, run.capture, named_features(upstream).get(d.layer, set()))
        self.cache.features.put(key, found)
        return found

    def attention(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, full: bool = False
    ) -> LayerAttention:
        """`Engine.attention`: read by a pass that stops once the layer's pattern exists."""
        tokens = self.handle.tokenize(prompt)
        (layer,) = self._layers_asked([layer])
        ids = _ids(tokens)
        key = attention_key(ids, interventions, layer)
        found = self.cache.attention.get(key, full=full)
        if found is not None:
            return found
        masks = ScoreMasks.of(tokens[0])
        upstream = key[1]

        def read(at: int, pattern: torch.Tensor) -> None:
            raise EnoughRead(summarise(at, check_finite_output(pattern, upstream), masks, keep=full))

        _, summary = self.passes.read_at(tokens, ids, layer, upstream, on_attention=read, attention_layers=(layer,))
        assert isinstance(summary, LayerAttention)
        self.cache.attention.put(key, summary)
        return summary

    def logit_lens(
        self, prompt: str, position: int, interventions: Sequence[Intervention] = (), *, n: int = 10
    ) -> LogitLens:
        """`Engine.logit_lens`: from the residual streams of the last analysis of the same prompt and
        interventions, else from a pass of its own."""
        tokens = self.handle.tokenize(prompt)
        at = resolve_position(position, tokens.shape[-1])
        assert at is not None
        key = (_ids(tokens), tuple(interventions))
        resid = kept_for(self.cache.lens, key)
        if resid is None:
            _, run = self.passes.run(tokens, interventions, lens=True)
            resid = run.capture.resid
            self.cache.lens = Kept(key, resid)
        stacked = torch.stack([resid[layer][at].to(self.handle.out_device) for layer in sorted(resid)])  # (layers, d)
        top = lenses.layer_lens(self.handle, stacked, n)
        return LogitLens(at, tuple(top.at(i) for i in range(len(resid))))

    def _dictionaries_asked(self, layers: bool | Sequence[int]) -> list[Dictionary]:
        """The dictionaries at the layers asked for (True: every one), each layer checked against the model's."""
        if layers is True:
            return list(self.handle.dictionaries)
        return self.handle.dictionaries.at_layers(self._layers_asked(layers))

    def _layers_asked(self, layers: bool | Sequence[int]) -> list[int]:
        """The layers asked for, in order, each checked (False: none; True was resolved by the caller)."""
        return [] if isinstance(layers, bool) else self.handle.check_layers(layers)


def _ids(tokens: torch.Tensor) -> tuple[int, ...]:
    """The prompt's token ids (1, seq) as the key every kept reading is filed under."""
    return tuple(int(i) for i in tokens[0].tolist())


def _found(readings: dict[K, T | None]) -> dict[K, T]:
    """Those of the readings that were kept."""
    return {key: reading for key, reading in readings.items() if reading is not None}
