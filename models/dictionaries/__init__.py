"""Dictionaries (SAEs and transcoders): the type and its arithmetic (`dictionary`), the loaded set
(`collection`), and how they are found and loaded (`loading`)."""

from lenstop.models.dictionaries.collection import Dictionaries
from lenstop.models.dictionaries.dictionary import Dictionary, FeatureEdits, flat, unflat
from lenstop.models.dictionaries.loading import (
    agreed_prepend_bos,
    agreed_processing,
    flat_width,
    layer_of,
    load_spec,
    validate,
)

__all__ = [
    "Dictionaries",
    "Dictionary",
    "FeatureEdits",
    "agreed_prepend_bos",
    "agreed_processing",
    "flat_width",
    "layer_of",
    "load_spec",
    "validate",
    "flat",
    "unflat",
]
