"""The hooks of one forward pass: what to capture and what to edit.

Built fresh for every run and scoped with `model.hooks(...)`, so no hook outlives
the call that added it. Feature edits keep the dictionary's reconstruction
error: the activation becomes `x + decode(f_edited) - decode(f)`, which for a
linear decoder is exactly `x + (new - old) * W_dec[F]`; steering adds
`strength * W_dec[F]`, the raw decoder row, as SAELens and Neuronpedia do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lenstop.models.dictionaries import Dictionary
from lenstop.models.errors import UsageError
from lenstop.models.interventions import (
    FeatureAblation,
    FeatureClamp,
    FeatureSteer,
    HeadKnockout,
    Intervention,
)

HookFn = Callable[..., Any]

# SAELens's sparse decode builds its tensor without torch's optional invariant checks, which torch then
# warns of on every first call; lenstop's sparse inputs come from to_sparse(), valid by construction.
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

# SAELens normalisations that keep per-call state between encode and decode.
_STATEFUL_NORMS = ("constant_norm_rescale", "layer_norm")


def resolve_position(position: int | None, prompt_len: int) -> int | None:
    """A prompt position, negative counting from the end; None means every position."""
    if position is None:
        return None
    resolved = position + prompt_len if position < 0 else position
    if not 0 <= resolved < prompt_len:
        raise UsageError(
            f"position {position} is outside the prompt, which has {prompt_len} token{'s' if prompt_len != 1 else ''} "
            f"(0..{prompt_len - 1}, or -1..-{prompt_len})"
        )
    return resolved


@dataclass(frozen=True)
class FeatureReading:
    """One dictionary's features over the prompt, reduced inside its hook to what the views show.

    Every dictionary's dense (seq, d_sae) activations held until the pass ends would outweigh the
    model's own: on GPT-2 small with a 24,576-feature dictionary at each of 12 layers, 1.2 GB at
    1,024 tokens. Reduced as each is made, one is alive at a time.
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


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(batch, seq, heads, d_head) -> (batch, seq, heads * d_head); other shapes pass through."""
    return x.flatten(-2) if x.dim() == 4 else x


def _unflat(delta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return delta.reshape(like.shape) if like.dim() == 4 else delta


def sae_input(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """What to hand `sae.encode`: hook_z dictionaries flatten the heads themselves."""
    return x if sae.cfg.reshape_activations == "hook_z" else _flat(x)


def decode_full(sae: Any, x_in: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The dictionary's reconstruction of its input (a transcoder's prediction of its output), flat.

    Stateful normalisations keep a per-call scale between encode and decode, so
    they are re-encoded first; a skip transcoder adds its linear skip path.
    """
    if sae.cfg.normalize_activations in _STATEFUL_NORMS:
        sae.encode(x_in)
    out = _flat(sae.decode(feats))
    if hasattr(sae, "W_skip"):
        out = out + _flat(x_in).to(sae.dtype) @ sae.W_skip.T
    return out


def sparse_features(sae: Any, feats: torch.Tensor) -> torch.Tensor | None:
    """The features as a sparse tensor, where SAELens's own decode takes one (TopK dictionaries, float32,
    CPU or CUDA, no gradients); else None. A TopK dictionary's activations are at most k per token, and
    the dense product costs as much as the encode: on a GPT-2-small shape, 915 ms against 321 ms sparse
    at 1,024 tokens (docs/benchmarks.md)."""
    from sae_lens.saes.topk_sae import TopKSAE

    if (
        type(sae).decode is TopKSAE.decode
        and feats.dtype == torch.float32
        and feats.device.type in ("cpu", "cuda")
        and not torch.is_grad_enabled()
    ):
        return feats.to_sparse()
    return None


@dataclass
class _Edits:
    """The feature edits of one dictionary, resolved to positions."""

    set_to: list[tuple[int, int | None, float]] = field(default_factory=list)  # feature, pos, value
    steer: list[tuple[int, int | None, float]] = field(default_factory=list)  # feature, pos, strength

    def __bool__(self) -> bool:
        return bool(self.set_to or self.steer)


def _positions(pos: int | None) -> slice | int:
    return slice(None) if pos is None else pos


