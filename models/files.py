"""Writing files so that a crash, a full disk or ctrl+c never leaves half of one: sessions,
exported graphs, screenshots and caches all go through `write_atomically`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, text: str) -> Path:
    """A temporary file beside `path`, flushed to disk, then renamed over it: readers see the old
    file or the new one, never a mix; on any failure the old one is left as it was."""
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
