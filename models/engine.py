"""The engine: one loaded model with its dictionaries, answering for prompts.

Front ends (CLI, TUI) call `Engine.load`, then `analyse` and `generate`, and get
frozen CPU results back; what they may ask is `lenstop.models.protocol.EngineProtocol`.
All forward passes go through one lock, because hooks are attached to the
shared model for the duration of a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray

from lenstop.models.attention import AttentionCache, ScoreMasks, summarise
from lenstop.models.circuits import api as circuits
from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
from lenstop.models.circuits.spec import CIRCUIT_KINDS, CircuitOptions, Direction, Metric, Node, NodeKind
from lenstop.models.dictionaries import Dictionary
from lenstop.models.errors import (
    LenstopError,
    UsageError,
)
from lenstop.models.feature_cards import FeatureCard, read_labels
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, Intervention
from lenstop.models.layer_cache import LayerCache, LayerKey, layer_key
from lenstop.models.loading import Processing
from lenstop.models.prompts import resolve_position
from lenstop.models.protocol import Progress
from lenstop.models.quiet import drop_cache_renamed_warning
from lenstop.models.replay import Outputs, recording, replaying, resid_post, supported
from lenstop.models.results import (
    Analysis,
    Continuation,
    Generation,
    LayerAttention,
    LayerFeatures,
    LogitLens,
    ModelInfo,
    TokenShift,
    TopTokens,
    frozen_array,
)
from lenstop.models.runtime.handle import EnoughRead, ModelHandle, check_finite_output
from lenstop.models.runtime.run_plan import Capture, RunPlan

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


LensKey = tuple[tuple[int, ...], tuple[Intervention, ...]]


class Engine:
    """A model and its dictionaries, ready to analyse prompts and run interventions."""

    def __init__(
        self,
        model: TransformerBridge | ModelHandle,
        dictionaries: Sequence[Dictionary] = (),
        *,
        name: str | None = None,
        processing: Processing | None = None,
        prepend_bos: bool | None = None,
    ) -> None:
        if isinstance(model, ModelHandle):
            self.handle = model
        else:
            self.handle = ModelHandle(model, dictionaries, name=name, processing=processing, prepend_bos=prepend_bos)
        self.handle.on_out_of_memory.append(self.forget)  # what the caches held goes with the failed pass's frames
        self.model = self.handle.model
        self.dictionaries = self.handle.dictionaries
        self.name = self.handle.name
        self.processing = self.handle.processing
        self.prepend_bos = self.handle.prepend_bos
        self._forward_guard = self.handle.guard
        # The residual streams of the last analysis, by (token ids, interventions): one position's logit lens.
        self._lens_cache: tuple[LensKey, dict[int, torch.Tensor]] | None = None
        # Layers' attention and dictionaries' features read so far, by prompt and the interventions that can
        # reach them: an intervened analysis reuses the clean readings of the layers before the first it touches.
        self._attention = AttentionCache()
        self._readings: LayerCache[LayerFeatures] = LayerCache(lambda reading: reading.nbytes)
        # The last clean analysis's block outputs, by its token ids: a pass under interventions replays those
        # of the layers before the first it touches instead of computing them (see models/replay.py).
        self._clean_blocks: tuple[tuple[int, ...], Outputs] | None = None
        self._replay_ok = supported(self.model)  # see models/replay.py
        self._clean_cache: tuple[tuple[tuple[int, ...], int], CleanDistribution] | None = None
        # The last clean analysis's logits and their logsumexp, until the first intervention on its prompt
        # makes the clean distribution from them: else that would unembed the prompt again.
        self._clean_logits: tuple[tuple[int, ...], torch.Tensor, torch.Tensor, TopTokens] | None = None

    @classmethod
    def load(
        cls,
        model: str,
        saes: Sequence[str] = (),
        *,
        device: str = "auto",
        dtype: str = "float32",
        n_devices: int | None = None,
        device_map: str | dict[str, str | int] | None = None,
        labels: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> Engine:
        """Load `model` and every dictionary in `saes`, matched to the numerics they were trained on.

        `labels` are `[LAYER=]PATH` Neuronpedia-style explanation files; the layer
        may be left out when there is one dictionary or the file names its layer.
        The demo model comes with its own dictionaries unless others are named.
        """
        handle = ModelHandle.load(
            model, saes, device=device, dtype=dtype, n_devices=n_devices, device_map=device_map, progress=progress
        )
        engine = cls(handle)
        for spec in labels:
            engine.add_labels(spec)
        return engine

    @property
    def n_layers(self) -> int:
        return self.handle.n_layers

    @property
    def n_heads(self) -> int:
        return self.handle.n_heads

    @property
    def n_ctx(self) -> int:
        return self.handle.n_ctx

    def info(self) -> ModelInfo:
        return self.handle.info()

    def tokenize(self, prompt: str) -> torch.Tensor:
        """The prompt as the model sees it, (1, seq), BOS included when the dictionaries expect it."""
        return self.handle.tokenize(prompt)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return self.handle.token_strings(ids)

    def hooks(self, hooks: Sequence[tuple[str, Callable[..., Any]]]) -> AbstractContextManager[None]:
        """Forward hooks for the duration of one run, by hook name (`ModelHandle.hooks`)."""
        return self.handle.hooks(hooks)

    def add_labels(self, spec: str) -> None:
        """Attach `[LAYER=]PATH` labels to the dictionary at that layer."""
        layer_text, sep, path = spec.partition("=")
        if not sep:
            path, layer_text = spec, ""
        labels, named = read_labels(path)
        layer = int(layer_text) if layer_text.strip().isdigit() else named
        if layer is None:
            if len(self.dictionaries) != 1:
                raise UsageError(f"--labels {spec}: say which layer it is for, e.g. --labels 3={path}")
            layer = self.dictionaries[0].layer
        self.dictionary_at(layer).cards.add_labels(labels)
        self._readings.clear()  # they carry the labels they were read with

    def label(self, layer: int, feature: int) -> str | None:
        return self.dictionary_at(layer).cards.label(feature)

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        """The feature's card (label, top contexts, frequency, logit effects), if its dictionary has cards."""
        d = self.dictionary_at(layer)
        if not 0 <= feature < d.d_sae:
            raise UsageError(f"feature {feature} does not exist in {d.key}, which has {d.d_sae} features")
        return d.cards.card(feature)

    def dictionary_at(self, layer: int) -> Dictionary:
        return self.dictionaries.at(layer)

    def _run(
        self,
        tokens: torch.Tensor,
        interventions: Sequence[Intervention],
        *,
        prompt_len: int | None = None,
        capture: Sequence[str] = (),
        top_k: int = 10,
        on_attention: Callable[[int, torch.Tensor], None] | None = None,
        attention_layers: Sequence[int] = (),
        lens: bool = False,
        record: Outputs | None = None,
        replay: tuple[Outputs, int] | None = None,
    ) -> tuple[torch.Tensor, RunPlan]:
        """One forward pass with the plan's hooks; returns the logits (seq, vocab) and what it captured.
        `record` keeps each block's output; `replay` (outputs, L) gives blocks 0..L-1 those outputs instead."""
        plan = RunPlan(
            self.dictionaries,
            interventions,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            prompt_len=prompt_len or tokens.shape[-1],
            capture=capture,
            top_k=top_k,
            on_attention=on_attention,
            attention_layers=attention_layers,
            resid_layers=range(self.n_layers) if lens else (),
        )
        logits = self._pass(tokens, plan.hooks, record=record, replay=replay)[0]
        return check_finite_output(logits, interventions), plan

    def _pass(
        self,
        tokens: torch.Tensor,
        hooks: Sequence[tuple[str, Callable[..., Any]]],
        *,
        record: Outputs | None = None,
        replay: tuple[Outputs, int] | None = None,
    ) -> Any:
        """The model's output on `tokens` with `hooks`, recording or replaying blocks as asked. A replayed pass
        that fails (the model's blocks hand something on that a replayed one does not) runs again with every
        block, and replay is off from then on: the hooks fire again in full, overwriting what they captured."""
        try:
            with self._forward_guard(tokens.shape[-1]), self.hooks(hooks), self._blocks(record, replay):
                return self.model(tokens)
        except Exception as err:
            if replay is None or isinstance(err, LenstopError | EnoughRead):
                raise
            self._replay_off()
            return self._pass(tokens, hooks, record=record)

    def _blocks(self, record: Outputs | None, replay: tuple[Outputs, int] | None) -> AbstractContextManager[None]:
        if record is not None:
            return recording(self.model.blocks, record)
        if replay is not None:
            return replaying(self.model.blocks, *replay)
        return nullcontext()

    def _replay(self, ids: tuple[int, ...], upto: int) -> tuple[Outputs, int] | None:
        """The clean prompt's block outputs to replay before layer `upto`, if the last clean analysis was of `ids`."""
        recorded = self._clean_blocks  # read once: another thread's analysis may replace it meanwhile
        if not self._replay_ok or recorded is None or recorded[0] != ids or upto <= 0:
            return None
        return recorded[1], upto

    def forget(self) -> None:
        """Let go of everything kept from the prompts read so far: each layer's readings, and the last clean
        prompt's block outputs, residual streams and logits (linear in the prompt, the logits as long as the
        vocabulary at every position). The next call starts afresh on any prompt."""
        self._readings.clear()
        self._attention.clear()
        self._clean_blocks = self._lens_cache = self._clean_cache = self._clean_logits = None

    def _replay_off(self) -> None:
        self._replay_ok, self._clean_blocks = False, None

    def logits(self, prompt: str, interventions: Sequence[Intervention] = ()) -> torch.Tensor:
        """Final logits (seq, vocab) of the prompt under the interventions: for scripts and tests."""
        logits, _ = self._run(self.tokenize(prompt), interventions)
        return logits

    def analyse(
        self,
        prompt: str,
        interventions: Sequence[Intervention] = (),
        *,
        top_k: int = 10,
        n_predictions: int = 10,
        features: bool | Sequence[int] = True,
        attention: bool | Sequence[int] = False,
        lens: bool = True,
        full_attention: bool = False,
    ) -> Analysis:
        """Read the prompt: its predictions, the features of the dictionaries at the layers `features` names
        (True: every dictionary), and (with `lens`) the logit lens of every layer at every position;
        `logit_lens` gives one position's alone, cheaply.

        Attention is read for the layers `attention` names (True: every layer), as each head's strongest keys
        per query and its head scores; `full_attention` keeps the whole (query, key) square too, at every layer.
        Summarising every layer costs about a fifth of the analysis at 1,024 tokens, so by default none is
        read: `attention(prompt, layer)` reads the layer on screen when it is asked for, and `features(prompt,
        layer)` a dictionary's features likewise.

        One forward pass (two with interventions: the clean one is cached per prompt). Layers read before under
        the interventions that can reach them are not read again, and after a clean analysis of the prompt the
        blocks before the first layer the pass must touch replay their clean outputs instead of running.
        """
        tokens = self.tokenize(prompt)
        ids = tuple(int(i) for i in tokens[0].tolist())
        wanted = self._layers_asked(range(self.n_layers) if attention is True or full_attention else attention)
        read: dict[int, LayerAttention] = {}
        for layer in wanted:
            cached = self._attention.get(_attention_key(ids, interventions, layer), full=full_attention)
            if cached is not None:
                read[layer] = cached
        missing = [layer for layer in wanted if layer not in read]
        masks = ScoreMasks.of(tokens[0]) if missing else None

        def on_attention(layer: int, pattern: torch.Tensor) -> None:
            assert masks is not None
            read[layer] = summarise(layer, pattern, masks, keep=full_attention)  # NaN shows in the logits

        chosen = self._dictionaries_asked(features)
        readings: dict[str, LayerFeatures] = {}
        for d in chosen:
            if (found := self._readings.get(_features_key(ids, interventions, d, top_k))) is not None:
                readings[d.key] = found
        to_read = [d for d in chosen if d.key not in readings]
        # Blocks before the first layer this pass must touch (an intervention's, or one still to read) compute
        # what they did on the clean prompt: replayed, if the last clean analysis was of this prompt.
        touched = [*(iv.layer for iv in interventions), *missing, *(d.layer for d in to_read)]
        replay = self._replay(ids, min(touched, default=self.n_layers))
        record: Outputs | None = {} if not interventions and replay is None else None
        logits, plan = self._run(
            tokens,
            interventions,
            capture=[d.key for d in to_read],
            top_k=top_k,
            on_attention=on_attention,
            attention_layers=missing,
            lens=True,
            record=record,
            replay=replay,
        )
        for layer in missing:
            self._attention.put(_attention_key(ids, interventions, layer), read[layer])
        named = _named_features(interventions)
        for d in to_read:
            readings[d.key] = self._layer_features(d, plan.capture, named.get(d.layer, set()))
            self._readings.put(_features_key(ids, interventions, d, top_k), readings[d.key])
        resid = plan.capture.resid
        if replay is not None:  # the replayed blocks' hooks did not run: their residual streams are the clean ones
            resid = {
                **{layer: resid_post(replay[0][layer]) for layer in range(replay[1]) if layer not in resid},
                **resid,
            }
        if record is not None:
            self._clean_blocks = (ids, record)
        self._lens_cache = ((ids, tuple(interventions)), resid)  # one position's lens, later, needs no pass
        lens_tops = (
            tuple(self._top_tokens(self._lens_logprobs(resid[layer]), n_predictions) for layer in sorted(resid))
            if lens
            else ()
        )
        lse = _logsumexp(logits)  # (seq, 1): normalises the predictions, and the KL's second term
        predictions = self._top_tokens(logits, n_predictions, lse=lse)  # in the model's dtype: no copy
        clean_predictions = kl = shifts = None
        if not interventions and (self._clean_cache is None or self._clean_cache[0][0] != ids):
            self._clean_logits = (ids, logits, lse, predictions)
        if interventions:
            clean = self._clean_distribution(tokens, ids, n_predictions)
            clean_predictions = clean.top
            # KL(clean ‖ intervened) = Σ p log p (cached) − Σ p · logits + logsumexp(logits), p made from the clean
            # logits a block of positions at a time: no log-softmax, no (seq, vocab) probabilities kept.
            kl_t = clean.neg_entropy - clean.expect(logits) + lse[:, 0]
            kl = frozen_array(kl_t.clamp_min(0).cpu().numpy(), np.float32)
            shifts = self._shifts(clean, logits, lse[:, 0], predictions)
        return Analysis(
            model=self.name,
            prompt=prompt,
            tokens=tuple(self.token_strings(ids)),
            token_ids=ids,
            layers=tuple(readings[d.key] for d in chosen),
            attention=tuple(read[layer] for layer in wanted),
            lens=lens_tops,
            predictions=predictions,
            interventions=tuple(interventions),
            clean_predictions=clean_predictions,
            kl=kl,
            shifts=shifts,
        )

    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        """The features of the dictionary at `layer` (the first, if it has several) under the interventions, as
        `analyse` reads them. Read by a pass that stops once the dictionary has read its input, and cached by
        the interventions that can reach the layer, like `attention`."""
        tokens = self.tokenize(prompt)
        ids = tuple(int(i) for i in tokens[0].tolist())
        d = self._first_dictionary_at(layer)
        key = _features_key(ids, interventions, d, top_k)
        if (found := self._readings.get(key)) is not None:
            return found
        upstream = key[1]

        def stop(activation: torch.Tensor, hook: Any) -> None:  # after the dictionary's own hooks
            raise EnoughRead(check_finite_output(activation, upstream))

        plan, _ = self._read_at(
            tokens,
            ids,
            d.layer,
            upstream,
            [(d.hook_out if d.is_transcoder else d.hook_in, stop)],
            capture=[d.key],
            top_k=top_k,
        )
        found = self._layer_features(d, plan.capture, _named_features(upstream).get(d.layer, set()))
        self._readings.put(key, found)
        return found

    def _dictionaries_asked(self, layers: bool | Sequence[int]) -> list[Dictionary]:
        """The dictionaries at the layers asked for (True: every one), each layer checked against the model's."""
        if layers is True:
            return list(self.dictionaries)
        wanted = set(self._layers_asked(layers))
        return [d for d in self.dictionaries if d.layer in wanted]

    def _first_dictionary_at(self, layer: int) -> Dictionary:
        (layer,) = self._layers_asked([layer])
        return self.dictionaries.at(layer, first=True)

    def attention(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, full: bool = False
    ) -> LayerAttention:
        """One layer's attention under the interventions: each head's strongest keys from every query, and its
        previous-token, duplicate-token and induction scores; `full` keeps the whole (query, key) square too.

        Read by a pass that stops once the layer's pattern exists, and cached by the interventions that can
        reach the layer: those downstream of it share the clean prompt's reading.
        """
        tokens = self.tokenize(prompt)
        (layer,) = self._layers_asked([layer])
        ids = tuple(int(i) for i in tokens[0].tolist())
        key = _attention_key(ids, interventions, layer)
        found = self._attention.get(key, full=full)
        if found is not None:
            return found
        masks = ScoreMasks.of(tokens[0])
        upstream = key[1]

        def read(at: int, pattern: torch.Tensor) -> None:
            raise EnoughRead(summarise(at, check_finite_output(pattern, upstream), masks, keep=full))

        _, summary = self._read_at(tokens, ids, layer, upstream, on_attention=read, attention_layers=(layer,))
        assert isinstance(summary, LayerAttention)
        self._attention.put(key, summary)
        return summary

    def _read_at(
        self,
        tokens: torch.Tensor,
        ids: tuple[int, ...],
        layer: int,
        upstream: Sequence[Intervention],
        stops: Sequence[tuple[str, Callable[..., Any]]] = (),
        **plan: Any,
    ) -> tuple[RunPlan, object]:
        """One pass under the `upstream` interventions that a hook at `layer` (the plan's, or one of `stops`,
        which fire after it) ends by raising `EnoughRead`; the blocks before the first layer it touches replay
        the clean prompt's outputs. Returns the plan, with what it captured, and what the hook carried out."""
        run = RunPlan(
            self.dictionaries,
            upstream,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            prompt_len=tokens.shape[-1],
            **plan,
        )
        try:
            self._pass(
                tokens, [*run.hooks, *stops], replay=self._replay(ids, min([layer, *(iv.layer for iv in upstream)]))
            )
        except EnoughRead as enough:
            return run, enough.args[0]
        raise RuntimeError(f"the pass ended without reaching what it came to read at layer {layer}")

    def _layers_asked(self, layers: Iterable[int] | bool) -> list[int]:
        """The layers asked for, in order, each checked against the model's."""
        if isinstance(layers, bool):  # False: none (True was resolved to every layer by the caller)
            return []
        wanted = sorted({int(layer) for layer in layers})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.n_layers:
            bad = next(layer for layer in wanted if not 0 <= layer < self.n_layers)
            raise UsageError(f"layer {bad} does not exist: {self.name} has layers 0..{self.n_layers - 1}")
        return wanted

    def logit_lens(
        self, prompt: str, position: int, interventions: Sequence[Intervention] = (), *, n: int = 10
    ) -> LogitLens:
        """What each layer's residual stream would predict after `position`: through the final norm and the
        unembedding, one position only. Reuses the last analysis of the same prompt and interventions."""
        tokens = self.tokenize(prompt)
        at = resolve_position(position, tokens.shape[-1])
        assert at is not None
        key = (tuple(int(i) for i in tokens[0].tolist()), tuple(interventions))
        cached = self._lens_cache  # read once: another thread's analysis may replace it meanwhile
        if cached is None or cached[0] != key:
            _, plan = self._run(tokens, interventions, lens=True)
            cached = self._lens_cache = (key, plan.capture.resid)
        resid = cached[1]
        stacked = torch.stack(
            [resid[layer][at].to(self.handle.out_device) for layer in sorted(resid)]
        )  # (layers, d_model)
        top = self._top_tokens(self._lens_logprobs(stacked), n)
        return LogitLens(at, tuple(top.at(i) for i in range(len(resid))))

    def _clean_distribution(self, tokens: torch.Tensor, ids: tuple[int, ...], n: int) -> CleanDistribution:
        """The clean prompt's next-token distribution, what every intervened analysis compares with; cached."""
        cached, kept = self._clean_cache, self._clean_logits  # read once: another thread may replace them
        if cached is not None and cached[0] == (ids, n):
            return cached[1]
        top: TopTokens | None = None
        if kept is not None and kept[0] == ids:
            _, logits, lse, top = kept
        else:  # after a clean analysis of another prompt's: its recorded blocks, unembedded
            logits, _ = self._run(tokens, (), replay=self._replay(ids, self.n_layers))
            lse = _logsumexp(logits)
        if top is None or top.ids.shape[1] != min(n, logits.shape[-1]):  # the clean analysis's, if as many
            top = self._top_tokens(logits, n, lse=lse)
        clean = CleanDistribution.of(logits, lse, top)
        self._clean_cache, self._clean_logits = ((ids, n), clean), None
        return clean

    def _lens_logprobs(self, resid: torch.Tensor) -> torch.Tensor:
        """What a layer's residual stream would predict: through the final norm and the unembedding."""
        with self._forward_guard(resid.shape[0]):
            x = resid.to(self.handle.out_device).unsqueeze(0)
            return self.model.unembed(self.model.ln_final(x))[0].float().log_softmax(-1)

    def _top_tokens(self, logprobs: torch.Tensor, n: int, *, lse: torch.Tensor | None = None) -> TopTokens:
        """The top `n` at each position of log-probabilities, or of raw logits with their logsumexp `lse`
        (normalised after the top-k: a log-softmax over the whole vocabulary costs as much as the top-k)."""
        top = logprobs.topk(min(n, logprobs.shape[-1]), dim=-1)
        values = top.values.float() - lse if lse is not None else top.values.float()
        ids = top.indices.cpu().numpy()
        strings = self.token_strings(ids.reshape(-1).tolist())
        width = ids.shape[1]
        return TopTokens(
            ids=frozen_array(ids, np.int64),
            probs=frozen_array(values.exp().cpu().numpy(), np.float32),
            strings=tuple(tuple(strings[r * width : (r + 1) * width]) for r in range(ids.shape[0])),
        )

    def _layer_features(self, d: Dictionary, cap: Capture, named: set[int]) -> LayerFeatures:
        """The dictionary's top features; `named` are features the interventions name, labelled even when inactive."""
        reading = cap.features[d.key]  # reduced to the top `top_k` in the pass (see hooks.FeatureReading)
        union = reading.union
        error = cap.error_norm[d.key].float()
        norm = cap.input_norm[d.key].float()
        return LayerFeatures(
            layer=d.layer,
            hook=d.hook_in,
            dictionary=d.key,
            top_ids=frozen_array(reading.top_ids.cpu().numpy(), np.int64),
            top_acts=frozen_array(reading.top_values.cpu().numpy(), np.float32),
            union_ids=frozen_array(union.cpu().numpy(), np.int64),
            **_sparse_columns(reading.columns),
            error_norm=frozen_array(error.cpu().numpy(), np.float32),
            relative_error=frozen_array((error / norm.clamp_min(1e-12)).cpu().numpy(), np.float32),
            l0=frozen_array(reading.l0.cpu().numpy(), np.int64),
            labels=MappingProxyType(
                {i: label for i in sorted({*union.tolist(), *named}) if (label := d.cards.label(i))}
            ),
        )

    def _shifts(
        self, clean: CleanDistribution, logits: torch.Tensor, lse: torch.Tensor, top: TopTokens
    ) -> tuple[tuple[TokenShift, ...], ...]:
        """Per position: the union of both top lists, with each token's probability before (`clean`) and
        after (`logits`, normalised by their `lse`), gathered in one go."""
        both = torch.from_numpy(np.concatenate([clean.top.ids, top.ids], axis=1)).to(clean.logits.device)
        before = clean.probs_at(both).cpu().numpy()
        after = (logits.float().gather(1, both.to(logits.device)) - lse[:, None].to(logits.device)).exp().cpu().numpy()
        out = []
        for pos, row in enumerate(both.cpu().numpy().tolist()):
            order = list(dict.fromkeys(row))  # the clean top list, then what the new one adds
            first = {i: row.index(i) for i in order}
            out.append(
                tuple(
                    TokenShift(s, i, float(before[pos, first[i]]), float(after[pos, first[i]]))
                    for s, i in zip(self.token_strings(order), order, strict=True)
                )
            )
        return tuple(out)

    # ------------------------------------------------------------------ circuits (models/circuits/api.py)
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
        return circuits.attribute(
            self.handle, prompt, metric, corrupt=corrupt, path=path, top=top, steps=steps, real=real
        )

    def effects(
        self, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
    ) -> tuple[float, ...]:
        return circuits.effects(self.handle, prompt, metric, nodes, corrupt=corrupt)

    def direct(self, prompt: str, metric: Metric = Metric(), *, sources: bool = False) -> DirectAttribution:
        return circuits.direct(self.handle, prompt, metric, sources=sources)

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
        return circuits.patch(
            self.handle,
            clean,
            corrupt,
            metric,
            direction=direction,
            head_positions=head_positions,
            features=features,
            progress=progress,
            cancelled=cancelled,
        )

    def head_roles(self, *, refresh: bool = False) -> HeadRoles:
        return circuits.head_roles(self.handle, refresh=refresh)

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
        options = CircuitOptions(node_threshold, edge_threshold, max_children, max_nodes, tuple(kinds), steps)
        return circuits.circuit(self.handle, prompt, metric, corrupt, options)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompt: str,
        interventions: Sequence[Intervention] = (),
        *,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        """Continue the prompt with and without the interventions, from the same seed.

        Every step re-runs the whole sequence with the intervention hooks, so an
        intervention at all positions also applies to each new token, and one at
        a prompt position stays there.
        """
        if max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        if temperature < 0:
            raise UsageError("--temperature must be 0 (greedy) or more")
        if not -(2**63) <= seed < 2**64:  # what torch's generator takes
            raise UsageError(f"--seed {seed}: a seed is a whole number from -2**63 to 2**64 - 1")
        tokens = self.tokenize(prompt)
        drop_cache_renamed_warning()  # here, not at import: a catch_warnings() around the import would undo it
        clean = self._continue(tokens, (), max_new_tokens, temperature, seed)
        intervened = self._continue(tokens, interventions, max_new_tokens, temperature, seed) if interventions else None
        return Generation(
            model=self.name,
            prompt=prompt,
            clean=clean,
            intervened=intervened,
            interventions=tuple(interventions),
            temperature=temperature,
            seed=seed,
        )

    def _continue(
        self, tokens: torch.Tensor, interventions: Sequence[Intervention], max_new: int, temperature: float, seed: int
    ) -> Continuation:
        """Greedy or sampled tokens with a KV cache: the prompt runs once with every intervention, then each new
        token runs alone with the interventions that apply at every position (those limited to a prompt
        position have done their work on the prompt's cached keys and values)."""
        generator = torch.Generator().manual_seed(seed)
        prompt_len = tokens.shape[-1]
        everywhere = [iv for iv in interventions if iv.position is None]
        eos = self.model.tokenizer.eos_token_id
        new: list[int] = []
        feed, cache = tokens, None
        for _ in range(max_new):
            if prompt_len + len(new) >= self.n_ctx:
                break
            if cache is None:
                logits, cache = self._run_cached(feed, interventions, prompt_len, None)
            else:
                logits, cache = self._run_cached(feed, everywhere, 1, cache)
            last = logits[-1].float()
            if temperature == 0:
                next_id = int(last.argmax())
            else:
                probs = (last / temperature).softmax(-1).cpu()
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            new.append(next_id)
            if eos is not None and next_id == eos:
                break
            feed = torch.tensor([[next_id]], device=tokens.device)
        text = self.model.tokenizer.decode(new, clean_up_tokenization_spaces=False)
        return Continuation(tuple(new), tuple(self.token_strings(new)), text)

    def _run_cached(
        self, tokens: torch.Tensor, interventions: Sequence[Intervention], prompt_len: int, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """One step of generation: the logits (seq, vocab) of `tokens` after those in `cache`, and the cache."""
        plan = RunPlan(
            self.dictionaries,
            interventions,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            prompt_len=prompt_len,
        )
        past = {} if cache is None else {"past_key_values": cache}
        with self._forward_guard(tokens.shape[-1]), self.hooks(plan.hooks):
            logits, cache = self.model(tokens, return_type="logits_and_cache", use_cache=True, **past)
        return check_finite_output(logits[0], interventions), cache


def _attention_key(ids: tuple[int, ...], interventions: Sequence[Intervention], layer: int) -> LayerKey:
    return layer_key(ids, interventions, layer, "attention")


def _features_key(ids: tuple[int, ...], interventions: Sequence[Intervention], d: Dictionary, top_k: int) -> LayerKey:
    return layer_key(ids, interventions, d.layer, (d.key, top_k))


def _logsumexp(logits: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """(seq, vocab) -> (seq, 1) in float32, a block of positions at a time: the whole at once would hold
    another (seq, vocab) tensor, as large as the logits themselves (twice, from half precision)."""
    return torch.cat([block.float().logsumexp(-1, keepdim=True) for block in logits.split(rows)])


class CleanDistribution(NamedTuple):
    """The clean prompt's next-token distribution, as the intervened analyses of that prompt need it: held as
    the clean analysis's own logits, p = exp(logits - lse), not as probabilities, which would be another
    (seq, vocab) tensor in float32 (823 MB at 4,096 tokens of GPT-2's vocabulary)."""

    logits: torch.Tensor  # (seq, vocab), in the model's dtype
    lse: torch.Tensor  # (seq, 1), float32
    neg_entropy: torch.Tensor  # (seq,): Σ p log p = Σ p · logits - lse, the first term of every KL from it
    top: TopTokens

    @classmethod
    def of(cls, logits: torch.Tensor, lse: torch.Tensor, top: TopTokens) -> CleanDistribution:
        made = cls(logits, lse, lse[:, 0], top)
        return made._replace(neg_entropy=made.expect(logits) - lse[:, 0])

    def expect(self, values: torch.Tensor, rows: int = 32) -> torch.Tensor:
        """Σ p · values at each position, (seq, vocab) -> (seq,), with p made a block of positions at a time."""
        blocks = zip(self.logits.split(rows), self.lse.split(rows), values.split(rows), strict=True)
        return torch.cat([((c.float() - m).exp_() * v.float()).sum(-1) for c, m, v in blocks])

    def probs_at(self, ids: torch.Tensor) -> torch.Tensor:
        """The probabilities of the tokens `ids` (seq, k) at each position."""
        return (self.logits.gather(1, ids).float() - self.lse).exp()


def _sparse_columns(dense: torch.Tensor) -> dict[str, NDArray[Any]]:
    """The nonzero entries of each column of (positions, n), found on the device: LayerFeatures' union_* fields."""
    columns, positions = dense.T.nonzero(as_tuple=True)
    counts = torch.bincount(columns, minlength=dense.shape[1])
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return {
        "union_offsets": frozen_array(offsets.cpu().numpy(), np.int64),
        "union_positions": frozen_array(positions.cpu().numpy(), np.int64),
        "union_values": frozen_array(dense.T[columns, positions].float().cpu().numpy(), np.float32),
    }


def _named_features(interventions: Sequence[Intervention]) -> dict[int, set[int]]:
    """Per layer, the features the interventions act on."""
    named: dict[int, set[int]] = {}
    for iv in interventions:
        if isinstance(iv, FeatureAblation | FeatureSteer | FeatureClamp):
            named.setdefault(iv.layer, set()).add(iv.feature)
    return named


if TYPE_CHECKING:  # .ci/typecheck holds the engine to what front ends may ask of it
    from lenstop.models.protocol import EngineProtocol

    _conforms: type[EngineProtocol] = Engine
