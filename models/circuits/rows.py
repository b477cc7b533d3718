"""Batches of runs of one prompt in which each row carries its own edits: a feature set
to a value, a reconstruction error or an activation replaced. The real effects, the
patching grids and integrated gradients are all such batches; `rows_within` sizes
them so that a batch's memory depends on the prompt and the model, never on how many
rows are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lenstop.models.circuits.passes import HookFn, Site, dictionary_hooks, site_hook
from lenstop.models.dictionaries import Dictionary, flat, unflat

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle


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
    handle: ModelHandle,
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

    for key in {e.key for e in edits if isinstance(e, SetFeature | SetError)}:
        d = handle.dictionaries.by_key[key]
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

        hooks += dictionary_hooks(d, on_output)
    hooks += extra
    batch = tokens.expand(rows, -1)
    with handle.hooks(hooks):
        return handle.model(batch)


ROW_BUDGET = 512 * 2**20  # bytes a batched pass may spend on its rows' activations and logits


def rows_within(handle: ModelHandle, seq: int, most: int, *, grad: bool = False) -> int:
    """How many copies of a `seq`-token prompt one batched pass runs: `most`, or fewer when their logits and
    residual streams (kept for the backward pass with `grad`) would pass `ROW_BUDGET`; at least one. So a
    batch's memory depends on the prompt and the model, never on how many rows are asked for."""
    cfg = handle.model.cfg
    # Floats a token costs: the logits and their softmax and gradient, and what each layer keeps for the
    # backward pass (64 widths of the residual stream a layer with gradients, 4 without), fitted to what a
    # row of the demo measured (docs/benchmarks.md).
    per_token = 3 * int(cfg.d_vocab) + int(cfg.d_model) * handle.n_layers * (64 if grad else 4)
    return max(1, min(most, ROW_BUDGET // max(seq * per_token * 4, 1)))


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))
