"""The engine: one loaded model with its dictionaries, answering for prompts.

Front ends (CLI, TUI) call `Engine.load`, then `analyse` and `generate`, and get
frozen CPU results back; what they may ask is `lenstop.models.protocol.EngineProtocol`.
`Engine` is a façade over three parts that each take the same `ModelHandle` (the
model, its dictionaries, and the lock every pass takes, since hooks are attached to
the shared model for the duration of a pass):

- `lenstop.models.reading.Reader`: analyses, features, attention and the logit lens,
  with the one cache of what it keeps for reuse (`forget()` lets it go);
- `lenstop.models.generation`: continuations, clean and intervened;
- `lenstop.models.circuits`: attribution, patching, direct attribution, head roles and circuits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lenstop.models import generation
from lenstop.models import labels as exports
from lenstop.models.cards.build import attach_cached
from lenstop.models.cards.engine_part import CardsPart
from lenstop.models.circuits import api as circuits
from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
from lenstop.models.circuits.spec import CIRCUIT_KINDS, CircuitOptions, Direction, Metric, Node, NodeKind
from lenstop.models.dictionaries import Dictionary
from lenstop.models.graphs import AttributionGraph, GraphIntervention, NodeSetting
from lenstop.models.graphs import api as graphs
from lenstop.models.graphs.intervene import intervene
from lenstop.models.interventions import Intervention
from lenstop.models.loading import Processing
from lenstop.models.protocol import Progress
from lenstop.models.reading import Reader
from lenstop.models.results import Analysis, Generation, LayerAttention, LayerFeatures, LogitLens, ModelInfo
from lenstop.models.runtime.handle import ModelHandle

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class Engine(CardsPart):
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

        A dictionary with a Neuronpedia id (SAELens's `neuronpedia_id`) gets the labels of Neuronpedia's export
        of it when that is in the cache (`lenstop.models.labels`). `labels` are `[LAYER=]PATH` exports besides
        (`add_labels`), which take precedence. The demo model comes with its own dictionaries unless others are
        named.
        """
        handle = ModelHandle.load(
            model, saes, device=device, dtype=dtype, n_devices=n_devices, device_map=device_map, progress=progress
        )
        engine = cls(handle)
        attach_cached(handle)  # the cards `lenstop cards` built for these dictionaries, if any
        cached = exports.from_cache(engine.dictionaries, progress)
        engine._attach(cached)
        if cached and progress is not None:
            progress("ready")  # again, after the steps that read them
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
        """Attach the labels `[LAYER=]PATH` names: a Neuronpedia export file (`batch-N.jsonl.gz`, or the older JSON
        list), a source's `explanations/` folder, or a folder of exports matched by the dictionaries' Neuronpedia
        ids; the dictionary is the one at LAYER, else the one the export is of (`lenstop.models.labels`)."""
        self._attach(exports.from_option(spec, self.dictionaries))

    def _attach(self, found: exports.Matched) -> None:
        for dictionary, labels in found:
            dictionary.cards.add_labels(labels.by_feature, source=labels.source)
        if found:
            self.reader.cache.features.clear()  # they carry the labels they were read with

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
        logits, _ = self.reader.passes.run(self.tokenize(prompt), interventions)
        return logits

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
        """Every node's attribution to the metric (or, with `path`, to the last node followed upstream from it):
        features and error nodes at every dictionary, heads, MLPs and embeddings, at every position. The baseline
        is zero, or the node's value on `corrupt`; `steps` > 0 uses integrated gradients; `real` measures the
        real effect of removing each of the top `real` nodes."""
        return circuits.attribute(
            self.handle, prompt, metric, corrupt=corrupt, path=path, top=top, steps=steps, real=real
        )

    def effects(
        self, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
    ) -> tuple[float, ...]:
        """The real fall of the metric when each node alone is removed (set to zero, or to its corrupted value)."""
        return circuits.effects(self.handle, prompt, metric, nodes, corrupt=corrupt)

    def direct(self, prompt: str, metric: Metric = Metric(), *, sources: bool = False) -> DirectAttribution:
        """Direct logit attribution of the metric: embeddings, each head (by source position with `sources`),
        each MLP and the biases, through the final norm with its scale frozen; the parts add up to the metric."""
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
        """Activation patching between two prompts of equal token length, each cell beside its attribution-patching
        estimate: every layer's residual stream at every position, every head (at every position, and at each
        position with `head_positions`), and the `features` features with the largest estimates."""
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
        """Each head's previous-token, duplicate-token and induction scores on repeated random tokens;
        computed once per model and kept on disk (`refresh` computes them again)."""
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
        """The circuit behind the metric: its strongest nodes (by effect on the metric) and the edges between
        them, above the thresholds (shares of the strongest); `steps` > 0 uses integrated gradients."""
        options = CircuitOptions(node_threshold, edge_threshold, max_children, max_nodes, tuple(kinds), steps)
        return circuits.circuit(self.handle, prompt, metric, corrupt, options)

    def graph(
        self, prompt: str, *, targets: Sequence[str] = (), wrong: str | None = None, **options: Any
    ) -> AttributionGraph:
        """The attribution graph of `prompt` on the loaded transcoders (circuit-tracer's method and defaults) for
        the salient next tokens, `targets`, or `targets[0]` - `wrong`; `options`: `GraphOptions` fields, `progress`."""
        return graphs.graph(self.handle, prompt, targets=targets, wrong=wrong, **options)

    def intervene_graph(
        self, graph: AttributionGraph, settings: Sequence[NodeSetting], *, freeze_attention: bool = True
    ) -> GraphIntervention:
        """The graph's prompt with feature nodes set (0 ablates), as circuit-tracer's `feature_intervention`."""
        return intervene(self.handle, graph, settings, freeze_attention=freeze_attention)

    def export_graph(self, graph: AttributionGraph | Circuit, path: Path, neuronpedia: str | None = None) -> list[Path]:
        """Write a graph or a circuit for circuit-tracer's viewer: `path`, its listing, a file per feature node;
        or a graph for Neuronpedia's upload, `neuronpedia` naming its model and source set (`MODEL[:SET]`)."""
        return graphs.write_viewer_files(self.handle, graph, path, neuronpedia)


if TYPE_CHECKING:  # .ci/typecheck holds the engine to what front ends may ask of it
    from lenstop.models.protocol import EngineProtocol

    _conforms: type[EngineProtocol] = Engine