class RunPlan:
    """Hooks for a run of `seq`-token input whose first `prompt_len` tokens are the prompt."""

    def __init__(
        self,
        dictionaries: Sequence[Dictionary],
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
        by_layer: dict[int, list[Dictionary]] = {}
        for d in dictionaries:
            by_layer.setdefault(d.layer, []).append(d)

        edits: dict[str, _Edits] = {}
        for iv in interventions:
            if isinstance(iv, HeadKnockout):
                continue
            target = dictionary_at(by_layer, iv.layer)
            if not 0 <= iv.feature < target.d_sae:
                raise UsageError(
                    f"feature {iv.feature} does not exist in {target.key}, which has {target.d_sae} features"
                )
            pos = resolve_position(iv.position, prompt_len)
            e = edits.setdefault(target.key, _Edits())
            if isinstance(iv, FeatureAblation):
                e.set_to.append((iv.feature, pos, 0.0))
            elif isinstance(iv, FeatureClamp):
                e.set_to.append((iv.feature, pos, iv.value))
            elif isinstance(iv, FeatureSteer):
                e.steer.append((iv.feature, pos, iv.strength))

        for d in dictionaries:
            e = edits.get(d.key, _Edits())
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
                    (f"blocks.{iv.layer}.attn.hook_z", _knockout(iv.head, resolve_position(iv.position, prompt_len)))
                )

        if on_attention is not None:  # told these layers' patterns while they exist; it keeps what it needs
            for layer in attention_layers:
                self._hooks.append((f"blocks.{layer}.attn.hook_pattern", _tell(on_attention, layer)))
        for layer in resid_layers:
            self._hooks.append((f"blocks.{layer}.hook_resid_post", self._store(self.capture.resid, layer)))

    @property
    def hooks(self) -> list[tuple[str, HookFn]]:
        return list(self._hooks)

    @staticmethod
    def _store(target: dict[int, torch.Tensor], layer: int) -> HookFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            target[layer] = tensor[0].detach()

        return hook

    def _add_dictionary(self, d: Dictionary, e: _Edits, capture: bool) -> None:
        sae = d.sae
        state: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            x_in = sae_input(sae, x)
            if not capture and not e.set_to and not d.is_transcoder:  # steering alone needs no features
                return x + _unflat(_delta(sae, x_in, None, e).to(x.dtype), x)
            feats = sae.encode(x_in)
            if d.is_transcoder:  # its output hook needs them; kept by anything else, they would stay alive
                state["x"], state["f"] = x_in, feats  # until the pass ends: (seq, d_sae) per dictionary
            if capture:
                sparse = sparse_features(sae, feats) if not d.is_transcoder else None
                edited = _apply_set(feats, e) if e.set_to else feats
                reading = FeatureReading.of(edited[0].detach(), self.top_k, None if e.set_to else sparse)
                self.capture.features[d.key] = reading
                if not d.is_transcoder:
                    x_flat = _flat(x).to(feats.dtype)
                    recon = decode_full(sae, x_in, feats if sparse is None else sparse)
                    self.capture.error_norm[d.key] = (x_flat - recon)[0].norm(dim=-1).detach()
                    self.capture.input_norm[d.key] = x_flat[0].norm(dim=-1).detach()
            if e and not d.is_transcoder:
                return x + _unflat(_delta(sae, x_in, feats, e).to(x.dtype), x)
            return None

        self._hooks.append((d.hook_in, read))
        if d.is_transcoder and (capture or e):

            def write(out: torch.Tensor, hook: Any) -> torch.Tensor | None:
                x_in, feats = state.pop("x"), state.pop("f")  # read's, of this same block: let go after
                out_flat = _flat(out).to(feats.dtype)
                if capture:
                    sparse = sparse_features(sae, feats)
                    pred = decode_full(sae, x_in, feats if sparse is None else sparse)
                    self.capture.error_norm[d.key] = (out_flat - pred)[0].norm(dim=-1).detach()
                    self.capture.input_norm[d.key] = out_flat[0].norm(dim=-1).detach()
                if e:
                    return out + _unflat(_delta(sae, x_in, feats, e).to(out.dtype), out)
                return None

            self._hooks.append((d.hook_out, write))


def _tell(listener: Callable[[int, torch.Tensor], None], layer: int) -> HookFn:
    def hook(pattern: torch.Tensor, hook: Any) -> None:
        listener(layer, pattern[0].detach())

    return hook


def dictionary_at(by_layer: dict[int, list[Dictionary]], layer: int) -> Dictionary:
    """The one dictionary at `layer`, or a usage error saying why there is none."""
    found = by_layer.get(layer, [])
    if not found:
        have = ", ".join(str(k) for k in sorted(by_layer)) or "none"
        raise UsageError(f"no dictionary at layer {layer}; dictionaries are loaded at layers: {have}")
    if len(found) > 1:
        raise UsageError(
            f"layer {layer} has {len(found)} dictionaries ({', '.join(d.key for d in found)}); "
            "load one per layer to intervene"
        )
    return found[0]


def _apply_set(feats: torch.Tensor, e: _Edits) -> torch.Tensor:
    edited = feats.clone()
    for feature, pos, value in e.set_to:
        edited[:, _positions(pos), feature] = value
    return edited


def _delta(sae: Any, x_in: torch.Tensor, feats: torch.Tensor | None, e: _Edits) -> torch.Tensor:
    """What the edits add to the activation at the dictionary's output hook, flat. `feats` may be None when
    there are only steers, which need no features."""
    batch = _flat(x_in).shape[:-1] if feats is None else feats.shape[:-1]
    delta = torch.zeros((*batch, sae.W_dec.shape[-1]), dtype=sae.W_dec.dtype, device=sae.W_dec.device)
    if e.set_to and feats is not None:
        delta = delta + decode_full(sae, x_in, _apply_set(feats, e)) - decode_full(sae, x_in, feats)
    for feature, pos, strength in e.steer:
        delta[:, _positions(pos)] += strength * sae.W_dec[feature]
    return delta


def _knockout(head: int, pos: int | None) -> HookFn:
    def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, _positions(pos), head, :] = 0.0
        return z

    return hook
