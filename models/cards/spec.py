"""What a corpus pass is asked for and what it answers (no torch here: front ends import these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PassOptions:
    tokens: int = 1_000_000  # at most this many corpus tokens (BOS not counted)
    context: int = 128  # tokens a window, BOS included
    batch_size: int = 32  # windows a forward pass


@dataclass(frozen=True)
class PassResult:
    written: dict[str, Path]  # dictionary key -> its cards file
    n_tokens: int  # corpus tokens read, over all runs of this pass
    resumed_from: int  # windows done before this run
    n_windows: int
    seconds: float  # this run's
