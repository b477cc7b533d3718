"""Dictionaries (SAEs and transcoders): the type and its arithmetic (`dictionary`), the loaded set
(`collection`), and how they are found and loaded (`loading`); circuit-tracer's files
(`circuit_tracer_format`), the cross-layer transcoder (`cross_layer`), and the one surface over
per-layer and cross-layer transcoders (`replacement`)."""

from lenstop.models.dictionaries.collection import Dictionaries
from lenstop.models.dictionaries.cross_layer import CrossLayerTranscoder, validate_cross_layer
from lenstop.models.dictionaries.dictionary import Dictionary, FeatureEdits, flat, unflat
from lenstop.models.dictionaries.loading import (
    agreed_prepend_bos,
    agreed_processing,
    flat_width,
    layer_of,
    load_spec,
    validate,
)
from lenstop.models.dictionaries.replacement import CrossLayerStack, Replacement, TranscoderStack, replacement_of

__all__ = [
    "CrossLayerStack",
    "CrossLayerTranscoder",
    "Dictionaries",
    "Dictionary",
    "FeatureEdits",
    "agreed_prepend_bos",
    "agreed_processing",
    "flat_width",
    "layer_of",
    "load_spec",
    "replacement_of",
    "Replacement",
    "TranscoderStack",
    "validate",
    "validate_cross_layer",
    "flat",
    "unflat",
]
