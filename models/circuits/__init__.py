"""Circuits: which features and heads cause a prediction.

- `spec`: the plain values a front end names (a metric, a node); no torch.
- `results`: the frozen answers (attributions, patching grids, head roles, a circuit); no torch.
- `metric`, `tracing`: resolving a metric, and one forward pass with a gradient handle on every node.
- `attribution`, `direct`, `patching`, `roles`, `graph`: the methods, each checked against reality in tests.

The engine exposes them as `Engine.attribute`, `direct`, `effects`, `patch`, `head_roles` and `circuit`.
"""
