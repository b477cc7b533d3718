"""Turning a `Metric` into numbers: its tokens resolved against the tokenizer, and its
value computed from logits, differentiably, for any batch of runs."""

from __future__ import annotations

from typing import Any

import torch

from lenstop.models.circuits.results import MetricValue
from lenstop.models.circuits.spec import Metric
from lenstop.models.errors import UsageError
from lenstop.models.prompts import resolve_position


def token_id(tokenizer: Any, text: str, what: str) -> int:
    """One token's id from its text (" first"), or from `#ID`; anything that is not one token is an error."""
    if text.startswith("#") and text[1:].isdigit():
        found = int(text[1:])
        if not 0 <= found < len(tokenizer):
            raise UsageError(f"{what} {text}: the vocabulary has ids 0..{len(tokenizer) - 1}")
        return found
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise UsageError(
            f"{what} {text!r} is {len(ids)} tokens {pieces!r}, not one; "
            "name a single token (mind a leading space) or #ID"
        )
    return int(ids[0])


def metric_value(logits: torch.Tensor, metric: MetricValue) -> torch.Tensor:
    """The metric of each run: logits (batch, seq, vocab) -> (batch,)."""
    at = logits[:, metric.position].float()
    if metric.wrong_id is not None:
        return at[:, metric.target_id] - at[:, metric.wrong_id]
    return at.log_softmax(-1)[:, metric.target_id]


def resolve(metric: Metric, tokenizer: Any, logits: torch.Tensor, decode: Any) -> MetricValue:
    """The metric on a prompt whose clean logits (1, seq, vocab) are given; the target defaults to the top prediction.

    `decode(ids)` gives each token's text, as the engine shows tokens.
    """
    seq = logits.shape[1]
    position = resolve_position(metric.position, seq)
    assert position is not None
    target = token_id(tokenizer, metric.target, "--target") if metric.target else int(logits[0, position].argmax())
    wrong = token_id(tokenizer, metric.wrong, "--wrong") if metric.wrong else None
    if wrong == target:
        raise UsageError("the wrong token is the target itself; name another token")
    texts = decode([target] if wrong is None else [target, wrong])
    partial = MetricValue(position, texts[0], target, texts[1] if wrong is not None else None, wrong, 0.0)
    value = float(metric_value(logits, partial)[0])
    return MetricValue(partial.position, partial.target, target, partial.wrong, wrong, value)
