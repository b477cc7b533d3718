"""The engine's circuit methods, as a block: `Engine` binds each of these functions as its method of the same
name (`self` is the engine), until they become delegations to `lenstop.models.circuits` taking the handle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from lenstop.models.circuits import attribution, patching, roles
from lenstop.models.circuits.direct import direct_attribution
from lenstop.models.circuits.graph import find_circuit
from lenstop.models.circuits.metric import resolve as resolve_metric
from lenstop.models.circuits.results import (
    Attribution,
    Circuit,
    DirectAttribution,
    HeadRoles,
    MetricValue,
    Patching,
)
from lenstop.models.circuits.spec import CIRCUIT_KINDS, Direction, Metric, Node, NodeKind, check_steps
from lenstop.models.errors import LengthMismatchError, UsageError

if TYPE_CHECKING:
    from lenstop.models.engine import Engine


def _prompt_pair(self: Engine, prompt: str, corrupt: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt's tokens, and a corrupted prompt's, which must line up with them token for token."""
    tokens = self.tokenize(prompt)
    if corrupt is None:
        return tokens, None
    other = self.tokenize(corrupt)
    if other.shape != tokens.shape:
        clean_text = self.token_strings(tokens[0].tolist())
        corrupt_text = self.token_strings(other[0].tolist())
        raise LengthMismatchError(
            f"the clean prompt is {tokens.shape[-1]} tokens and the corrupted one {other.shape[-1]}; "
            "patching needs them equally long, token for token",
            clean_text,
            corrupt_text,
        )
    return tokens, other


def attribute(
    self: Engine,
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
    features and error nodes at every dictionary, heads, MLPs and embeddings, at every position.

    The baseline is zero, or the node's value on `corrupt`. `steps` > 0 uses integrated gradients;
    `real` measures the real effect of removing each of the top `real` nodes (batched runs).
    """
    check_steps(steps)
    tokens, corrupt_tokens = self._prompt_pair(prompt, corrupt)
    self._check_nodes(path, tokens.shape[-1])
    with self.handle.guard(tokens.shape[-1], grad=True):
        mv, value, scores, totals = attribution.attribute(
            self, tokens, corrupt_tokens, metric, path=path, top=top, steps=steps
        )
    if real:
        if path:
            raise UsageError("real effects are measured on the metric; go back to it to measure them")
        measured = self._effects(tokens, corrupt_tokens, mv, [s.node for s in scores[:real]])
        scores = list(attribution.with_real(scores, measured))
    return attribution.as_result(self, prompt, tokens, corrupt, mv, value, scores, totals, path, steps)


def effects(
    self: Engine, prompt: str, metric: Metric, nodes: Sequence[Node], *, corrupt: str | None = None
) -> tuple[float, ...]:
    """The real fall of the metric when each node alone is removed (set to zero, or to its corrupted value)."""
    tokens, corrupt_tokens = self._prompt_pair(prompt, corrupt)
    self._check_nodes(nodes, tokens.shape[-1])
    with self.handle.guard(tokens.shape[-1]):
        logits, _ = self._run(tokens, ())
        mv = resolve_metric(metric, self.model.tokenizer, logits.unsqueeze(0), self.token_strings)
    return tuple(self._effects(tokens, corrupt_tokens, mv, nodes))


def _check_nodes(self: Engine, nodes: Sequence[Node], seq: int) -> None:
    """Every node exists in this model and prompt, or a usage error says which does not."""
    layers = {d.layer: d for d in self.dictionaries}
    for node in nodes:
        what = node.describe()
        if node.layer is not None and not 0 <= node.layer < self.n_layers:
            raise UsageError(f"{what}: the model has layers 0..{self.n_layers - 1}")
        if node.position is not None and not 0 <= node.position < seq:
            raise UsageError(f"{what}: the prompt has positions 0..{seq - 1}")
        if node.head is not None and not 0 <= node.head < self.n_heads:
            raise UsageError(f"{what}: each layer has heads 0..{self.n_heads - 1}")
        if node.kind in ("feature", "error"):
            found = layers.get(node.layer if node.layer is not None else -1)
            if found is None:
                raise UsageError(f"{what}: no dictionary at layer {node.layer}")
            if node.feature is not None and not 0 <= node.feature < found.d_sae:
                raise UsageError(f"{what}: {found.key} has features 0..{found.d_sae - 1}")


def _effects(
    self: Engine, tokens: torch.Tensor, corrupt: torch.Tensor | None, metric: MetricValue, nodes: Sequence[Node]
) -> list[float]:
    with self.handle.guard(tokens.shape[-1]):
        return attribution.real_effects(self, tokens, corrupt, metric, nodes)


def direct(self: Engine, prompt: str, metric: Metric = Metric(), *, sources: bool = False) -> DirectAttribution:
    """Direct logit attribution of the metric: embeddings, each head (by source position with `sources`),
    each MLP and the biases, through the final norm with its scale frozen; the parts add up to the metric."""
    tokens = self.tokenize(prompt)
    with self.handle.guard(tokens.shape[-1], grad=True):
        return direct_attribution(self, tokens, metric, sources=sources)


def patch(
    self: Engine,
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
    clean_tokens, corrupt_tokens = self._prompt_pair(clean, corrupt)
    assert corrupt_tokens is not None
    with self.handle.guard(clean_tokens.shape[-1], grad=True):
        found = patching.patch(
            self,
            clean_tokens,
            corrupt_tokens,
            metric,
            direction=direction,
            head_positions=head_positions,
            features=features,
            progress=progress,
            cancelled=cancelled,
        )
    return patching.as_result(self, clean, corrupt, clean_tokens, corrupt_tokens, direction, found)


def head_roles(self: Engine, *, refresh: bool = False) -> HeadRoles:
    """Each head's previous-token, duplicate-token and induction scores on repeated random tokens;
    computed once per model and kept on disk (`refresh` computes them again)."""
    with self.handle.guard(2 * roles.SPAN + 1):
        found, _ = roles.head_roles(self, refresh=refresh)
    return found


def circuit(
    self: Engine,
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
    check_steps(steps)
    tokens, corrupt_tokens = self._prompt_pair(prompt, corrupt)
    with self.handle.guard(tokens.shape[-1], grad=True):
        return find_circuit(
            self,
            prompt,
            tokens,
            corrupt_tokens,
            metric,
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
            max_children=max_children,
            max_nodes=max_nodes,
            kinds=kinds,
            steps=steps,
        )
