"""What the graph asks of a model's transcoders, whether one per layer or cross-layer.

The graph code never asks which kind it holds: it encodes each layer's MLP input,
reads the direction of each feature's pre-activation (its encoder row), the
vectors each feature writes to its own and later layers' MLP outputs (its decoder
rows: one layer for a per-layer transcoder, every later one for a CLT), the
decoder bias, and a skip connection where there is one.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Replacement(Protocol):
    """The transcoders that replace a model's MLPs, layer 0 to n_layers - 1."""

    @property
    def kind(self) -> str:
        """`transcoder_set` or `cross_layer_transcoder`, as circuit-tracer names them."""
        ...

    @property
    def n_layers(self) -> int: ...

    @property
    def scan(self) -> str:
        """An identifier of the set, as the graph viewers name it."""
        ...

    def d_features(self, layer: int) -> int: ...

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The activations (n_pos, d_features) of layer `layer`'s features on its MLP input `x` (n_pos, d_model)."""
        ...

    def encoder_vectors(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        """(k, d_model): the directions whose dot with the MLP input is each feature's pre-activation, less bias."""
        ...

    def decoder_vectors(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        """(k, n_out, d_model): what each feature writes, per unit activation, to MLP outputs layer..layer+n_out-1."""
        ...

    def b_dec(self, layer: int) -> torch.Tensor:
        """(d_model,): the bias of layer `layer`'s MLP-output reconstruction."""
        ...

    def skip_weight(self, layer: int) -> torch.Tensor | None:
        """M (d_model, d_model) with skip = mlp_in @ M, or None."""
        ...
