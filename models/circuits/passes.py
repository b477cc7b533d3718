"""The passes over the prompt that every circuit method starts from.

`differentiable_pass` splices every dictionary in with its reconstruction error kept
as its own node (Marks et al. 2024): at the dictionary's output hook the activation
becomes

    decode(f) + error + (x - x.detach())

where `f` (the features) and `error` are leaves of the graph holding their clean
values, and the last term is zero in value but passes the gradient straight to
everything upstream. So the output is unchanged, one backward pass gives the
metric's gradient with respect to every feature and error node at once, and
upstream nodes still see the full model. Heads (hook_z), MLP outputs and the
embeddings (the first block's resid_pre) get a zero leaf added, whose gradient is
the gradient at that activation. It returns a `Trace`.

`record_values` runs the same hooks without leaves, and returns only the `Values`:
a baseline on a corrupted prompt, or the clean values real effects are measured from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from lenstop.models.circuits.spec import Node
from lenstop.models.dictionaries import Dictionaries, Dictionary, flat, unflat
from lenstop.models.errors import UsageError
from lenstop.models.runtime import hook_names

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle

Site = Literal["resid_pre", "z", "mlp"]
HookFn = Callable[..., Any]
_LeafStores = tuple[dict[int, torch.Tensor], dict[int, torch.Tensor] | None]  # a site's leaves, and its live values


_SITE_HOOKS: dict[str, Callable[[int], str]] = {
    "resid_pre": hook_names.resid_pre,
    "z": hook_names.z,
    "mlp": hook_names.mlp_out,
}


def site_hook(site: Site, layer: int) -> str:
    """The hook of a site a node sits at: a layer's residual stream, its heads' outputs or its MLP's."""
    return _SITE_HOOKS[site](layer)


@dataclass
class Values:
    """Every node's value on one prompt, detached, without the batch dimension."""

    feats: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> (seq, d_sae)
    errors: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> (seq, d_out), flat
    heads: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (seq, heads, d_head)
    mlps: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (seq, d_model)
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (seq, d_model), resid_pre
    logits: torch.Tensor | None = None  # (1, seq, vocab)

    @property
    def embed(self) -> torch.Tensor:
        return self.resid[0]

    def zeros_like(self) -> Values:
        """The zero baseline: every node removed."""
        zero = {k: torch.zeros_like(v) for k, v in self.feats.items()}
        return Values(
            zero,
            {k: torch.zeros_like(v) for k, v in self.errors.items()},
            {k: torch.zeros_like(v) for k, v in self.heads.items()},
            {k: torch.zeros_like(v) for k, v in self.mlps.items()},
            {k: torch.zeros_like(v) for k, v in self.resid.items()},
            self.logits,
        )


@dataclass
class Leaves:
    """The graph's handles: leaves whose gradient is the target's gradient at each node."""

    feats: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, seq, d_sae), requires grad
    errors: dict[str, torch.Tensor] = field(default_factory=dict)  # (1, seq, d_out)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)  # zero (1, seq, heads, d_head)
    mlps: dict[int, torch.Tensor] = field(default_factory=dict)  # zero (1, seq, d_model)
    # zero (1, seq, d_model) at resid_pre: layer 0's, the embeddings', always; the other layers' if asked
    resid: dict[int, torch.Tensor] = field(default_factory=dict)
    # Live values, still attached to everything upstream: what a followed node's value is computed from.
    live_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    live_heads: dict[int, torch.Tensor] = field(default_factory=dict)
    live_mlps: dict[int, torch.Tensor] = field(default_factory=dict)

    def all(self) -> list[torch.Tensor]:
        return [
            *self.feats.values(),
            *self.errors.values(),
            *self.heads.values(),
            *self.mlps.values(),
            *self.resid.values(),
        ]


@dataclass
class Grads:
    """The target's gradient at every node, without the batch dimension (zero where no path leads)."""

    feats: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    heads: dict[int, torch.Tensor]
    mlps: dict[int, torch.Tensor]
    embed: torch.Tensor
    resid: dict[int, torch.Tensor]  # at resid_pre of each layer: layer 0 is `embed`


@dataclass
class Trace:
    """A clean forward pass that can be differentiated, many times, from any target."""

    logits: torch.Tensor  # (1, seq, vocab)
    values: Values
    leaves: Leaves
    dictionaries: Dictionaries

    def grads(self, target: torch.Tensor, *, keep_graph: bool = True) -> Grads:
        """The gradient of a scalar `target` at every node; the graph is kept for the next target unless
        `keep_graph` is False (its last use frees a forward pass's worth of memory)."""
        leaves = self.leaves.all()
        if not target.requires_grad:  # nothing upstream of it varies
            found: tuple[torch.Tensor | None, ...] = (None,) * len(leaves)
        else:
            found = torch.autograd.grad(target, leaves, retain_graph=keep_graph, allow_unused=True)
        by_id = {
            id(leaf): g if g is not None else torch.zeros_like(leaf) for leaf, g in zip(leaves, found, strict=True)
        }

        def pick(tensors: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor]:
            return {k: by_id[id(v)][0].detach() for k, v in tensors.items()}

        resid = pick(self.leaves.resid)
        return Grads(
            pick(self.leaves.feats),
            pick(self.leaves.errors),
            pick(self.leaves.heads),
            pick(self.leaves.mlps),
            resid[0],
            resid,
        )

    def value_of(self, node: Node, parent: torch.Tensor) -> torch.Tensor:
        """A followable node's value as a scalar still attached upstream: a feature's activation, or a head's or
        an MLP's contribution to its parent's value (its output times the parent's gradient there, held fixed)."""
        if node.kind == "feature":
            assert node.layer is not None and node.position is not None and node.feature is not None
            key = self.dictionaries.at(node.layer).key
            return self.leaves.live_feats[key][0, node.position, node.feature]
        if node.kind in ("head", "mlp"):
            assert node.layer is not None
            if node.kind == "head":
                assert node.head is not None
                leaf, live = self.leaves.heads[node.layer], self.leaves.live_heads[node.layer]
                index: tuple[Any, ...] = (0, slice(None) if node.position is None else node.position, node.head)
            else:
                leaf, live = self.leaves.mlps[node.layer], self.leaves.live_mlps[node.layer]
                index = (0, slice(None) if node.position is None else node.position)
            (grad,) = torch.autograd.grad(parent, [leaf], retain_graph=True, allow_unused=True)
            if grad is None:
                return parent * 0.0
            return (live[index] * grad[index].detach()).sum()
        raise UsageError(f"{node.describe()} is an input of the graph: nothing upstream explains it")


