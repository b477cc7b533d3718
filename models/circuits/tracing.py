"""One forward pass with a gradient handle on every node, and batches of runs with
one edit per row.

`trace` splices every dictionary in with its reconstruction error kept as its own
node (Marks et al. 2024): at the dictionary's output hook the activation becomes

    decode(f) + error + (x - x.detach())

where `f` (the features) and `error` are leaves of the graph holding their clean
values, and the last term is zero in value but passes the gradient straight to
everything upstream. So the output is unchanged, one backward pass gives the
metric's gradient with respect to every feature and error node at once, and
upstream nodes still see the full model. Heads (hook_z), MLP outputs and the
embeddings (the first block's resid_pre) get a zero leaf added, whose gradient is
the gradient at that activation.

`run_rows` runs the prompt as a batch in which each row carries its own edits (a
feature set to a value, an error or an activation replaced): the real effects,
the patching grids and integrated gradients are all such batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from lenstop.models.circuits.spec import Node
from lenstop.models.dictionaries import Dictionary, flat, unflat
from lenstop.models.errors import UsageError

if TYPE_CHECKING:
    from lenstop.models.engine import Engine

Site = Literal["resid_pre", "z", "mlp"]
HookFn = Callable[..., Any]


def site_hook(site: Site, layer: int) -> str:
    return {
        "resid_pre": f"blocks.{layer}.hook_resid_pre",
        "z": f"blocks.{layer}.attn.hook_z",
        "mlp": f"blocks.{layer}.hook_mlp_out",
    }[site]


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
    embed: torch.Tensor | None = None  # zero (1, seq, d_model)
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # zero (1, seq, d_model) at layers > 0, if asked
    # Live values, still attached to everything upstream: what a followed node's value is computed from.
    live_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    live_heads: dict[int, torch.Tensor] = field(default_factory=dict)
    live_mlps: dict[int, torch.Tensor] = field(default_factory=dict)

    def all(self) -> list[torch.Tensor]:
        out = [*self.feats.values(), *self.errors.values(), *self.heads.values(), *self.mlps.values()]
        return out + ([self.embed] if self.embed is not None else []) + list(self.resid.values())


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
    dictionaries: dict[str, Dictionary]

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

        assert self.leaves.embed is not None
        embed = by_id[id(self.leaves.embed)][0].detach()
        return Grads(
            pick(self.leaves.feats),
            pick(self.leaves.errors),
            pick(self.leaves.heads),
            pick(self.leaves.mlps),
            embed,
            {0: embed, **pick(self.leaves.resid)},
        )

    def dictionary_at(self, layer: int) -> tuple[str, Dictionary]:
        found = [(k, d) for k, d in self.dictionaries.items() if d.layer == layer]
        if len(found) != 1:
            raise UsageError(f"no single dictionary at layer {layer} to follow a feature in")
        return found[0]

    def value_of(self, node: Node, parent: torch.Tensor) -> torch.Tensor:
        """A followable node's value as a scalar still attached upstream: a feature's activation, or a head's or
        an MLP's contribution to its parent's value (its output times the parent's gradient there, held fixed)."""
        if node.kind == "feature":
            assert node.layer is not None and node.position is not None and node.feature is not None
            key, _ = self.dictionary_at(node.layer)
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


@contextmanager
def _hooked(engine: Engine, hooks: list[tuple[str, HookFn]]) -> Iterator[None]:
    with engine.hooks(hooks):
        yield


def dictionary_hooks(
    d: Dictionary, key: str, on_output: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]
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


def trace(
    engine: Engine, tokens: torch.Tensor, *, differentiable: bool = True, resid_leaves: bool = False
) -> Trace | Values:
    """Run the prompt once. Differentiable: a `Trace` with a leaf at every node (and at every layer's
    resid_pre with `resid_leaves`); else only the `Values`."""
    values, leaves = Values(), Leaves()
    dictionaries = {d.key: d for d in engine.dictionaries}
    hooks: list[tuple[str, HookFn]] = []
    splices: list[tuple[str, HookFn]] = []  # after the sites' leaves, so a dictionary reads a head's, say, as upstream

    for key, d in dictionaries.items():

        def on_output(
            out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor, key: str = key, d: Dictionary = d
        ) -> torch.Tensor | None:
            out_flat = flat(out)
            recon = d.reconstruct(x_in.detach(), f.detach())
            error = (out_flat.to(recon.dtype) - recon).detach()
            values.feats[key], values.errors[key] = f[0].detach(), error[0]
            if not differentiable:
                return None
            f_leaf = f.detach().clone().requires_grad_(True)
            error_leaf = error.clone().requires_grad_(True)
            leaves.feats[key], leaves.errors[key], leaves.live_feats[key] = f_leaf, error_leaf, f
            spliced = d.reconstruct(x_in.detach(), f_leaf) + error_leaf
            return unflat((spliced.to(out.dtype) + (out_flat - out_flat.detach())), out)

        splices += dictionary_hooks(d, key, on_output)

    def site(
        store: dict[int, torch.Tensor], leaf_store: dict[int, torch.Tensor] | None, live: Any, layer: int
    ) -> HookFn:
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            store[layer] = x[0].detach()
            if not differentiable or leaf_store is None:
                return None
            delta = torch.zeros_like(x, requires_grad=True)
            leaf_store[layer] = delta
            if live is not None:
                live[layer] = x
            return x + delta

        return hook

    embed_leaf: dict[int, torch.Tensor] = {}
    for layer in range(engine.n_layers):
        hooks.append((site_hook("z", layer), site(values.heads, leaves.heads, leaves.live_heads, layer)))
        hooks.append((site_hook("mlp", layer), site(values.mlps, leaves.mlps, leaves.live_mlps, layer)))
        leaf_store = embed_leaf if layer == 0 else (leaves.resid if resid_leaves else None)
        hooks.append((site_hook("resid_pre", layer), site(values.resid, leaf_store, None, layer)))

    with _hooked(engine, hooks + splices):
        logits = engine.model(tokens)
    values.logits = logits.detach()
    if not differentiable:
        return values
    leaves.embed = embed_leaf[0]
    return Trace(logits, values, leaves, dictionaries)


# ---------------------------------------------------------------- batches with one edit per row
@dataclass(frozen=True)
class SetSite:
    """Row `row`: the activation at a site (and position, and head for z) becomes `value`."""

    site: Site
    layer: int
    row: int
    position: int | None  # None: every position
    value: torch.Tensor
    head: int | None = None


@dataclass(frozen=True)
class SetFeature:
    """Row `row`: feature `feature` of dictionary `key` at `position` becomes `value`, the error kept."""

    key: str
    row: int
    position: int
    feature: int
    value: float


@dataclass(frozen=True)
class SetError:
    """Row `row`: the reconstruction error of dictionary `key` at `position` becomes `value`."""

    key: str
    row: int
    position: int
    value: torch.Tensor


Edit = SetSite | SetFeature | SetError


def _site_edits(edits: Sequence[SetSite]) -> HookFn:
    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.clone()
        for e in edits:
            pos: Any = slice(None) if e.position is None else e.position
            if e.head is None:
                x[e.row, pos] = e.value.to(x.dtype)
            else:
                x[e.row, pos, e.head] = e.value.to(x.dtype)
        return x

    return hook


def run_rows(
    engine: Engine,
    tokens: torch.Tensor,
    rows: int,
    edits: Sequence[Edit],
    *,
    extra: Sequence[tuple[str, HookFn]] = (),
) -> torch.Tensor:
    """Logits (rows, seq, vocab) of `rows` copies of the prompt, each with its own edits, and `extra` hooks
    after them (integrated gradients puts its leaves there)."""
    hooks: list[tuple[str, HookFn]] = []
    by_site: dict[str, list[SetSite]] = {}
    for e in edits:
        if isinstance(e, SetSite):
            by_site.setdefault(site_hook(e.site, e.layer), []).append(e)
    hooks += [(name, _site_edits(group)) for name, group in by_site.items()]

    dictionaries = {d.key: d for d in engine.dictionaries}
    for key in {e.key for e in edits if isinstance(e, SetFeature | SetError)}:
        d = dictionaries[key]
        features = [e for e in edits if isinstance(e, SetFeature) and e.key == key]
        errors = [e for e in edits if isinstance(e, SetError) and e.key == key]

        def on_output(
            out: torch.Tensor,
            x_in: torch.Tensor,
            f: torch.Tensor,
            d: Dictionary = d,
            features: list[SetFeature] = features,
            errors: list[SetError] = errors,
        ) -> torch.Tensor:
            out_flat = flat(out).clone()
            if features:
                edited = f.clone()
                for fe in features:
                    edited[fe.row, fe.position, fe.feature] = fe.value
                delta = d.reconstruct(x_in, edited) - d.reconstruct(x_in, f)
                out_flat = out_flat + delta.to(out_flat.dtype)
            if errors:
                recon = d.reconstruct(x_in, f)
                for er in errors:
                    out_flat[er.row, er.position] = (recon[er.row, er.position] + er.value).to(out_flat.dtype)
            return unflat(out_flat, out)

        hooks += dictionary_hooks(d, key, on_output)
    hooks += extra
    batch = tokens.expand(rows, -1)
    with _hooked(engine, hooks):
        return engine.model(batch)


ROW_BUDGET = 512 * 2**20  # bytes a batched pass may spend on its rows' activations and logits


def rows_within(engine: Engine, seq: int, most: int, *, grad: bool = False) -> int:
    """How many copies of a `seq`-token prompt one batched pass runs: `most`, or fewer when their logits and
    residual streams (kept for the backward pass with `grad`) would pass `ROW_BUDGET`; at least one. So a
    batch's memory depends on the prompt and the model, never on how many rows are asked for."""
    cfg = engine.model.cfg
    # Floats a token costs, measured on the demo (about 4 MB a row of 26 tokens with gradients): the logits
    # and their softmax and gradient, and what each layer keeps for the backward pass.
    per_token = 3 * int(cfg.d_vocab) + int(cfg.d_model) * engine.n_layers * (64 if grad else 4)
    return max(1, min(most, ROW_BUDGET // max(seq * per_token * 4, 1)))


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))
