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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lenstop.models.circuits.metric import resolve
from lenstop.models.circuits.results import DirectAttribution
from lenstop.models.circuits.spec import Metric
from lenstop.models.errors import IncompatibleError
from lenstop.models.results import frozen_array
from lenstop.models.runtime import hook_names

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle

TOLERANCE = 1e-3  # relative, in float32: how closely the parts must add up before they are shown


def direct_attribution(
    handle: ModelHandle, tokens: torch.Tensor, metric: Metric, *, sources: bool = False
) -> DirectAttribution:
    names = _hooks_needed(handle, sources)  # 1. what the split reads; a model it cannot split is refused
    logits, seen = _forward(handle, tokens, names)  # 2. one pass, the final norm's scale frozen
    mv = resolve(metric, handle.model.tokenizer, logits.detach(), handle.token_strings)
    pos = mv.position
    quantity = logits[0, pos, mv.target_id].float()  # 3. the logit quantity, and u: its gradient at the end
    if mv.wrong_id is not None:
        quantity = quantity - logits[0, pos, mv.wrong_id].float()
    (grad,) = torch.autograd.grad(quantity, [seen["delta"]])
    u = _Readout(grad[0, pos].float())
    bias = float(quantity.detach()) - u.dot(seen["final"][pos])  # 4. u dotted with every write
    parts = _Parts.of(handle, seen, pos, u, tokens.shape[-1], sources, bias)
    embed = u.dot(seen[hook_names.resid_pre(0)][pos])
    normaliser = mv.clean - float(quantity.detach())
    total = embed + parts.heads.sum() + parts.mlps.sum() + parts.bias + normaliser  # 5. checked to add up
    # The model adds its residual stream up in its own precision, lenstop the parts in float32.
    rounding = 8 * torch.finfo(handle.model.cfg.dtype).eps * (parts.magnitude + abs(embed) + abs(normaliser))
    if abs(total - mv.clean) > TOLERANCE * max(1.0, abs(mv.clean)) + rounding:
        raise IncompatibleError(
            f"direct attribution does not add up on {handle.name} ({total:.4f} against {mv.clean:.4f}): its "
            "residual stream is not the sum of the embeddings, per-head outputs and MLP outputs lenstop reads"
        )
    return DirectAttribution(
        metric=mv,
        total=mv.clean,
        embed=embed,
        heads=frozen_array(parts.heads, np.float32),
        mlps=frozen_array(parts.mlps, np.float32),
        bias=parts.bias,
        normaliser=normaliser,
        head_sources=None if parts.head_sources is None else frozen_array(parts.head_sources, np.float32),
    )


def _hooks_needed(handle: ModelHandle, sources: bool) -> list[str]:
    """The hooks whose values the split reads, after checking the model has them and does not soft-cap."""
    if float(getattr(handle.model.cfg, "output_logits_soft_cap", 0.0) or 0.0) > 0:
        raise IncompatibleError(
            f"{handle.name} soft-caps its logits, so the metric is not a sum of parts: no direct attribution"
        )
    names = [hook_names.resid_pre(0)]
    for layer in range(handle.n_layers):
        names += [hook_names.z(layer), hook_names.mlp_out(layer)]
        if sources:
            names += [hook_names.v(layer), hook_names.pattern(layer)]
    missing = [n for n in [*names, hook_names.FINAL_SCALE] if n not in handle.model.hook_dict]
    if missing:
        raise IncompatibleError(f"direct attribution needs hooks this model lacks: {', '.join(missing)}")
    return names


def _forward(handle: ModelHandle, tokens: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The logits, every hook of `names` read, the final norm's scale frozen, and a zero leaf ("delta") at the
    final residual stream ("final"), whose gradient is `u`."""
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

    hooks = [(n, keep(n)) for n in names] + [
        (hook_names.FINAL_SCALE, freeze),
        (hook_names.resid_post(handle.n_layers - 1), leaf),
    ]
    with handle.hooks(hooks):
        logits = handle.model(tokens)
    return logits, seen


class _Readout:
    """`u`, the gradient at the final residual stream, where each activation is: a model split across devices
    keeps each layer's activations on its own."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u = u
        self.by_device: dict[torch.device, torch.Tensor] = {}

    def on(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self.by_device:
            self.by_device[x.device] = self.u.to(x.device)
        return self.by_device[x.device]

    def dot(self, x: torch.Tensor) -> float:
        return float(x.float() @ self.on(x))


@dataclass
class _Parts:
    """Each head's and each MLP's part (and each head's by source position), the biases' and the size of them
    all, for the rounding the check allows."""

    heads: np.ndarray  # (layers, heads)
    mlps: np.ndarray  # (layers,)
    head_sources: np.ndarray | None  # (layers, heads, positions)
    bias: float
    magnitude: float

    @classmethod
    def of(
        cls, handle: ModelHandle, seen: dict[str, Any], pos: int, u: _Readout, seq: int, sources: bool, bias: float
    ) -> _Parts:
        n_layers, n_heads = handle.n_layers, handle.n_heads
        parts = cls(np.zeros((n_layers, n_heads)), np.zeros(n_layers), None, bias, abs(bias))
        if sources:
            parts.head_sources = np.zeros((n_layers, n_heads, seq))
        for layer in range(n_layers):
            attn = handle.model.blocks[layer].attn  # one layer's weights: the bridge's model.W_O stacks a copy of all
            z = seen[hook_names.z(layer)][pos].float()  # (heads, d_head)
            w_o = attn.W_O.detach().to(z.device).float()  # (heads, d_head, d_model)
            u_z = u.on(z)
            parts.heads[layer] = torch.einsum("hd,hdm,m->h", z, w_o, u_z).cpu().numpy()
            parts.mlps[layer] = u.dot(seen[hook_names.mlp_out(layer)][pos])
            parts.bias += u.dot(attn.b_O.detach())
            parts.magnitude += float(np.abs(parts.heads[layer]).sum()) + abs(parts.mlps[layer])
            if parts.head_sources is not None:
                per_source = _by_source(seen, layer, pos, w_o, u_z)
                parts.head_sources[layer, :, : per_source.shape[1]] = per_source
        return parts


def _by_source(seen: dict[str, Any], layer: int, pos: int, w_o: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    """Each head's part at `pos` split by the source position it attends to, (heads, seq)."""
    v = seen[hook_names.v(layer)].float()  # (seq, kv heads, d_head)
    if v.shape[1] != w_o.shape[0]:  # grouped-query attention: each value head serves several heads
        v = v.repeat_interleave(w_o.shape[0] // v.shape[1], dim=1)
    pattern = seen[hook_names.pattern(layer)][:, pos].float()  # (heads, seq)
    return torch.einsum("hs,shd,hdm,m->hs", pattern, v, w_o, u).cpu().numpy()
