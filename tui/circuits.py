"""What the circuit view asks of the engine, as calls that a worker runs (`lenstop.tui.work`): the
attribution, the circuit, the patching and the real effects, each for one `Question`.

Each returns the message to post; none touches a widget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lenstop.models.circuits.spec import Direction, Metric, Node
from lenstop.models.protocol import EngineProtocol
from lenstop.tui.messages import AttributionFinished, CircuitFinished, EffectsMeasured, PatchFinished, PatchProgressed
from lenstop.tui.work import Job

MAX_NODES = 16  # in the drawn circuit
PATCHED_FEATURES = 20  # features patched beside the residual stream and the heads


@dataclass(frozen=True)
class Question:
    """What the view explains, as it stands when a call is made: the prompt, the metric, the baseline (a
    corrupted prompt, or zero), the node followed upstream, the integrated-gradient steps, the direction."""

    prompt: str
    metric: Metric
    corrupt: str | None
    path: tuple[Node, ...]
    steps: int
    direction: Direction


def attribute(engine: EngineProtocol, q: Question) -> Callable[[Job], AttributionFinished]:
    def call(job: Job) -> AttributionFinished:
        found = engine.attribute(q.prompt, q.metric, corrupt=q.corrupt, path=q.path, top=None, steps=q.steps)
        return AttributionFinished(job.request, found)

    return call


def find_circuit(engine: EngineProtocol, q: Question) -> Callable[[Job], CircuitFinished]:
    def call(job: Job) -> CircuitFinished:
        found = engine.circuit(q.prompt, q.metric, corrupt=q.corrupt, steps=q.steps, max_nodes=MAX_NODES)
        return CircuitFinished(job.request, found)

    return call


def patch(engine: EngineProtocol, q: Question, corrupt: str) -> Callable[[Job], PatchFinished]:
    """Patching between the prompt and `corrupt`, its progress posted as it goes; it stops once stale."""

    def call(job: Job) -> PatchFinished:
        found = engine.patch(
            q.prompt,
            corrupt,
            q.metric,
            direction=q.direction,
            features=PATCHED_FEATURES,
            progress=lambda share: job.post(PatchProgressed(job.request, share)),
            cancelled=job.stale,
        )
        return PatchFinished(job.request, found)

    return call


def measure(engine: EngineProtocol, q: Question, nodes: tuple[Node, ...]) -> Callable[[Job], EffectsMeasured]:
    def call(job: Job) -> EffectsMeasured:
        return EffectsMeasured(job.request, nodes, engine.effects(q.prompt, q.metric, nodes, corrupt=q.corrupt))

    return call
