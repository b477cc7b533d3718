"""Events the workers post to the screens, named for what happened, typed end to end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.message import Message

from lenstop.models.circuits.results import Attribution, Circuit, HeadRoles, Patching
from lenstop.models.circuits.spec import Node
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.feature_cards import FeatureHit
from lenstop.models.interventions import Intervention
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import Analysis, Generation, LayerAttention, LayerFeatures, LogitLens, ModelInfo
from lenstop.tui.failure import Failure

if TYPE_CHECKING:  # the graphs hold tensors: their module imports torch, which the UI thread never does
    from lenstop.models.graphs import AttributionGraph, GraphIntervention


@dataclass
class LoadProgressed(Message):
    step: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadProgressed)


@dataclass
class EngineLoaded(Message):
    """The engine is ready; `info` was read in the worker, so the UI thread never asks the engine."""

    engine: EngineProtocol
    info: ModelInfo
    spec: EngineSpec  # what was loaded: the app keeps it, with any model typed at a retry
    seconds: float


@dataclass
class Failed(Message):
    """An engine call failed; each kind of call has its own subclass, whose handler says what clears."""

    request: int
    failure: Failure


@dataclass
class LoadFailed(Failed):
    pass


@dataclass
class AnalysisFinished(Message):
    request: int
    analysis: Analysis
    seconds: float


@dataclass
class AnalysisFailed(Failed):
    pass


@dataclass
class PositionsOutside(Message):
    """The analysis failed because interventions pinned to positions lie beyond the prompt, now this long."""

    request: int
    outside: tuple[Intervention, ...]
    n_tokens: int


@dataclass
class GenerationFinished(Message):
    request: int
    generation: Generation


@dataclass
class GenerationFailed(Failed):
    pass


@dataclass
class CardFound(Message):
    """A feature's card, drawn in the worker."""

    request: int
    text: Text


@dataclass
class CardFailed(Failed):
    pass


@dataclass
class FeatureHitsFound(Message):
    """What a feature search found, best first."""

    request: int
    hits: tuple[FeatureHit, ...]


@dataclass
class FindFailed(Failed):
    pass


@dataclass
class AttributionFinished(Message):
    request: int
    attribution: Attribution


@dataclass
class AttributionFailed(Failed):
    pass


@dataclass
class CircuitFinished(Message):
    request: int
    circuit: Circuit


@dataclass
class CircuitFailed(Failed):
    """The circuit could not be found."""


@dataclass
class PatchProgressed(Message):
    request: int
    share: float

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PatchProgressed)


@dataclass
class PatchFinished(Message):
    request: int
    patching: Patching


@dataclass
class PatchFailed(Failed):
    pass


@dataclass
class EffectsMeasured(Message):
    request: int
    nodes: tuple[Node, ...]  # what was measured, in order: the table may have changed since
    real: tuple[float, ...]


@dataclass
class EffectsFailed(Failed):
    pass


@dataclass
class LensFound(Message):
    request: int
    lens: LogitLens


@dataclass
class FeaturesFound(Message):
    """One layer's features, read apart from the analysis."""

    request: int
    layer: int
    features: LayerFeatures


@dataclass
class FeaturesFailed(Failed):
    layer: int


@dataclass
class AttentionFound(Message):
    """One layer's attention, read apart from the analysis."""

    request: int
    layer: int
    attention: LayerAttention


@dataclass
class AttentionFailed(Failed):
    layer: int


@dataclass
class HeadRolesFound(Message):
    roles: HeadRoles


@dataclass
class GraphBuilt(Message):
    """The attribution graph of `prompt` (the inspector's prompt cut at a position), or a re-pruned one."""

    request: int
    prompt: str
    graph: AttributionGraph


@dataclass
class GraphRepruned(GraphBuilt):
    """The graph on screen pruned at other thresholds."""


@dataclass
class GraphFailed(Failed):
    pass


@dataclass
class SubgraphScored(Message):
    request: int
    nodes: tuple[int, ...]  # the pinned nodes it scored
    scores: tuple[float, float]  # (replacement, completeness)


@dataclass
class GraphIntervened(Message):
    request: int
    what: str  # "ablate L2 #42@18", as the pane names it
    intervention: GraphIntervention


@dataclass
class GraphExported(Message):
    request: int
    paths: tuple[Path, ...]


@dataclass
class GraphStepFailed(Failed):
    """A step on a built graph failed (its scores, a re-pruning, an intervention, an export)."""

    kind: str