def dictionary_hooks(
    d: Dictionary, on_output: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]
) -> list[tuple[str, HookFn]]:
    """Read the features at the dictionary's input hook; call `on_output(out, x_in, f)` at its output hook."""
    state: dict[str, torch.Tensor] = {}

    def read(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
        state["x_in"] = d.input_of(x)
        state["f"] = d.encode(state["x_in"])
        return None if d.is_transcoder else write(x, hook)

    def write(out: torch.Tensor, hook: Any) -> torch.Tensor | None:
        return on_output(out, state["x_in"], state["f"])

    return [(d.hook_in, read), (d.hook_out, write)] if d.is_transcoder else [(d.hook_in, read)]


def record_values(handle: ModelHandle, tokens: torch.Tensor) -> Values:
    """Run the prompt once and keep every node's value; the model's output is untouched."""
    values = Values()
    with handle.hooks(_site_hooks(handle, values, None) + _splices(handle, values, None)):
        values.logits = handle.model(tokens).detach()
    return values


def differentiable_pass(handle: ModelHandle, tokens: torch.Tensor, *, resid_leaves: bool = False) -> Trace:
    """Run the prompt once with a leaf at every node (and at every layer's resid_pre with `resid_leaves`): a
    `Trace` to differentiate from any target, its `values` those of the clean run."""
    values, leaves = Values(), Leaves()
    # The sites' leaves come first, so a dictionary reads a head's output, say, as upstream of its own.
    hooks = _site_hooks(handle, values, leaves, resid_leaves=resid_leaves) + _splices(handle, values, leaves)
    with handle.hooks(hooks):
        logits = handle.model(tokens)
    values.logits = logits.detach()
    return Trace(logits, values, leaves, handle.dictionaries)


def _splices(handle: ModelHandle, values: Values, leaves: Leaves | None) -> list[tuple[str, HookFn]]:
    """Each dictionary's features and error recorded at its output hook, and, given `leaves`, spliced in as
    leaves of the graph."""
    hooks: list[tuple[str, HookFn]] = []
    for d in handle.dictionaries:

        def on_output(out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor, d: Dictionary = d) -> torch.Tensor | None:
            key, out_flat = d.key, flat(out)
            recon = d.reconstruct(x_in.detach(), f.detach())
            error = (out_flat.to(recon.dtype) - recon).detach()
            values.feats[key], values.errors[key] = f[0].detach(), error[0]
            if leaves is None:
                return None
            f_leaf = f.detach().clone().requires_grad_(True)
            error_leaf = error.clone().requires_grad_(True)
            leaves.feats[key], leaves.errors[key], leaves.live_feats[key] = f_leaf, error_leaf, f
            spliced = d.reconstruct(x_in.detach(), f_leaf) + error_leaf
            return unflat((spliced.to(out.dtype) + (out_flat - out_flat.detach())), out)

        hooks += dictionary_hooks(d, on_output)
    return hooks


def _site_hooks(
    handle: ModelHandle, values: Values, leaves: Leaves | None, *, resid_leaves: bool = False
) -> list[tuple[str, HookFn]]:
    """Every layer's heads, MLP output and resid_pre recorded, and, given `leaves`, a zero leaf added to the
    heads, the MLP outputs and the embeddings (and to every resid_pre with `resid_leaves`)."""

    def site(store: dict[int, torch.Tensor], into: _LeafStores | None, layer: int) -> HookFn:
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            store[layer] = x[0].detach()
            if into is None:
                return None
            leaf_store, live = into
            delta = torch.zeros_like(x, requires_grad=True)
            leaf_store[layer] = delta
            if live is not None:
                live[layer] = x
            return x + delta

        return hook

    hooks: list[tuple[str, HookFn]] = []
    for layer in range(handle.n_layers):
        if leaves is None:
            heads = mlps = resid = None
        else:
            heads, mlps = (leaves.heads, leaves.live_heads), (leaves.mlps, leaves.live_mlps)
            resid = (leaves.resid, None) if layer == 0 or resid_leaves else None
        hooks.append((site_hook("z", layer), site(values.heads, heads, layer)))
        hooks.append((site_hook("mlp", layer), site(values.mlps, mlps, layer)))
        hooks.append((site_hook("resid_pre", layer), site(values.resid, resid, layer)))
    return hooks
