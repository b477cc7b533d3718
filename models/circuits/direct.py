"""Direct logit attribution: the metric at the final layer split into the embeddings,
each attention head (optionally by source position), each MLP and the biases.

The final norm's scale is frozen at its clean value (its hook returns the value
detached), which makes the map from the final residual stream to the logit
quantity affine: `q(x) = u · x + c`. `u` is the gradient at the final residual,
and each part is `u` dotted with that component's write to the residual stream.
A log-probability metric is the target's logit minus the log-sum-exp of the
logits, so the split is of the logit, with the log-sum-exp as its own part.
The parts add up to the metric; an architecture whose residual stream is not
the sum of these writes (a norm after attention, say) is refused, not mis-split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lenstop.models.circuits.metric import resolve
from lenstop.models.circuits.results import DirectAttribution
from lenstop.models.circuits.spec import Metric
from lenstop.models.errors import IncompatibleError
from lenstop.models.results import frozen_array

if TYPE_CHECKING:
    from lenstop.models.engine import Engine

TOLERANCE = 1e-3  # relative, in float32: how closely the parts must add up before they are shown


def direct_attribution(
    engine: Engine, tokens: torch.Tensor, metric: Metric, *, sources: bool = False
) -> DirectAttribution:
    model, n_layers = engine.model, engine.n_layers
    if float(getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0) > 0:
        raise IncompatibleError(
            f"{engine.name} soft-caps its logits, so the metric is not a sum of parts: no direct attribution"
        )
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(x: torch.Tensor, hook: Any) -> None:
            seen[name] = x[0].detach()

        return hook

    def freeze(scale: torch.Tensor, hook: Any) -> torch.Tensor:
        return scale.detach()

    def leaf(x: torch.Tensor, hook: Any) -> torch.Tensor:
        seen["final"] = x[0].detach()
        seen["delta"] = torch.zeros_like(x, requires_grad=True)
        return x + seen["delta"]

    names = ["blocks.0.hook_resid_pre"]
    for layer in range(n_layers):
        names += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"]
        if sources:
            names += [f"blocks.{layer}.attn.hook_v", f"blocks.{layer}.attn.hook_pattern"]
    missing = [n for n in [*names, "ln_final.hook_scale"] if n not in model.hook_dict]
    if missing:
        raise IncompatibleError(f"direct attribution needs hooks this model lacks: {', '.join(missing)}")
    hooks = [(n, keep(n)) for n in names] + [
        ("ln_final.hook_scale", freeze),
        (f"blocks.{n_layers - 1}.hook_resid_post", leaf),
    ]
    with engine.hooks(hooks):
        logits = model(tokens)
    mv = resolve(metric, model.tokenizer, logits.detach(), engine.token_strings)
    pos = mv.position
    quantity = logits[0, pos, mv.target_id].float()
    if mv.wrong_id is not None:
        quantity = quantity - logits[0, pos, mv.wrong_id].float()
    (grad,) = torch.autograd.grad(quantity, [seen["delta"]])
    u_out = grad[0, pos].float()
    by_device: dict[torch.device, torch.Tensor] = {}

    def on(x: torch.Tensor) -> torch.Tensor:
        """`u` where `x` is: a model split across devices keeps each layer's activations on its own."""
        if x.device not in by_device:
            by_device[x.device] = u_out.to(x.device)
        return by_device[x.device]

    def dot(x: torch.Tensor) -> float:
        return float(x.float() @ on(x))

    heads = np.zeros((n_layers, engine.n_heads))
    mlps = np.zeros(n_layers)
    head_sources = np.zeros((n_layers, engine.n_heads, tokens.shape[-1])) if sources else None
    bias = float(quantity.detach()) - dot(seen["final"][pos])
    magnitude = abs(bias)  # of the parts, for the rounding the check below allows
    for layer in range(n_layers):
        attn = model.blocks[layer].attn  # one layer's weights: the bridge's model.W_O stacks a copy of all
        z = seen[f"blocks.{layer}.attn.hook_z"][pos].float()  # (heads, d_head)
        w_o = attn.W_O.detach().to(z.device).float()  # (heads, d_head, d_model)
        u = on(z)
        heads[layer] = torch.einsum("hd,hdm,m->h", z, w_o, u).cpu().numpy()
        mlps[layer] = dot(seen[f"blocks.{layer}.hook_mlp_out"][pos])
        bias += dot(attn.b_O.detach())
        magnitude += float(np.abs(heads[layer]).sum()) + abs(mlps[layer])
        if head_sources is not None:
            v = seen[f"blocks.{layer}.attn.hook_v"].float()  # (seq, kv heads, d_head)
            if v.shape[1] != w_o.shape[0]:  # grouped-query attention: each value head serves several heads
                v = v.repeat_interleave(w_o.shape[0] // v.shape[1], dim=1)
            pattern = seen[f"blocks.{layer}.attn.hook_pattern"][:, pos].float()  # (heads, seq)
            per_source = torch.einsum("hs,shd,hdm,m->hs", pattern, v, w_o, u)
            head_sources[layer, :, : per_source.shape[1]] = per_source.cpu().numpy()
    embed = dot(seen["blocks.0.hook_resid_pre"][pos])
    normaliser = mv.clean - float(quantity.detach())
    parts = embed + heads.sum() + mlps.sum() + bias + normaliser
    # The model adds its residual stream up in its own precision, lenstop the parts in float32.
    rounding = 8 * torch.finfo(model.cfg.dtype).eps * (magnitude + abs(embed) + abs(normaliser))
    if abs(parts - mv.clean) > TOLERANCE * max(1.0, abs(mv.clean)) + rounding:
        raise IncompatibleError(
            f"direct attribution does not add up on {engine.name} ({parts:.4f} against {mv.clean:.4f}): its residual "
            "stream is not the sum of the embeddings, per-head outputs and MLP outputs lenstop reads"
        )
    return DirectAttribution(
        metric=mv,
        total=mv.clean,
        embed=embed,
        heads=frozen_array(heads, np.float32),
        mlps=frozen_array(mlps, np.float32),
        bias=bias,
        normaliser=normaliser,
        head_sources=None if head_sources is None else frozen_array(head_sources, np.float32),
    )
