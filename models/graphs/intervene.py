"""Setting a graph's feature nodes and running the model again, as circuit-tracer's `feature_intervention`.

The real model runs with each set feature's change written into the MLP outputs it decodes to:
at layer L's MLP input the feature's activation is read live (so upstream settings move it), and
`(value - live) * its decoder row` is added to the MLP output of L (and, for a cross-layer
transcoder, of every later layer it writes to). The error and the MLP itself stay as they are.
With `freeze_attention` (circuit-tracer's default) every attention pattern is held at its value on
the clean prompt, so the change travels only along the paths the graph's edges describe.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lenstop.models.dictionaries import Replacement, replacement_of
from lenstop.models.errors import NumericError, UsageError
from lenstop.models.graphs.result import AttributionGraph, GraphIntervention, NodeSetting, TargetChange
from lenstop.models.runtime import hook_names
from lenstop.models.runtime.handle import ModelHandle

TOP = 10


def _check(settings: Sequence[NodeSetting], replacement: Replacement, n_pos: int) -> None:
    for s in settings:
        if not 0 <= s.layer < replacement.n_layers:
            raise UsageError(f"layer {s.layer} does not exist; the transcoders cover 0..{replacement.n_layers - 1}")
        if not 0 <= s.feature < replacement.d_features(s.layer):
            raise UsageError(f"feature {s.feature} does not exist at layer {s.layer}")
        if not 0 <= s.position < n_pos:
            raise UsageError(f"position {s.position} is outside the prompt (0..{n_pos - 1})")


def intervene(
    handle: ModelHandle, graph: AttributionGraph, settings: Sequence[NodeSetting], *, freeze_attention: bool = True
) -> GraphIntervention:
    """The graph's prompt run with `settings` made; its targets before and after."""
    replacement = replacement_of(handle.dictionaries, handle.n_layers)
    tokens = torch.tensor([graph.token_ids], device=handle.model.cfg.device)
    _check(settings, replacement, len(graph.token_ids))
    patterns: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Callable[..., torch.Tensor]:
        def hook(value: torch.Tensor, hook: Any) -> torch.Tensor:
            patterns[layer] = value.detach()
            return value

        return hook

    with handle.guard(len(graph.token_ids)):
        keeping = [(hook_names.pattern(layer), keep(layer)) for layer in range(handle.n_layers)]
        with handle.hooks(keeping if freeze_attention else []):
            clean = handle.model(tokens)[0, -1].float()
        hooks = _setting_hooks(replacement, settings, handle.n_layers)
        if freeze_attention:
            hooks += [(hook_names.pattern(layer), lambda v, hook, p=patterns[layer]: p) for layer in patterns]
        with handle.hooks(hooks):
            logits = handle.model(tokens)
        new = logits[0, -1].float()
    if not torch.isfinite(new).all():
        raise NumericError("setting those features made the model's output NaN or infinite; use smaller values")
    clean_p, new_p = clean.softmax(-1), new.softmax(-1)
    changes = tuple(
        TargetChange(t.token, t.id, float(clean[t.id]), float(new[t.id]), float(clean_p[t.id]), float(new_p[t.id]))
        for t in graph.targets
    )
    top = torch.topk(new_p, TOP)
    names = handle.token_strings(top.indices.tolist())
    return GraphIntervention(
        tuple(settings), freeze_attention, changes, tuple(zip(names, top.values.tolist(), strict=True))
    )


def _setting_hooks(
    replacement: Replacement, settings: Sequence[NodeSetting], n_layers: int
) -> list[tuple[str, Callable[..., torch.Tensor]]]:
    by_layer: dict[int, list[NodeSetting]] = defaultdict(list)
    for s in settings:
        by_layer[s.layer].append(s)
    pending: dict[int, list[torch.Tensor]] = defaultdict(list)  # output layer -> deltas (seq, d_model)

    def read(layer: int) -> Callable[..., torch.Tensor]:
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            acts = replacement.encode(layer, x[0])
            for s in by_layer[layer]:
                change = s.value - acts[s.position, s.feature]
                rows = replacement.decoder_vectors(layer, torch.tensor([s.feature]))[0]  # (n_out, d_model)
                for j in range(rows.shape[0]):
                    delta = torch.zeros_like(x[0])
                    delta[s.position] = change * rows[j].to(x.dtype)
                    pending[layer + j].append(delta)
            return x

        return hook

    def write(layer: int) -> Callable[..., torch.Tensor]:
        def hook(out: torch.Tensor, hook: Any) -> torch.Tensor:
            deltas = pending.pop(layer, [])
            return out + torch.stack(deltas).sum(0)[None] if deltas else out

        return hook

    hooks = [(hook_names.mlp_in(layer), read(layer)) for layer in sorted(by_layer)]
    return hooks + [(hook_names.mlp_out(layer), write(layer)) for layer in range(n_layers)]
