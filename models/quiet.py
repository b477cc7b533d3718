"""Silence the libraries' own chatter (progress bars, deprecation notices) while
lenstop loads, so the CLI's stderr carries only lenstop's own lines and the TUI's
screen is not scribbled on."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# transformers 5 renamed the model's `past_key_values` argument `cache`, and warns of it on every cached
# forward pass; TransformerBridge passes the old name whatever lenstop asks, so `lenstop generate` printed
# the warning on stderr. That one warning, and nothing else, is dropped.
CACHE_RENAMED = r"`past_key_values` is deprecated"


def drop_cache_renamed_warning() -> None:
    warnings.filterwarnings("ignore", message=CACHE_RENAMED, category=FutureWarning)


# SAELens's sparse decode builds its tensor without torch's optional invariant checks, which torch then
# warns of on every first call; lenstop's sparse inputs come from to_sparse(), valid by construction.
SPARSE_UNCHECKED = "Sparse invariant checks are implicitly disabled"


@functools.cache
def drop_sparse_unchecked_warning() -> None:
    """Called where lenstop decodes sparsely, not at import: importing a module should not change filters.
    Once per process (cached), and after the load, whose quiet() restores the filters it found."""
    warnings.filterwarnings("ignore", message=SPARSE_UNCHECKED)


@contextmanager
def quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    loggers = [logging.getLogger(name) for name in ("transformer_lens", "sae_lens", "root", "accelerate")]
    levels = [lg.level for lg in loggers]
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
