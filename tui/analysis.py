"""What the inspector asks of the engine, as calls that a worker runs (`lenstop.tui.work`): an
analysis, or why it could not be made; and what an analysis lacks of a layer.

Each runs in a worker thread and returns the message to post; none touches a widget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lenstop.models.errors import LenstopError, UsageError
from lenstop.models.interventions import Intervention
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import Analysis
from lenstop.tui.messages import (
    AnalysisFinished,
    AttentionFailed,
    AttentionFound,
    FeaturesFailed,
    FeaturesFound,
    PositionsOutside,
)
from lenstop.tui.work import Job

TOP_K = 12
N_PREDICTIONS = 10


def analyse(
    engine: EngineProtocol, request: int, prompt: str, interventions: tuple[Intervention, ...], layer: int
) -> AnalysisFinished | PositionsOutside:
    """The analysis reads the selected layer's attention in its pass, and under interventions that layer's
    features alone (other layers' are fetched when selected: a clean analysis reads them all, for
    every later one to reuse), and no logit lens (the selected token's is fetched after)."""
    tic = time.monotonic()
    features = [layer] if interventions else True
    try:
        analysis = engine.analyse(
            prompt,
            interventions,
            top_k=TOP_K,
            n_predictions=N_PREDICTIONS,
            features=features,
            attention=[layer],
            lens=False,
        )
    except UsageError:
        if (found := outside(engine, prompt, interventions, layer)) is None:
            raise  # another mistake: said as it is
        return PositionsOutside(request, *found)
    return AnalysisFinished(request, analysis, time.monotonic() - tic)


def outside(
    engine: EngineProtocol, prompt: str, interventions: tuple[Intervention, ...], layer: int
) -> tuple[tuple[Intervention, ...], int] | None:
    """After a usage error: the interventions pinned to positions beyond the prompt and its length, when
    there are any. The prompt's length comes from its clean analysis, which the engine makes for any
    intervened one anyway, and keeps; None when nothing pinned lies outside (the error was another)."""
    if all(iv.position is None for iv in interventions):
        return None
    try:
        n = len(engine.analyse(prompt, (), top_k=TOP_K, features=[layer], attention=[layer], lens=False).tokens)
    except LenstopError:  # then the first error is the one to show (anything else is lenstop's own fault)
        return None
    found = tuple(iv for iv in interventions if iv.position is not None and not -n <= iv.position < n)
    return (found, n) if found else None


def read_layer(
    engine: EngineProtocol, a: Analysis, layer: int, features: bool, attention: bool, rest_s: float
) -> Callable[[Job], None]:
    """What `a` lacks of `layer` (its features, its attention), read once the layer keys have rested `rest_s`
    (no pass for a layer passed by); each posted as it comes, or why it could not be."""

    def read(job: Job) -> None:
        time.sleep(rest_s)
        if features and not job.stale():
            job.step(
                lambda: FeaturesFound(
                    job.request, layer, engine.features(a.prompt, layer, a.interventions, top_k=TOP_K)
                ),
                lambda request, failure: FeaturesFailed(request, failure, layer),
            )
        if attention and not job.stale():
            job.step(
                lambda: AttentionFound(job.request, layer, engine.attention(a.prompt, layer, a.interventions)),
                lambda request, failure: AttentionFailed(request, failure, layer),
            )

    return read
