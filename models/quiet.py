"""Silence the libraries' own chatter (progress bars, deprecation notices) while
lenstop loads, so the CLI's stderr carries only lenstop's own lines and the TUI's
screen is not scribbled on."""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# transformers 5 renamed the model's `past_key_values` argument `cache`, and says so on every cached forward
# pass that uses the old name; TransformerBridge passes the old name whatever lenstop asks, so generation
# printed it. Earlier 5.x releases warned (a FutureWarning); later ones log it once, through the logger of
# transformers.utils.generic. That one message, and nothing else, is dropped either way.
CACHE_RENAMED = r"`past_key_values`(/`cache_params`)? (is|are) deprecated"


class _DropCacheRenamed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return re.match(CACHE_RENAMED, record.getMessage()) is None


def drop_cache_renamed_warning() -> None:
    """Called before each generation, not at import: a catch_warnings() around the import would undo it."""
    warnings.filterwarnings("ignore", message=CACHE_RENAMED, category=FutureWarning)
    _filter_cache_renamed_log()


@functools.cache
def _filter_cache_renamed_log() -> None:
    logging.getLogger("transformers.utils.generic").addFilter(_DropCacheRenamed())


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
