"""The circuit methods as the engine offers them, each a function of a `ModelHandle`.

Each checks what it was asked before any pass runs, builds its set-up (`setup`:
the prompt's pass, the metric resolved on it, the baseline) under the handle's
guard, and hands it to its method. `Engine.attribute`, `effects`, `direct`,
`patch`, `head_roles` and `circuit` delegate here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lenstop.models.circuits import attribution, graph, patching, roles, setup
from lenstop.models.circuits.direct import direct_attribution
from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
from lenstop.models.circuits.setup import Prompts, Setup, tokenize_prompts
from lenstop.models.circuits.spec import CircuitOptions, Direction, Metric, Node, check_steps
from lenstop.models.errors import UsageError

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle


def attribute(
    handle: ModelHandle,
    prompt: str,
    metric: Metric,
    *,
    corrupt: str | None = None,
    path: Sequence[Node] = (),
    top: int | None = 30,
    steps: int = 0,
    real: int = 0,
) -> Attribution:
    """Every node's attribution to the metric (or, with `path`, to the last node followed upstream from it):
    features and error nodes at every dictionary, heads, MLPs and embeddings, at every position.

    The baseline is zero, or the node's value on `corrupt`. `steps` > 0 uses integrated gradients;
    `real` measures the real effect of removing each of the top `real` nodes (batched runs).
    """
    check_steps(steps)
    found = tokenize_prompts(handle, prompt, corrupt)
    check_nodes(handle, path, found.seq)
    result, s = _attributed(handle, found, metric, path, top, steps)
    if not real:
        return result
    if path:
        raise UsageError("real effects are measured on the metric; go back to it to measure them")
    nodes = [score.node for score in result.nodes[:real]]
    with handle.guard(found.seq):
        measured = attribution.real_effects(s, nodes)
    return result.with_real(dict(zip(nodes, measured, strict=True)))


def _attributed(
    handle: ModelHandle, found: Prompts, metric: Metric, path: Sequence[Node], top: int | None, steps: int
) -> tuple[Attribution, Setup]:
    """The attribution from one differentiable pass, and its set-up without the trace: the graph goes with
    this call, before any real effect is measured."""
    with handle.guard(found.seq, grad=True):
        s = setup.traced(handle, found, metric)
        return attribution.attribute(s, path=path, top=top, steps=steps), s.untraced()


def effects(
    handle: ModelHandle, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
) -> tuple[float, ...]:
    """The real fall of the metric when each node alone is removed (set to zero, or to its corrupted value)."""
    found = tokenize_prompts(handle, prompt, corrupt)
    check_nodes(handle, nodes, found.seq)
    with handle.guard(found.seq):
        return tuple(attribution.real_effects(setup.recorded(handle, found, metric), nodes))


def check_nodes(handle: ModelHandle, nodes: Sequence[Node], seq: int) -> None:
    """Every node exists in this model and prompt, or a usage error says which does not."""
    for node in nodes:
        what = node.describe()
        if node.layer is not None and not 0 <= node.layer < handle.n_layers:
            raise UsageError(f"{what}: the model has layers 0..{handle.n_layers - 1}")
        if node.position is not None and not 0 <= node.position < seq:
            raise UsageError(f"{what}: the prompt has positions 0..{seq - 1}")
        if node.head is not None and not 0 <= node.head < handle.n_heads:
            raise UsageError(f"{what}: each layer has heads 0..{handle.n_heads - 1}")
        if node.kind in ("feature", "error"):
            assert node.layer is not None  # a Node names a layer unless it is an embedding
            try:
                d = handle.dictionaries.at(node.layer)
            except UsageError as err:
                raise UsageError(f"{what}: {err}") from None
            if node.feature is not None and not 0 <= node.feature < d.d_sae:
                raise UsageError(f"{what}: {d.key} has features 0..{d.d_sae - 1}")


def direct(handle: ModelHandle, prompt: str, metric: Metric, *, sources: bool = False) -> DirectAttribution:
    """Direct logit attribution of the metric: embeddings, each head (by source position with `sources`),
    each MLP and the biases, through the final norm with its scale frozen; the parts add up to the metric."""
    tokens = handle.tokenize(prompt)
    with handle.guard(tokens.shape[-1], grad=True):
        return direct_attribution(handle, tokens, metric, sources=sources)


def patch(
    handle: ModelHandle,
    clean: str,
    corrupt: str,
    metric: Metric,
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
    found = tokenize_prompts(handle, clean, corrupt)
    patching.check_direction(direction)
    with handle.guard(found.seq, grad=True):
        return patching.patch(
            setup.recorded(handle, found, metric),
            direction=direction,
            head_positions=head_positions,
            features=features,
            progress=progress,
            cancelled=cancelled,
        )


def head_roles(handle: ModelHandle, *, refresh: bool = False) -> HeadRoles:
    """Each head's previous-token, duplicate-token and induction scores on repeated random tokens;
    computed once per model and kept on disk (`refresh` computes them again)."""
    with handle.guard(2 * roles.SPAN + 1):
        found, _ = roles.head_roles(handle, refresh=refresh)
    return found


def circuit(handle: ModelHandle, prompt: str, metric: Metric, corrupt: str | None, options: CircuitOptions) -> Circuit:
    """The circuit behind the metric: its strongest nodes (by effect on the metric) and the edges between
    them, above the thresholds (shares of the strongest); `options.steps` > 0 uses integrated gradients."""
    found = tokenize_prompts(handle, prompt, corrupt)
    with handle.guard(found.seq, grad=True):
        return graph.find_circuit(setup.traced(handle, found, metric), options)
