"""The plan of one forward pass: the hooks that capture what is read and make the interventions.

Built fresh for every run and scoped with `ModelHandle.hooks(...)`, so no hook
outlives the call that added it. The arithmetic of a feature edit is the
dictionary's own (`Dictionary.edit_delta`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lenstop.models.dictionaries import Dictionaries, Dictionary, FeatureEdits, flat, unflat
from lenstop.models.errors import UsageError
from lenstop.models.interventions import (
    FeatureAblation,
    FeatureClamp,
    FeatureSteer,
    HeadKnockout,
    Intervention,
)
from lenstop.models.prompts import resolve_position
from lenstop.models.runtime import hook_names

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle

HookFn = Callable[..., Any]


@dataclass(frozen=True)
class FeatureReading:
    """One dictionary's features over the prompt, reduced inside its hook to what the views show.

    Every dictionary's dense (seq, d_sae) activations held until the pass ends would outweigh the
    model's own activations, a dictionary at every layer being far wider than the residual stream.
    Reduced as each is made, one is alive at a time.
    """

    top_values: torch.Tensor  # (seq, k), descending
    top_ids: torch.Tensor  # (seq, k)
    union: torch.Tensor  # (n,) sorted: every feature active in the top k at some position
    columns: torch.Tensor  # (seq, n) those features' activations at every position
    l0: torch.Tensor  # (seq,) active features per position

    @classmethod
    def of(cls, feats: torch.Tensor, top_k: int, sparse: torch.Tensor | None = None) -> FeatureReading:
        """`feats` (seq, d_sae); `sparse`, the same as a sparse tensor when one was made anyway (for the
        reconstruction error), counts the active features without another pass over the dense ones."""
        top = feats.topk(min(top_k, feats.shape[-1]), dim=-1)
        values = top.values.float().clamp_min(0)
        union = torch.unique(top.indices[values > 0])
        if sparse is not None:
            rows = sparse.indices()[-2][sparse.values() > 0]
            l0 = torch.bincount(rows, minlength=feats.shape[0])
        else:
            l0 = (feats > 0).sum(-1)
        return cls(values, top.indices, union, feats.index_select(-1, union).float(), l0)


@dataclass
class Capture:
    """What one run recorded, still as tensors; the engine turns it into results."""

    features: dict[str, FeatureReading] = field(default_factory=dict)
    error_norm: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> (seq,)
    input_norm: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> (seq,)
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (seq, d_model)


def _positions(pos: int | None) -> slice | int:
    return slice(None) if pos is None else pos


class RunPlan:
    """Hooks for a run of `seq`-token input whose first `prompt_len` tokens are the prompt."""

    def __init__(
        self,
        dictionaries: Dictionaries,
        interventions: Sequence[Intervention],
        *,
        n_layers: int,
        n_heads: int,
        prompt_len: int,
        capture: Collection[str] = (),
        top_k: int = 10,
        on_attention: Callable[[int, torch.Tensor], None] | None = None,
        attention_layers: Sequence[int] = (),
        resid_layers: Sequence[int] = (),
    ) -> None:
        self.capture = Capture()
        self.top_k = top_k
        self._hooks: list[tuple[str, HookFn]] = []
        edits: dict[str, FeatureEdits] = {}
        for iv in interventions:
            if isinstance(iv, HeadKnockout):
                continue
            target = dictionaries.at(iv.layer)
            if not 0 <= iv.feature < target.d_sae:
                raise UsageError(
                    f"feature {iv.feature} does not exist in {target.key}, which has {target.d_sae} features"
                )
            pos = resolve_position(iv.position, prompt_len)
            e = edits.setdefault(target.key, FeatureEdits())
            if isinstance(iv, FeatureAblation):
                e.set_to.append((iv.feature, pos, 0.0))
            elif isinstance(iv, FeatureClamp):
                e.set_to.append((iv.feature, pos, iv.value))
            elif isinstance(iv, FeatureSteer):
                e.steer.append((iv.feature, pos, iv.strength))

        for d in dictionaries:
            e = edits.get(d.key, FeatureEdits())
            if d.key in capture or e:  # the dictionaries whose readings are asked for, and those edited
                self._add_dictionary(d, e, d.key in capture)

        for iv in interventions:
            if isinstance(iv, HeadKnockout):
                if not 0 <= iv.layer < n_layers or not 0 <= iv.head < n_heads:
                    raise UsageError(
                        f"head {iv.layer}.{iv.head} does not exist: the model has {n_layers} layer"
                        f"{'s' if n_layers != 1 else ''} of {n_heads} heads (0..{n_layers - 1}).(0..{n_heads - 1})"
                    )
                self._hooks.append(
                    (hook_names.z(iv.layer), _knockout(iv.head, resolve_position(iv.position, prompt_len)))
                )

        if on_attention is not None:  # told these layers' patterns while they exist; it keeps what it needs
            for layer in attention_layers:
                self._hooks.append((hook_names.pattern(layer), _tell(on_attention, layer)))
        for layer in resid_layers:
            self._hooks.append((hook_names.resid_post(layer), self._store(self.capture.resid, layer)))

    @classmethod
    def on(cls, handle: ModelHandle, interventions: Sequence[Intervention], prompt_len: int, **options: Any) -> RunPlan:
        """The plan of a pass over the handle's model and dictionaries (`options` as `RunPlan` takes them)."""
        return cls(
            handle.dictionaries,
            interventions,
            n_layers=handle.n_layers,
            n_heads=handle.n_heads,
            prompt_len=prompt_len,
            **options,
        )

    @property
    def hooks(self) -> list[tuple[str, HookFn]]:
        return list(self._hooks)

    @staticmethod
    def _store(target: dict[int, torch.Tensor], layer: int) -> HookFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            target[layer] = tensor[0].detach()

        return hook

    def _add_dictionary(self, d: Dictionary, e: FeatureEdits, capture: bool) -> None:
        state: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            x_in = d.input_of(x)
            if not capture and not e.set_to and not d.is_transcoder:  # steering alone needs no features
                return x + unflat(d.edit_delta(x_in, None, e).to(x.dtype), x)
            feats = d.encode(x_in)
            if d.is_transcoder:  # its output hook needs them; kept by anything else, they would stay alive
                state["x"], state["f"] = x_in, feats  # until the pass ends: (seq, d_sae) per dictionary
            if capture:
                sparse = d.sparse(feats) if not d.is_transcoder else None
                edited = e.applied(feats) if e.set_to else feats
                reading = FeatureReading.of(edited[0].detach(), self.top_k, None if e.set_to else sparse)
                self.capture.features[d.key] = reading
                if not d.is_transcoder:
                    x_flat = flat(x).to(feats.dtype)
                    recon = d.reconstruct(x_in, feats if sparse is None else sparse)
                    self.capture.error_norm[d.key] = (x_flat - recon)[0].norm(dim=-1).detach()
                    self.capture.input_norm[d.key] = x_flat[0].norm(dim=-1).detach()
            if e and not d.is_transcoder:
                return x + unflat(d.edit_delta(x_in, feats, e).to(x.dtype), x)
            return None

        self._hooks.append((d.hook_in, read))
        if d.is_transcoder and (capture or e):

            def write(out: torch.Tensor, hook: Any) -> torch.Tensor | None:
                x_in, feats = state.pop("x"), state.pop("f")  # read's, of this same block: let go after
                out_flat = flat(out).to(feats.dtype)
                if capture:
                    sparse = d.sparse(feats)
                    pred = d.reconstruct(x_in, feats if sparse is None else sparse)
                    self.capture.error_norm[d.key] = (out_flat - pred)[0].norm(dim=-1).detach()
                    self.capture.input_norm[d.key] = out_flat[0].norm(dim=-1).detach()
                if e:
                    return out + unflat(d.edit_delta(x_in, feats, e).to(out.dtype), out)
                return None

            self._hooks.append((d.hook_out, write))


def _tell(listener: Callable[[int, torch.Tensor], None], layer: int) -> HookFn:
    def hook(pattern: torch.Tensor, hook: Any) -> None:
        listener(layer, pattern[0].detach())

    return hook


def _knockout(head: int, pos: int | None) -> HookFn:
    def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, _positions(pos), head, :] = 0.0
        return z

    return hook
