"""What every circuit method starts from, computed once: the prompt (and a corrupted
one that lines up with it), its clean pass, the metric resolved on it, and the
baseline each node is removed to.

`recorded` runs the prompt for its values only (real effects, patching); `traced`
runs it differentiably, and its `TracedSetup` is what attribution and a circuit
take the gradients of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lenstop.models.circuits.metric import metric_value, resolve
from lenstop.models.circuits.passes import Trace, Values, differentiable_pass, record_values
from lenstop.models.circuits.results import MetricValue
from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.errors import LengthMismatchError

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle


@dataclass(frozen=True)
class Prompts:
    """The prompt's text and tokens (1, seq), and a corrupted prompt's, token for token as long."""

    text: str
    tokens: torch.Tensor
    corrupt_text: str | None = None
    corrupt: torch.Tensor | None = None

    @property
    def seq(self) -> int:
        return int(self.tokens.shape[-1])


def tokenize_prompts(handle: ModelHandle, prompt: str, corrupt: str | None) -> Prompts:
    """The prompt tokenised, and a corrupted prompt's tokens, which must line up with them token for token."""
    tokens = handle.tokenize(prompt)
    if corrupt is None:
        return Prompts(prompt, tokens)
    other = handle.tokenize(corrupt)
    if other.shape != tokens.shape:
        raise LengthMismatchError(
            f"the clean prompt is {tokens.shape[-1]} tokens and the corrupted one {other.shape[-1]}; "
            "patching needs them equally long, token for token",
            handle.token_strings(tokens[0].tolist()),
            handle.token_strings(other[0].tolist()),
        )
    return Prompts(prompt, tokens, corrupt, other)


@dataclass(frozen=True)
class Setup:
    """The prompt's clean values, the metric resolved on them, and the baseline: zero, or the corrupted
    prompt's values."""

    handle: ModelHandle
    prompts: Prompts
    values: Values
    metric: MetricValue
    base: Values

    @property
    def tokens(self) -> torch.Tensor:
        return self.prompts.tokens

    @property
    def corrupted(self) -> bool:
        """Whether the baseline is a corrupted prompt's run rather than zero."""
        return self.prompts.corrupt is not None


@dataclass(frozen=True)
class TracedSetup(Setup):
    """A set-up whose clean pass can be differentiated from the metric or any node followed from it."""

    trace: Trace

    def untraced(self) -> Setup:
        """The same set-up without the trace, whose graph holds a whole forward pass."""
        return Setup(self.handle, self.prompts, self.values, self.metric, self.base)

    def target(self, path: Sequence[Node]) -> torch.Tensor:
        """The scalar to explain: the metric, or the last node of `path` followed from it."""
        value = metric_value(self.trace.logits, self.metric)[0]
        for node in path:
            value = self.trace.value_of(node, value)
        return value


def recorded(handle: ModelHandle, found: Prompts, metric: Metric) -> Setup:
    """The set-up from a pass that records the values only."""
    values = record_values(handle, found.tokens)
    return Setup(handle, found, values, _resolved(handle, values, metric), _baseline(handle, values, found))


def traced(handle: ModelHandle, found: Prompts, metric: Metric) -> TracedSetup:
    """The set-up from a differentiable pass, its gradients to be taken (under `handle.guard(..., grad=True)`)."""
    trace = differentiable_pass(handle, found.tokens)
    resolved = _resolved(handle, trace.values, metric)
    return TracedSetup(handle, found, trace.values, resolved, _baseline(handle, trace.values, found), trace)


def _resolved(handle: ModelHandle, values: Values, metric: Metric) -> MetricValue:
    assert values.logits is not None
    return resolve(metric, handle.model.tokenizer, values.logits, handle.token_strings)


def _baseline(handle: ModelHandle, values: Values, found: Prompts) -> Values:
    """What a node is removed to: zero, or its value on the corrupted prompt."""
    if found.corrupt is None:
        return values.zeros_like()
    return record_values(handle, found.corrupt)
