"""Circuits: which features and heads cause a prediction.

- `spec`: the plain values a front end names (a metric, a node, a circuit's options); no torch.
- `results`: the frozen answers (attributions, patching grids, head roles, a circuit); no torch.
- `metric`: resolving a metric against the tokenizer, and its value from logits.
- `passes`: the differentiable pass (a gradient handle on every node) and the pass that records values.
- `rows`: batches of runs of the prompt with one edit per row.
- `setup`: what every method starts from: the prompt's pass, the metric resolved, the baseline.
- `attribution`, `direct`, `patching`, `roles`, `graph`: the methods, each checked against reality in tests.
- `api`: the entry points, each a function of a `ModelHandle`.

The engine exposes them as `Engine.attribute`, `direct`, `effects`, `patch`, `head_roles` and `circuit`.
"""
