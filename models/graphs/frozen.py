"""The local replacement model's linear part, as explicit arithmetic.

Freeze every attention pattern and every norm's scale at its value on the prompt,
stop the gradient through each MLP (a transcoder stands in for it, with its
reconstruction error as a fixed input) and the model is linear in its residual
stream: the direct effect of a source on a target is a dot product of the
source's vector with the gradient of the target's pre-activation at the place
the source writes (Ameisen et al. 2025). circuit-tracer gets those gradients
by hooking autograd through the whole model; here they are computed from the
weights and the frozen values themselves, block by block, top down:

    at a target's read point  g += its vector          (an encoder row, a logit direction)
    through a norm            g  = centre(w * g) / s    (no centring for RMSNorm)
    through attention         g += norm1ᵀ( sum_h A_hᵀ g W_O,hᵀ W_V,hᵀ )
    through a skip transcoder g_mlp_in = g Mᵀ           (else the MLP passes nothing)

which touches only the value and output matrices, never the MLPs, the queries or
the keys, and keeps one (batch, positions, d_model) buffer. What each source
reads is recorded on the way down: the gradient at every layer's MLP output and
at the token embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lenstop.models.errors import IncompatibleError
from lenstop.models.runtime import hook_names

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle


@dataclass(frozen=True)
class Norm:
    """One frozen norm: its weight, and its scale at every position of the prompt."""

    weight: torch.Tensor  # (d_model,)
    scale: torch.Tensor  # (n_pos,)
    centred: bool  # LayerNorm centres its input; RMSNorm does not

    def back(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient at the norm's input from the gradient `g` (batch, n, d_model) at its output, for the
        first n positions."""
        g = g * self.weight
        if self.centred:
            g = g - g.mean(-1, keepdim=True)
        return g / self.scale[: g.shape[1], None]


@dataclass(frozen=True)
class FrozenBlock:
    """One block with its attention patterns and norm scales fixed."""

    ln1: Norm
    ln2: Norm
    pattern: torch.Tensor  # (heads, query, key)
    w_v: torch.Tensor  # (heads, d_model, d_head)
    w_o: torch.Tensor  # (heads, d_head, d_model)

    def attention_back(self, g: torch.Tensor) -> torch.Tensor:
        """The gradient at the block's input through its heads' value paths, from `g` at its attention output."""
        heads, d_head, d_model = self.w_o.shape
        batch, n_pos = g.shape[0], g.shape[1]
        u = g @ self.w_o.reshape(heads * d_head, d_model).T  # (batch, query, heads * d_head)
        # one (key, query) @ (query, batch * d_head) product a head, rather than batch x heads small ones
        u = u.reshape(batch, n_pos, heads, d_head).permute(2, 1, 0, 3).reshape(heads, n_pos, batch * d_head)
        pattern = self.pattern[:, :n_pos, :n_pos]  # causal: the first n queries read only the first n keys
        u = pattern.transpose(1, 2) @ u  # each key gathers its queries
        u = u.reshape(heads, n_pos, batch, d_head).permute(2, 1, 0, 3).reshape(batch, n_pos, heads * d_head)
        return self.ln1.back(u @ self.w_v.transpose(1, 2).reshape(heads * d_head, d_model))


@dataclass(frozen=True)
class Reads:
    """What each source reads for a batch of targets: the gradient of each target at each place a source writes."""

    mlp_out: list[torch.Tensor | None]  # per layer, (batch, n, d_model) for the first n positions; None: zero
    embed: torch.Tensor  # (batch, n, d_model)


