"""What a front end may ask of an engine, and nothing more.

The CLI and the app depend on this Protocol, not on `Engine`: so the app's
tests can drive it with a fake, and a conformance test (tests/test_conformance.py)
holds the real engine and the fake to the same contract. Every argument and
result is a plain value or a frozen result from `lenstop.models.results`; no
tensor, no cache, no `Any`. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lenstop.models.circuits.spec import CIRCUIT_KINDS, Direction, Metric, Node, NodeKind

if TYPE_CHECKING:  # only names here, so that importing the Protocol stays cheap (no numpy)
    from lenstop.models.cards.spec import PassOptions, PassResult
    from lenstop.models.cards.texts import Corpus
    from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
    from lenstop.models.feature_cards import FeatureCard, FeatureHit
    from lenstop.models.graphs import AttributionGraph, GraphIntervention, NodeSetting
    from lenstop.models.interventions import Intervention
    from lenstop.models.results import Analysis, Generation, LayerAttention, LayerFeatures, LogitLens, ModelInfo

Progress = Callable[[str], None]  # told each loading step, e.g. "loading dictionary 2/12"


@runtime_checkable
class EngineProtocol(Protocol):
    """A loaded model with its dictionaries. Errors meant for the user are `LenstopError`s."""

    def info(self) -> ModelInfo:
        """The model's shapes, device and dtype, and its dictionaries."""
        ...

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
        """Predictions at every position; the features of the dictionaries at the layers `features` names (True:
        every dictionary; `features()` reads one on demand); the attention and head scores of the layers
        `attention` names (True: every layer; `attention()` reads one on demand); and the logit lens of every
        layer at the positions `lens` names (negative counts from the end; True: every position; none by
        default; `Analysis.lens_positions` says which were asked for; `logit_lens` gives one position's
        cheaply)."""
        ...

    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        """The features of the dictionary at `layer` under the interventions; a UsageError if it has none."""
        ...

    def attention(self, prompt: str, layer: int, interventions: Sequence[Intervention] = ()) -> LayerAttention:
        """One layer's attention under the interventions: each head's strongest keys from every query, and
        its head scores."""
        ...

    def logit_lens(
        self, prompt: str, position: int, interventions: Sequence[Intervention] = (), *, n: int = 10
    ) -> LogitLens:
        """What each layer's residual stream would predict after `position`."""
        ...

    def generate(
        self,
        prompt: str,
        interventions: Sequence[Intervention] = (),
        *,
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Generation:
        """The prompt continued clean and with the interventions, from the same seed."""
        ...

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        """The feature's card, None when its dictionary has neither cards nor a label for it."""
        ...

    def find_features(
        self,
        *,
        search: str | None = None,
        prompt: str | None = None,
        span: tuple[int, int] | None = None,
        promotes: str | None = None,
        limit: int = 20,
    ) -> list[FeatureHit]:
        """Features by label or `LAYER:FEATURE`, by a span of a prompt they fire on, or by a token they promote."""
        ...

    def build_cards(
        self, corpus: Corpus, options: PassOptions | None = None, progress: Callable[[int, int], None] | None = None
    ) -> PassResult:
        """Cards from text for every dictionary, one pass over `corpus`; `progress(windows done, total)`."""
        ...

    # ---------------------------------------------------------------- circuits
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
        """Every node's attribution to the metric, or to the last node of `path` followed upstream from it,
        ranked by size; the baseline is zero or `corrupt`'s values; `steps` > 0 for integrated gradients;
        the real effect of the top `real` nodes measured."""
        ...

    def effects(
        self, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
    ) -> tuple[float, ...]:
        """The real fall of the metric when each node alone is removed."""
        ...

    def direct(self, prompt: str, metric: Metric = Metric(), *, sources: bool = False) -> DirectAttribution:
        """Direct logit attribution; its parts add up to the metric."""
        ...

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
        """Activation patching between two prompts of equal token length, beside its linear estimate."""
        ...

    def head_roles(self, *, refresh: bool = False) -> HeadRoles:
        """Each head's scores on the standard task of repeated random tokens."""
        ...

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
        """The strongest nodes behind the metric and the edges between them."""
        ...

    def graph(
        self,
        prompt: str,
        *,
        targets: Sequence[str] = (),
        wrong: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        **options: float | None,
    ) -> AttributionGraph:
        """The attribution graph on the local replacement model made of the loaded transcoders."""
        ...

    def intervene_graph(
        self, graph: AttributionGraph, settings: Sequence[NodeSetting], *, freeze_attention: bool = True
    ) -> GraphIntervention:
        """The graph's prompt with feature nodes set to values: its targets before and after."""
        ...

    def export_graph(self, graph: AttributionGraph | Circuit, path: Path, neuronpedia: str | None = None) -> list[Path]:
        """An attribution graph's or a circuit's files for circuit-tracer's viewer: the graph, its listing, a
        feature file per feature node; or, with `neuronpedia` (`MODEL[:SOURCE_SET]`), a graph for its upload."""
        ...
