"""The MLPs' replacement, asked the same questions whether it is one transcoder per layer or a cross-layer
transcoder: what attribution graphs (and anything else that follows features across layers) consume.

`Replacement` is the surface; `TranscoderStack` builds it from a `Dictionaries` holding one transcoder at
every layer 0..n-1 (SAELens format or circuit-tracer's per-layer files, the same `Dictionary` either way),
and `CrossLayerStack` from a `CrossLayerTranscoder`. `replacement_of` picks the one a collection holds.

For every layer L:
- `input_hook(L)` / `output_hook(L)`: the bridge hooks the features read (the MLP input) and write (its output);
- `encode(L, x)`: the features (..., d_features(L)) of the MLP input x; for a per-layer transcoder the
  `Dictionary`'s own (SAELens's) encode;
- `encoder_vectors(L, idx)`: (k, d_model), the directions whose dot with the MLP input is each feature's
  pre-activation (less its bias). Dictionaries that normalise their input per call (`constant_norm_rescale`,
  `layer_norm`) have no such fixed direction and are refused;
- `decoder_vectors(L, idx)`: (k, n_out, d_model), what each feature writes to the MLP outputs of layers
  L..L+n_out-1 per unit of activation (n_out = 1 for a per-layer transcoder, n_layers - L for a CLT);
- `b_dec(L)`: (d_model,), the bias of layer L's predicted output;
- `skip_weight(L)`: (d_model, d_model) M with skip = x @ M, or None.
`kind` is "transcoder_set" or "cross_layer_transcoder"; `scan` names the features for circuit-tracer's
viewer; `source` says where they were loaded from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from lenstop.models.dictionaries.circuit_tracer_format import CROSS_LAYER, TRANSCODER_SET
from lenstop.models.dictionaries.collection import Dictionaries
from lenstop.models.dictionaries.dictionary import _STATEFUL_NORMS, Dictionary
from lenstop.models.errors import IncompatibleError, UsageError

if TYPE_CHECKING:
    import torch

    from lenstop.models.dictionaries.cross_layer import CrossLayerTranscoder


class Replacement(Protocol):
    """Per-layer transcoders or a cross-layer transcoder, behind one surface (see the module docstring)."""

    @property
    def kind(self) -> str: ...
    @property
    def n_layers(self) -> int: ...
    @property
    def scan(self) -> str: ...
    @property
    def source(self) -> str: ...
    def d_features(self, layer: int) -> int: ...
    def input_hook(self, layer: int) -> str: ...
    def output_hook(self, layer: int) -> str: ...
    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...
    def encoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor: ...
    def decoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor: ...
    def b_dec(self, layer: int) -> torch.Tensor: ...
    def skip_weight(self, layer: int) -> torch.Tensor | None: ...


def _index(idx: torch.Tensor | Sequence[int], like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.as_tensor(idx, dtype=torch.long).to(like.device).reshape(-1)


class TranscoderStack:
    """One transcoder per layer 0..n-1 from a `Dictionaries`, as a `Replacement`."""

    kind = TRANSCODER_SET

    def __init__(self, dictionaries: Dictionaries, n_layers: int | None = None) -> None:
        have = dictionaries.layers
        n = n_layers if n_layers is not None else (have[-1] + 1 if have else 0)
        missing = [layer for layer in range(n) if layer not in have]
        if not n or missing:
            shown = ", ".join(str(layer) for layer in missing[:8]) + (", ..." if len(missing) > 8 else "")
            raise UsageError(
                f"a replacement needs a transcoder at every layer 0..{max(n, 1) - 1}; "
                f"{'none is loaded' if not n else f'layers {shown} have none'}: load one transcoder per layer"
            )
        self._layers: list[Dictionary] = [dictionaries.at(layer) for layer in range(n)]
        for d in self._layers:
            if not d.is_transcoder:
                raise UsageError(
                    f"dictionary {d.key} at layer {d.layer} is an SAE (it writes where it reads, {d.hook_in}); "
                    "a replacement needs transcoders, which read the MLP input and write its output"
                )
        sources = list(dict.fromkeys(d.source for d in self._layers))
        local = all(os.path.isabs(s) for s in sources)
        self._source = os.path.commonpath(sources) if local and len(sources) > 1 else ",".join(sources)
        scans = {d.metadata.scan for d in self._layers}
        only = scans.pop() if len(scans) == 1 else None
        self._scan = only if isinstance(only, str) and only else self._source

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def scan(self) -> str:
        return self._scan

    @property
    def source(self) -> str:
        return self._source

    def dictionary(self, layer: int) -> Dictionary:
        return self._layers[layer]

    def d_features(self, layer: int) -> int:
        return self._layers[layer].d_sae

    def input_hook(self, layer: int) -> str:
        return self._layers[layer].hook_in

    def output_hook(self, layer: int) -> str:
        return self._layers[layer].hook_out

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        d = self._layers[layer]
        return d.encode(d.input_of(x))

    def encoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        d = self._layers[layer]
        norm = d.sae.cfg.normalize_activations
        if norm in _STATEFUL_NORMS:
            raise IncompatibleError(
                f"dictionary {d.key} normalises its input per token ({norm}), so its features have no fixed "
                "encoder direction; use a transcoder without run-time normalisation"
            )
        w_enc = d.sae.W_enc  # (d_in, d_sae)
        return w_enc[:, _index(idx, w_enc)].T

    def decoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        w_dec = self._layers[layer].sae.W_dec  # (d_sae, d_out)
        return w_dec[_index(idx, w_dec)][:, None, :]

    def b_dec(self, layer: int) -> torch.Tensor:
        return self._layers[layer].sae.b_dec

    def skip_weight(self, layer: int) -> torch.Tensor | None:
        sae = self._layers[layer].sae
        return sae.W_skip.T if hasattr(sae, "W_skip") else None  # SAELens's skip is x @ W_skip.T


class CrossLayerStack:
    """A `CrossLayerTranscoder` as a `Replacement`."""

    kind = CROSS_LAYER

    def __init__(self, clt: CrossLayerTranscoder) -> None:
        self.clt = clt

    @property
    def n_layers(self) -> int:
        return self.clt.n_layers

    @property
    def scan(self) -> str:
        return self.clt.scan

    @property
    def source(self) -> str:
        return self.clt.source

    def d_features(self, layer: int) -> int:
        return self.clt.d_features

    def input_hook(self, layer: int) -> str:
        return self.clt.input_hook(layer)

    def output_hook(self, layer: int) -> str:
        return self.clt.output_hook(layer)

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.clt.encode(layer, x)

    def encoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        w_enc = self.clt.encoder(layer)
        return w_enc[_index(idx, w_enc)]

    def decoder_vectors(self, layer: int, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        w_dec = self.clt.decoder(layer)
        return w_dec[_index(idx, w_dec)]

    def b_dec(self, layer: int) -> torch.Tensor:
        return self.clt.b_dec(layer)

    def skip_weight(self, layer: int) -> torch.Tensor | None:
        return self.clt.skip(layer)


def replacement_of(dictionaries: Dictionaries, n_layers: int | None = None) -> Replacement:
    """The collection's cross-layer transcoder where it has one, else its per-layer transcoders."""
    if dictionaries.cross_layer is not None:
        if n_layers is not None and dictionaries.cross_layer.n_layers != n_layers:
            raise IncompatibleError(
                f"cross-layer transcoder {dictionaries.cross_layer.key} spans {dictionaries.cross_layer.n_layers} "
                f"layers, not {n_layers}"
            )
        return CrossLayerStack(dictionaries.cross_layer)
    return TranscoderStack(dictionaries, n_layers)
