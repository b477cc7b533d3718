"""What a front end may ask of an engine, and nothing more.

The CLI and the app depend on this Protocol, not on `Engine`: so the app's
tests can drive it with a fake, and a conformance test (tests/test_conformance.py)
holds the real engine and the fake to the same contract. Every argument and
result is a plain value or a frozen result from `lenstop.models.results`; no
tensor, no cache, no `Any`. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # only names here, so that importing the Protocol stays cheap (no numpy)
    from lenstop.models.feature_cards import FeatureCard
    from lenstop.models.interventions import Intervention
    from lenstop.models.results import Analysis, Generation, ModelInfo

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
    ) -> Analysis:
        """Features, attention and head scores, logit lens and predictions at every position and layer."""
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