@dataclass(frozen=True)
class FrozenModel:
    """The replacement model's linear map on one prompt; `back` gives a batch of targets' gradients."""

    blocks: list[FrozenBlock]
    final: Norm
    skips: list[torch.Tensor | None]  # per layer, M with skip = mlp_in @ M, or None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def back(self, layers: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor) -> Reads:
        """Inject target b's `vectors[b]` at layer `layers[b]`'s MLP input, at `positions[b]` (layer n_layers:
        the final norm's output) and carry every target down to the embedding at once.

        Nothing flows forward in position or up in layer, so the batch is carried only over positions up to
        its last target's and through blocks below its highest: the reads are (batch, n, d_model) for the
        first n positions, and None for the layers at or above every target (they read zeros)."""
        batch, n = len(layers), int(positions.max()) + 1
        top = int(layers.max())
        rows = torch.arange(batch, device=vectors.device)
        g = vectors.new_zeros(batch, n, vectors.shape[-1])
        final = layers == self.n_layers
        if final.any():
            g[rows[final], positions[final]] = vectors[final]
            g = self.final.back(g)
        reads: list[torch.Tensor | None] = [None] * self.n_layers
        for layer in reversed(range(min(top + 1, self.n_layers))):
            block = self.blocks[layer]
            if layer < top:
                reads[layer] = g
            skip = self.skips[layer]
            at_mlp_in = g @ skip.T if skip is not None and layer < top else g.new_zeros(g.shape)
            here = layers == layer
            if here.any():
                at_mlp_in = at_mlp_in.index_put((rows[here], positions[here]), vectors[here], accumulate=True)
            g = g + block.ln2.back(at_mlp_in)
            g = g + block.attention_back(g)
        return Reads(reads, g)


def norm_of(module: object, x: torch.Tensor, eps: float, centred: bool) -> Norm:
    """A norm frozen at the scale it has on `x` (n_pos, d_model), its input on the prompt."""
    if centred:
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1) + eps).sqrt()
    return Norm(module.w.detach(), scale, centred)  # type: ignore[attr-defined]


def normalization(handle: ModelHandle) -> bool:
    """Whether the model's norms centre (LayerNorm) or not (RMSNorm); other models are refused in one line."""
    cfg = handle.model.cfg
    kind = getattr(cfg, "normalization_type", None)
    if kind in ("LN", "LNPre"):
        return True
    if kind in ("RMS", "RMSPre"):
        return False
    raise IncompatibleError(
        f"attribution graphs need a model whose blocks use LayerNorm or RMSNorm; {handle.name} uses {kind!r}"
    )


def check_architecture(handle: ModelHandle) -> None:
    """Refuse, in one line, the block layouts whose linear part this module does not write out."""
    cfg = handle.model.cfg
    for flag, what in (
        ("parallel_attn_mlp", "parallel attention and MLP"),
        ("use_normalization_before_and_after", "norms after attention and MLP"),
        ("rmsnorm_uses_offset", "norms that scale by 1 + weight (Gemma's)"),
    ):
        if getattr(cfg, flag, False):
            raise IncompatibleError(f"attribution graphs do not support {what} yet ({handle.name})")


def frozen_model(
    handle: ModelHandle, captured: dict[str, torch.Tensor], skips: list[torch.Tensor | None]
) -> FrozenModel:
    """The frozen linear map from one forward pass's captures (see `capture_hooks`), without the batch dimension."""
    model = handle.model
    centred = normalization(handle)
    eps = float(model.cfg.eps)
    w_v, w_o = model.W_V.detach(), model.W_O.detach()
    n_heads = w_o.shape[1]
    blocks = []
    for layer, block in enumerate(model.blocks):
        wv = w_v[layer]
        if wv.shape[0] != n_heads:  # grouped-query attention: each key-value head serves several heads
            wv = wv.repeat_interleave(n_heads // wv.shape[0], dim=0)
        blocks.append(
            FrozenBlock(
                norm_of(block.ln1, captured[ln_in(layer, 1)], eps, centred),
                norm_of(block.ln2, captured[ln_in(layer, 2)], eps, centred),
                captured[hook_names.pattern(layer)],
                wv,
                w_o[layer],
            )
        )
    final = norm_of(model.ln_final, captured["ln_final.hook_in"], eps, centred)
    return FrozenModel(blocks, final, skips)


def ln_in(layer: int, which: int) -> str:
    return f"blocks.{layer}.ln{which}.hook_in"


def capture_names(n_layers: int) -> list[str]:
    """Every value one forward pass records for the frozen map and the graph's nodes."""
    names = ["hook_embed", "ln_final.hook_in"]
    for layer in range(n_layers):
        names += [
            ln_in(layer, 1),
            ln_in(layer, 2),
            hook_names.pattern(layer),
            hook_names.mlp_in(layer),
            hook_names.mlp_out(layer),
        ]
    return names
