"""A cross-layer transcoder (CLT): features that read one layer's MLP input and write to the MLP outputs of
that layer and every later one.

Layer i's features: pre-activation `x_i @ W_enc_i.T + b_enc_i` (W_enc_i: (d_features, d_model)), then ReLU,
or with thresholds JumpReLU as circuit-tracer computes it, `pre * (pre > threshold_i)`. Their decoder
W_dec_i is (d_features, n_layers - i, d_model): row j writes to layer i + j's MLP output. Layer L's output is
`sum over i <= L of acts_i @ W_dec_i[:, L - i] + b_dec_L`, plus `x_L @ skip_L` where there is a skip.

On disk, circuit-tracer's layout (its `CrossLayerTranscoder.to_safetensors`): beside `config.yaml`,
`W_enc_{i}.safetensors` holding `W_enc_{i}`, `b_enc_{i}`, `b_dec_{i}` and optionally `threshold_{i}`, and
`W_dec_{i}.safetensors` holding `W_dec_{i}`. circuit-tracer writes no skip; lenstop reads an optional
`W_skip_{i}` (d_model, d_model) in `W_enc_{i}.safetensors`, applied as circuit-tracer's CLT applies its own,
`x @ W_skip_i`.

It is not a SAELens SAE and not a `Dictionary`: it travels as `Dictionaries.cross_layer`. Its cards, where the
folder has them, are per layer: `layer_{i}.feature_cards.json.gz` and `layer_{i}.feature_labels.json` (`cards`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lenstop.models.dictionaries.circuit_tracer_format import TracerConfig, bridge_hook
from lenstop.models.errors import BadFileError, IncompatibleError, NotFoundError
from lenstop.models.feature_cards import Cards

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from lenstop.models.checkpoint import Tensor

_ENC_FILE = re.compile(r"^W_enc_(\d+)\.safetensors$")


class CrossLayerTranscoder:
    """A loaded CLT: per-layer tensors, read-only by convention; `.to` moves them all."""

    def __init__(
        self,
        *,
        w_enc: Sequence[torch.Tensor],  # per layer (d_features, d_model)
        b_enc: Sequence[torch.Tensor],  # per layer (d_features,)
        w_dec: Sequence[torch.Tensor],  # layer i: (d_features, n_layers - i, d_model)
        b_dec: Sequence[torch.Tensor],  # per layer (d_model,)
        threshold: Sequence[torch.Tensor] | None = None,  # per layer (d_features,): JumpReLU
        skip: Sequence[torch.Tensor] | None = None,  # per layer (d_model, d_model): skip = x @ skip
        input_hook: str = "mlp.hook_in",  # relative to blocks.L
        output_hook: str = "mlp.hook_out",
        scan: str = "",
        source: str = "",
        key: str = "clt",
        cards: Sequence[Cards] | None = None,  # per layer
    ) -> None:
        n = len(w_enc)
        if not n or any(len(part) != n for part in (b_enc, w_dec, b_dec, threshold or w_enc, skip or w_enc)):
            raise ValueError("a cross-layer transcoder needs the same number (at least one) of each tensor")
        self._w_enc, self._b_enc, self._w_dec, self._b_dec = list(w_enc), list(b_enc), list(w_dec), list(b_dec)
        self._threshold = None if threshold is None else list(threshold)
        self._skip = None if skip is None else list(skip)
        self._input_hook, self._output_hook = input_hook, output_hook
        self.scan, self.source, self.key = scan or source, source, key
        self._cards = list(cards) if cards is not None else [Cards() for _ in range(n)]
        if len(self._cards) != n:
            raise ValueError(f"a cross-layer transcoder of {n} layers needs {n} Cards, got {len(self._cards)}")
        for layer, dec in enumerate(self._w_dec):
            if tuple(dec.shape) != (self.d_features, n - layer, self.d_model):
                raise ValueError(f"W_dec_{layer} is {tuple(dec.shape)}, not (d_features, {n - layer}, d_model)")

    # ---------------------------------------------------------------- facts
    @property
    def n_layers(self) -> int:
        return len(self._w_enc)

    @property
    def d_model(self) -> int:
        return int(self._w_enc[0].shape[1])

    @property
    def d_features(self) -> int:
        """Features per layer."""
        return int(self._w_enc[0].shape[0])

    @property
    def is_jumprelu(self) -> bool:
        return self._threshold is not None

    @property
    def device(self) -> torch.device:
        return self._b_enc[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self._b_enc[0].dtype

    def input_hook(self, layer: int) -> str:
        return bridge_hook(self._input_hook, layer)

    def output_hook(self, layer: int) -> str:
        return bridge_hook(self._output_hook, layer)

    def cards(self, layer: int) -> Cards:
        """Layer `layer`'s feature cards and labels (empty where the folder has none)."""
        return self._cards[layer]

    def set_cards(self, layer: int, cards: Cards) -> None:
        """New cards for layer `layer`'s features (a corpus pass's)."""
        self._cards[layer] = cards

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())

    # ---------------------------------------------------------------- weights
    def encoder(self, layer: int) -> torch.Tensor:
        """(d_features, d_model): row f dotted with layer's MLP input, plus b_enc, is f's pre-activation."""
        return self._w_enc[layer]

    def b_enc(self, layer: int) -> torch.Tensor:
        return self._b_enc[layer]

    def threshold(self, layer: int) -> torch.Tensor | None:
        return None if self._threshold is None else self._threshold[layer]

    def decoder(self, layer: int) -> torch.Tensor:
        """(d_features, n_layers - layer, d_model): [:, j] writes to layer + j's MLP output."""
        return self._w_dec[layer]

    def b_dec(self, layer: int) -> torch.Tensor:
        return self._b_dec[layer]

    def skip(self, layer: int) -> torch.Tensor | None:
        """(d_model, d_model) M with skip = x @ M, or None."""
        return None if self._skip is None else self._skip[layer]

    # ---------------------------------------------------------------- arithmetic
    def pre_activation(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """(..., d_features) of layer's MLP input x (..., d_model)."""
        return x.to(self.dtype) @ self._w_enc[layer].T + self._b_enc[layer]

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The features (..., d_features) of layer's MLP input x (..., d_model)."""
        pre = self.pre_activation(layer, x)
        if self._threshold is None:
            return pre.clamp_min(0)
        return pre * (pre > self._threshold[layer])

    def reconstruct(self, mlp_inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every layer's predicted MLP output (..., d_model) from every layer's MLP input."""
        import torch

        if len(mlp_inputs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} MLP inputs, one a layer, got {len(mlp_inputs)}")
        outs = [self._b_dec[layer].expand_as(x.to(self.dtype)).clone() for layer, x in enumerate(mlp_inputs)]
        for source, x in enumerate(mlp_inputs):
            acts = self.encode(source, x)
            written = torch.einsum("...f,fod->o...d", acts, self._w_dec[source])  # (n_layers - source, ..., d)
            for offset in range(self.n_layers - source):
                outs[source + offset] = outs[source + offset] + written[offset]
        if self._skip is not None:
            outs = [out + x.to(self.dtype) @ m for out, x, m in zip(outs, mlp_inputs, self._skip, strict=True)]
        return outs

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CrossLayerTranscoder:
        """Every tensor moved (and cast) in place; returns itself, as `torch.nn.Module.to` does."""

        def moved(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t.to(device=device, dtype=dtype) for t in tensors]

        self._w_enc, self._b_enc = moved(self._w_enc) or [], moved(self._b_enc) or []
        self._w_dec, self._b_dec = moved(self._w_dec) or [], moved(self._b_dec) or []
        self._threshold, self._skip = moved(self._threshold), moved(self._skip)
        return self

    def _tensors(self) -> list[torch.Tensor]:
        return [*self._w_enc, *self._b_enc, *self._w_dec, *self._b_dec, *(self._threshold or []), *(self._skip or [])]


# ---------------------------------------------------------------- loading
def load_cross_layer(config: TracerConfig, *, device: str, dtype: str) -> CrossLayerTranscoder:
    """A cross_layer_transcoder folder, its files checked from their headers before anything is read."""
    import torch
    from safetensors.torch import load_file

    from lenstop.models.checkpoint import nonfinite
    from lenstop.models.dictionaries.circuit_tracer_format import _torch_dtype

    n_layers = _layer_count(config.folder, config.what)
    d_features, d_model, jump, skip = _check_files(config.folder, n_layers, config.what)
    cast = _torch_dtype(dtype)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("W_enc", "b_enc", "b_dec", "threshold", "W_skip", "W_dec")}
    for i in range(n_layers):
        found = load_file(str(config.folder / f"W_enc_{i}.safetensors"), device="cpu")
        found.update(load_file(str(config.folder / f"W_dec_{i}.safetensors"), device="cpu"))
        for name, tensors in parts.items():
            tensor = found.get(f"{name}_{i}")
            if tensor is None or (name == "threshold" and not jump) or (name == "W_skip" and not skip):
                continue  # the optional threshold and skip: on every layer or ignored (_check_files)
            if bad := nonfinite(tensor):
                raise BadFileError(f"{config.what}: {name}_{i} holds {bad} NaN or infinite values; re-download it")
            tensors.append(tensor.reshape(d_features) if name == "threshold" else tensor)
    clt = CrossLayerTranscoder(
        w_enc=parts["W_enc"],
        b_enc=parts["b_enc"],
        w_dec=parts["W_dec"],
        b_dec=parts["b_dec"],
        threshold=parts["threshold"] if jump else None,
        skip=parts["W_skip"] if skip else None,
        input_hook=config.input_hook,
        output_hook=config.output_hook,
        scan=config.scan,
        source=str(config.folder),
        key=config.name,
        cards=[Cards.named(config.folder, f"layer_{i}") for i in range(n_layers)],
    )
    return clt.to(device=torch.device(device), dtype=cast)


def _layer_count(folder: Path, what: str) -> int:
    layers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _ENC_FILE.match(p.name)))
    if not layers:
        raise NotFoundError(f"{what}: no W_enc_0.safetensors beside its config.yaml; copy or download the whole folder")
    missing = sorted(set(range(layers[-1] + 1)) - set(layers))
    if missing:
        raise NotFoundError(
            f"{what}: W_enc_{missing[0]}.safetensors is missing (it has W_enc_ files up to {layers[-1]}); "
            "copy or download the whole folder"
        )
    for i in range(len(layers)):
        if not (folder / f"W_dec_{i}.safetensors").is_file():
            raise NotFoundError(f"{what}: W_dec_{i}.safetensors is missing; copy or download the whole folder")
    return len(layers)


def _check_files(folder: Path, n_layers: int, what: str) -> tuple[int, int, bool, bool]:
    """(d_features, d_model, JumpReLU, skip) agreed by every file's header, or a one-line error naming the first
    tensor that is missing or of the wrong shape."""
    from lenstop.models.checkpoint import safetensors_header

    first = safetensors_header(folder / "W_enc_0.safetensors", f"{what}: W_enc_0.safetensors")
    if "W_enc_0" not in first or len(first["W_enc_0"].shape) != 2:
        raise BadFileError(f"{what}: W_enc_0.safetensors holds no (d_features, d_model) W_enc_0; re-download it")
    d_features, d_model = first["W_enc_0"].shape
    jump, skip = "threshold_0" in first, "W_skip_0" in first
    for i in range(n_layers):
        name = f"W_enc_{i}.safetensors"
        enc = safetensors_header(folder / name, f"{what}: {name}")
        want = {f"W_enc_{i}": (d_features, d_model), f"b_enc_{i}": (d_features,), f"b_dec_{i}": (d_model,)}
        if jump:
            want[f"threshold_{i}"] = (d_features,)
        if skip:
            want[f"W_skip_{i}"] = (d_model, d_model)
        _expect(enc, want, f"{what}: {name}")
        dec_name = f"W_dec_{i}.safetensors"
        dec = safetensors_header(folder / dec_name, f"{what}: {dec_name}")
        _expect(dec, {f"W_dec_{i}": (d_features, n_layers - i, d_model)}, f"{what}: {dec_name}")
    return d_features, d_model, jump, skip


def _expect(tensors: dict[str, Tensor], want: dict[str, tuple[int, ...]], what: str) -> None:
    from lenstop.models.checkpoint import not_float

    not_float(tensors, what)
    for name, shape in want.items():
        if name not in tensors:
            raise BadFileError(f"{what} lacks {name}; re-download it")
        got = tensors[name].shape
        squeezed = tuple(n for n in got if n != 1) if name.startswith("threshold") else got
        if squeezed != shape and got != shape:
            raise BadFileError(f"{what}: {name} is {tuple(got)}, not {shape}; re-download it")


# ---------------------------------------------------------------- against the model
def validate_cross_layer(clt: CrossLayerTranscoder, widths: dict[str, int], n_layers: int, model_name: str) -> None:
    """The CLT spans the model's layers and every hook it reads and writes exists at its width, or one line
    saying what does not fit."""
    if clt.n_layers != n_layers:
        raise IncompatibleError(
            f"cross-layer transcoder {clt.key}: it spans {clt.n_layers} layers but {model_name} has {n_layers}; "
            "load one trained on this model"
        )
    for layer in range(n_layers):
        for hook in (clt.input_hook(layer), clt.output_hook(layer)):
            if hook not in widths:
                raise IncompatibleError(
                    f"cross-layer transcoder {clt.key}: hook {hook!r} does not exist in {model_name}; "
                    "fix feature_input_hook/feature_output_hook in its config.yaml"
                )
            if widths[hook] != clt.d_model:
                raise IncompatibleError(
                    f"cross-layer transcoder {clt.key}: d_model is {clt.d_model} but {hook} of {model_name} is "
                    f"{widths[hook]} wide (it was trained on another model)"
                )
