"""One loaded dictionary (an SAE or a transcoder), and the arithmetic its architecture needs.

The quirks live here, as methods, so the parts that hook the model (reading,
interventions, circuits) call one surface and never ask which architecture they hold:
- hook_z dictionaries read the heads' outputs unflattened, and are handed them as is;
- stateful normalisations keep a per-call scale between encode and decode;
- a skip transcoder adds its linear skip path to what it decodes;
- a TopK dictionary decodes sparse features faster, where SAELens takes them.

Feature edits keep the dictionary's reconstruction error: the activation becomes
`x + decode(f_edited) - decode(f)`, which for a linear decoder is exactly
`x + (new - old) * W_dec[F]`; steering adds `strength * W_dec[F]`, the raw decoder
row, as SAELens and Neuronpedia do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lenstop.models.feature_cards import Cards
from lenstop.models.loading import Processing
from lenstop.models.quiet import drop_sparse_unchecked_warning

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

# SAELens normalisations that keep per-call state between encode and decode.
_STATEFUL_NORMS = ("constant_norm_rescale", "layer_norm")


def flat(x: torch.Tensor) -> torch.Tensor:
    """(batch, seq, heads, d_head) -> (batch, seq, heads * d_head); other shapes pass through."""
    return x.flatten(-2) if x.dim() == 4 else x


def unflat(delta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A flat `delta` in the shape of the activation `like` it is added to."""
    return delta.reshape(like.shape) if like.dim() == 4 else delta


@dataclass
class FeatureEdits:
    """The feature edits of one dictionary, resolved to positions (None: every position)."""

    set_to: list[tuple[int, int | None, float]] = field(default_factory=list)  # feature, pos, value
    steer: list[tuple[int, int | None, float]] = field(default_factory=list)  # feature, pos, strength

    def __bool__(self) -> bool:
        return bool(self.set_to or self.steer)

    def applied(self, feats: torch.Tensor) -> torch.Tensor:
        """The features (batch, seq, d_sae) with the set-to edits made, as a copy."""
        edited = feats.clone()
        for feature, pos, value in self.set_to:
            edited[:, _positions(pos), feature] = value
        return edited


@dataclass
class Dictionary:
    """A loaded SAE or transcoder and the hooks it reads from and writes to."""

    key: str  # how the user and the results name it
    sae: SAE
    hook_in: str
    hook_out: str  # equals hook_in except for transcoders
    layer: int
    source: str
    declared_l0: float | None = None
    cards: Cards = field(default_factory=Cards)

    # ---------------------------------------------------------------- facts
    @property
    def architecture(self) -> str:
        return self.sae.cfg.architecture()

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_out(self) -> int:
        """The width it writes: a transcoder's output may differ from its input."""
        return int(getattr(self.sae.cfg, "d_out", self.sae.cfg.d_in))

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def is_transcoder(self) -> bool:
        return self.hook_out != self.hook_in

    @property
    def metadata(self) -> Any:
        return self.sae.cfg.metadata

    def processing(self) -> Processing:
        """The weight processing of the model this dictionary was trained on."""
        meta = self.metadata
        if meta.model_class_name not in (None, "HookedTransformer", "HookedSAETransformer"):
            return Processing()  # trained on raw Hugging Face activations
        return Processing.from_kwargs(meta.model_from_pretrained_kwargs)

    @property
    def prepend_bos(self) -> bool:
        value = self.metadata.prepend_bos
        return True if value is None else bool(value)

    # ---------------------------------------------------------------- arithmetic
    def input_of(self, x: torch.Tensor) -> torch.Tensor:
        """What to hand `encode` of the activation at `hook_in`: hook_z dictionaries flatten the heads themselves."""
        return x if self.sae.cfg.reshape_activations == "hook_z" else flat(x)

    def encode(self, x_in: torch.Tensor) -> torch.Tensor:
        """The features (batch, seq, d_sae) of `input_of`'s result."""
        return self.sae.encode(x_in)

    def reconstruct(self, x_in: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The reconstruction of its input (a transcoder's prediction of its output) from `feats`, flat.

        Stateful normalisations keep a per-call scale between encode and decode, so
        they are re-encoded first; a skip transcoder adds its linear skip path.
        """
        sae = self.sae
        if sae.cfg.normalize_activations in _STATEFUL_NORMS:
            sae.encode(x_in)
        out = flat(sae.decode(feats))
        if hasattr(sae, "W_skip"):
            out = out + flat(x_in).to(sae.dtype) @ sae.W_skip.T
        return out

    def sparse(self, feats: torch.Tensor) -> torch.Tensor | None:
        """The features as a sparse tensor, where SAELens's own decode takes one (TopK dictionaries, float32,
        CPU or CUDA, no gradients); else None. A TopK dictionary's activations are at most k per token, and
        the dense product costs as much as the encode (docs/benchmarks.md)."""
        import torch
        from sae_lens.saes.topk_sae import TopKSAE

        if (
            type(self.sae).decode is TopKSAE.decode
            and feats.dtype == torch.float32
            and feats.device.type in ("cpu", "cuda")
            and not torch.is_grad_enabled()
        ):
            drop_sparse_unchecked_warning()
            return feats.to_sparse()
        return None

    def edit_delta(self, x_in: torch.Tensor, feats: torch.Tensor | None, edits: FeatureEdits) -> torch.Tensor:
        """What the edits add to the activation at `hook_out`, flat. `feats` may be None when there are only
        steers, which need no features."""
        import torch

        w_dec = self.sae.W_dec
        batch = flat(x_in).shape[:-1] if feats is None else feats.shape[:-1]
        delta = torch.zeros((*batch, w_dec.shape[-1]), dtype=w_dec.dtype, device=w_dec.device)
        if edits.set_to and feats is not None:
            delta = delta + self.reconstruct(x_in, edits.applied(feats)) - self.reconstruct(x_in, feats)
        for feature, pos, strength in edits.steer:
            delta[:, _positions(pos)] += strength * w_dec[feature]
        return delta


def _positions(pos: int | None) -> slice | int:
    return slice(None) if pos is None else pos
