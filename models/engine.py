"""The engine: one loaded model with its dictionaries, answering for prompts.

Front ends (CLI, TUI) call `Engine.load`, then `analyse` and `generate`, and get
frozen CPU results back; what they may ask is `lenstop.models.protocol.EngineProtocol`.
`Engine` is a façade over three parts that each take the same `ModelHandle` (the
model, its dictionaries, and the lock every pass takes, since hooks are attached to
the shared model for the duration of a pass):

- `lenstop.models.reading.Reader`: analyses, features, attention and the logit lens,
  with the one cache of what it keeps for reuse (`forget()` lets it go);
- `lenstop.models.generation`: continuations, clean and intervened;
- the circuit methods (`lenstop.models.engine_circuits`, over `lenstop.models.circuits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import torch

from lenstop.models import engine_circuits, generation
from lenstop.models.dictionaries import Dictionary
from lenstop.models.errors import UsageError
from lenstop.models.feature_cards import FeatureCard, read_labels
from lenstop.models.interventions import Intervention
from lenstop.models.loading import Processing
from lenstop.models.protocol import Progress
from lenstop.models.reading import Reader
from lenstop.models.results import Analysis, Generation, LayerAttention, LayerFeatures, LogitLens, ModelInfo
from lenstop.models.runtime.handle import ModelHandle
from lenstop.models.runtime.run_plan import RunPlan

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


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
        self.reader = Reader(self.handle)  # it lets go of what it keeps when a pass runs out of memory
        self.model = self.handle.model
        self.dictionaries = self.handle.dictionaries
        self.name = self.handle.name
        self.processing = self.handle.processing
        self.prepend_bos = self.handle.prepend_bos

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

    # ------------------------------------------------------------------ the model
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

    # ------------------------------------------------------------------ dictionaries and labels
    def dictionary_at(self, layer: int) -> Dictionary:
        return self.dictionaries.at(layer)

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
        self.reader.cache.features.clear()  # they carry the labels they were read with

    def label(self, layer: int, feature: int) -> str | None:
        return self.dictionary_at(layer).cards.label(feature)

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        """The feature's card (label, top contexts, frequency, logit effects), if its dictionary has cards."""
        d = self.dictionary_at(layer)
        if not 0 <= feature < d.d_sae:
            raise UsageError(f"feature {feature} does not exist in {d.key}, which has {d.d_sae} features")
        return d.cards.card(feature)

    # ------------------------------------------------------------------ reading
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
        """Read the prompt: its predictions, and the features of the dictionaries at the layers `features` names
        (True: every dictionary).

        Attention is read for the layers `attention` names (True: every layer), as each head's strongest keys
        per query and its head scores; `full_attention` keeps the whole (query, key) square too, at every layer.
        The logit lens of every layer is read at the positions `lens` names (negative counts from the end;
        True: every position; `Analysis.lens_positions` says which). Both cost a large share of an analysis on
        a long prompt, so by default neither is read: `attention(prompt, layer)` reads the layer on screen
        when it is asked for, `logit_lens(prompt, position)` one position's lens from what the analysis kept,
        and `features(prompt, layer)` a dictionary's features likewise.

        One forward pass (two with interventions: the clean one is cached per prompt). Layers read before under
        the interventions that can reach them are not read again, and after a clean analysis of the prompt the
        blocks before the first layer the pass must touch replay their clean outputs instead of running.
        """
        return self.reader.analyse(
            prompt,
            interventions,
            top_k=top_k,
            n_predictions=n_predictions,
            features=features,
            attention=attention,
            lens=lens,
            full_attention=full_attention,
        )

    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        """The features of the dictionary at `layer` (the first, if it has several) under the interventions, as
        `analyse` reads them. Read by a pass that stops once the dictionary has read its input, and cached by
        the interventions that can reach the layer, like `attention`."""
        return self.reader.features(prompt, layer, interventions, top_k=top_k)

    def attention(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, full: bool = False
    ) -> LayerAttention:
        """One layer's attention under the interventions: each head's strongest keys from every query, and its
        previous-token, duplicate-token and induction scores; `full` keeps the whole (query, key) square too.

        Read by a pass that stops once the layer's pattern exists, and cached by the interventions that can
        reach the layer: those downstream of it share the clean prompt's reading.
        """
        return self.reader.attention(prompt, layer, interventions, full=full)

    def logit_lens(
        self, prompt: str, position: int, interventions: Sequence[Intervention] = (), *, n: int = 10
    ) -> LogitLens:
        """What each layer's residual stream would predict after `position`: through the final norm and the
        unembedding, one position only. Reuses the last analysis of the same prompt and interventions."""
        return self.reader.logit_lens(prompt, position, interventions, n=n)

    def logits(self, prompt: str, interventions: Sequence[Intervention] = ()) -> torch.Tensor:
        """Final logits (seq, vocab) of the prompt under the interventions: for scripts and tests."""
        logits, _ = self._run(self.tokenize(prompt), interventions)
        return logits

    def _run(self, tokens: torch.Tensor, interventions: Sequence[Intervention]) -> tuple[torch.Tensor, RunPlan]:
        """One pass under the interventions: the logits (seq, vocab), and the plan with what it captured."""
        return self.reader.passes.run(tokens, interventions)

    def forget(self) -> None:
        """Let go of everything kept from the prompts read so far: each layer's readings, and the last clean
        prompt's block outputs, residual streams and logits (linear in the prompt, the logits as long as the
        vocabulary at every position). The next call starts afresh on any prompt."""
        self.reader.cache.forget()

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

        The prompt runs once with every intervention, then each new token alone (with the model's KV cache)
        with those at every position: an intervention at all positions also applies to each new token, and
        one at a prompt position stays in that position's cached keys and values.
        """
        return generation.generate(
            self.handle, prompt, interventions, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )

    # ------------------------------------------------------------------ circuits (models/engine_circuits.py)
    _prompt_pair = engine_circuits._prompt_pair
    attribute = engine_circuits.attribute
    effects = engine_circuits.effects
    _check_nodes = engine_circuits._check_nodes
    _effects = engine_circuits._effects
    direct = engine_circuits.direct
    patch = engine_circuits.patch
    head_roles = engine_circuits.head_roles
    circuit = engine_circuits.circuit


if TYPE_CHECKING:  # .ci/typecheck holds the engine to what front ends may ask of it
    from lenstop.models.protocol import EngineProtocol

    _conforms: type[EngineProtocol] = Engine
