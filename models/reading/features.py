"""A dictionary's reading as a frozen result, and the keys layer readings are kept by."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from lenstop.models.dictionaries import Dictionary
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, Intervention
from lenstop.models.layer_cache import LayerKey, layer_key
from lenstop.models.results import LayerFeatures, frozen_array
from lenstop.models.runtime.run_plan import Capture


def attention_key(ids: tuple[int, ...], interventions: Sequence[Intervention], layer: int) -> LayerKey:
    return layer_key(ids, interventions, layer, "attention")


def features_key(ids: tuple[int, ...], interventions: Sequence[Intervention], d: Dictionary, top_k: int) -> LayerKey:
    return layer_key(ids, interventions, d.layer, (d.key, top_k))


def layer_features(d: Dictionary, cap: Capture, named: set[int]) -> LayerFeatures:
    """The dictionary's top features; `named` are features the interventions name, labelled even when inactive."""
    reading = cap.features[d.key]  # reduced to the top `top_k` in the pass (see run_plan.FeatureReading)
    union = reading.union
    error = cap.error_norm[d.key].float()
    norm = cap.input_norm[d.key].float()
    return LayerFeatures(
        layer=d.layer,
        hook=d.hook_in,
        dictionary=d.key,
        top_ids=frozen_array(reading.top_ids.cpu().numpy(), np.int64),
        top_acts=frozen_array(reading.top_values.cpu().numpy(), np.float32),
        union_ids=frozen_array(union.cpu().numpy(), np.int64),
        **_sparse_columns(reading.columns),
        error_norm=frozen_array(error.cpu().numpy(), np.float32),
        relative_error=frozen_array((error / norm.clamp_min(1e-12)).cpu().numpy(), np.float32),
        l0=frozen_array(reading.l0.cpu().numpy(), np.int64),
        labels=MappingProxyType({i: label for i in sorted({*union.tolist(), *named}) if (label := d.cards.label(i))}),
    )


def _sparse_columns(dense: torch.Tensor) -> dict[str, NDArray[Any]]:
    """The nonzero entries of each column of (positions, n), found on the device: LayerFeatures' union_* fields."""
    columns, positions = dense.T.nonzero(as_tuple=True)
    counts = torch.bincount(columns, minlength=dense.shape[1])
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return {
        "union_offsets": frozen_array(offsets.cpu().numpy(), np.int64),
        "union_positions": frozen_array(positions.cpu().numpy(), np.int64),
        "union_values": frozen_array(dense.T[columns, positions].float().cpu().numpy(), np.float32),
    }


def named_features(interventions: Sequence[Intervention]) -> dict[int, set[int]]:
    """Per layer, the features the interventions act on."""
    named: dict[int, set[int]] = {}
    for iv in interventions:
        if isinstance(iv, FeatureAblation | FeatureSteer | FeatureClamp):
            named.setdefault(iv.layer, set()).add(iv.feature)
    return named
