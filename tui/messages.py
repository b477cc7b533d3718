"""Events the workers post to the screens, named for what happened, typed end to end."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from lenstop.models.circuits.results import Attribution, Circuit, HeadRoles, Patching
from lenstop.models.circuits.spec import Node
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import LengthMismatchError, LenstopError, describe
from lenstop.models.interventions import Intervention
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import Analysis, Generation, LayerAttention, LayerFeatures, LogitLens, ModelInfo


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
class LoadFailed(Message):
    error: str


@dataclass
class AnalysisFinished(Message):
    request: int
    analysis: Analysis
    seconds: float


@dataclass
class AnalysisFailed(Message):
    request: int
    error: str
    numeric: bool = False  # the run came out NaN or infinite: an intervention too strong


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
class GenerationFailed(Message):
    request: int
    error: str


def failure_text(err: BaseException) -> str:
    """One line for the screen: ours as they are, anything else marked as lenstop's own fault."""
    return describe(err) if isinstance(err, LenstopError) else f"internal error: {describe(err)}"


@dataclass
class AttributionFinished(Message):
    request: int
    attribution: Attribution


@dataclass
class CircuitFinished(Message):
    request: int
    circuit: Circuit


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
class EffectsMeasured(Message):
    request: int
    nodes: tuple[Node, ...]  # what was measured, in order: the table may have changed since
    real: tuple[float, ...]


@dataclass
class CircuitFailed(Message):
    """Any of the circuit screen's workers failed; `what` says which (attribution, circuit, patching, effects).
    `mismatch`: the two prompts' tokenisations, when a corrupted prompt's length was the trouble."""

    request: int
    what: str
    error: str
    mismatch: LengthMismatchError | None = None

    @classmethod
    def of(cls, request: int, what: str, err: BaseException) -> CircuitFailed:
        return cls(request, what, failure_text(err), err if isinstance(err, LengthMismatchError) else None)


@dataclass
class LensFound(Message):
    request: int
    lens: LogitLens


@dataclass
class FeaturesFound(Message):
    """One layer's features, read apart from the analysis; or why they could not be."""

    request: int
    layer: int
    features: LayerFeatures | None
    error: str | None = None


@dataclass
class AttentionFound(Message):
    """One layer's attention, read apart from the analysis; or why it could not be."""

    request: int
    layer: int
    attention: LayerAttention | None
    error: str | None = None


@dataclass
class HeadRolesFound(Message):
    roles: HeadRoles
