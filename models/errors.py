"""One error type for everything a user can get wrong, so every front end can
print a single line instead of a traceback.

Nothing here imports torch: the CLI and the TUI import it on their fast path.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes of the `lenstop` command, one per kind of failure."""

    OK = 0
    FAILED = 1  # an unexpected failure in lenstop itself
    USAGE = 2  # malformed arguments: a bad --ablate spec, an unknown layer
    NOT_FOUND = 3  # a model, release, dictionary or file that does not exist
    INCOMPATIBLE = 4  # things that exist but do not fit together (d_in, hook, context)
    OUT_OF_MEMORY = 5
    NUMERIC = 6  # a run that produced NaN or inf (usually an extreme steer)
    BAD_FILE = 7  # a file that exists but cannot be used: truncated, corrupt, not UTF-8, wrong shape
    INTERRUPTED = 130


class LenstopError(Exception):
    """An error meant for the user: one line saying what was wrong and what to do."""

    code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(LenstopError):
    code = ExitCode.USAGE


class NotFoundError(LenstopError):
    code = ExitCode.NOT_FOUND


class IncompatibleError(LenstopError):
    code = ExitCode.INCOMPATIBLE


class LengthMismatchError(IncompatibleError):
    """Two prompts that must line up token for token (patching) do not; `alignment` shows where."""

    def __init__(self, message: str, clean: list[str], corrupt: list[str]) -> None:
        super().__init__(message)
        self.clean, self.corrupt = clean, corrupt

    def alignment(self, width: int | None = None) -> list[str]:
        """Two rows, one column per position, the first differing position marked with ^; with `width`, in
        blocks of columns that fit it, one after another (a blank line between), for a pane that cannot scroll
        sideways."""
        from lenstop.models.tokens import visible

        n = max(len(self.clean), len(self.corrupt))
        cells = [
            (
                visible(self.clean[i]) if i < len(self.clean) else "",
                visible(self.corrupt[i]) if i < len(self.corrupt) else "",
            )
            for i in range(n)
        ]
        widths = [max(len(a), len(b), 1) for a, b in cells]
        first = next((i for i, (a, b) in enumerate(cells) if a != b), n)
        blocks: list[list[int]] = [[]]
        used = 8
        for i, w in enumerate(widths):
            if width is not None and blocks[-1] and used + w + 1 > width:
                blocks.append([])
                used = 8
            blocks[-1].append(i)
            used += w + 1
        lines: list[str] = []
        for block in blocks:
            if lines:
                lines.append("")
            lines.append("clean   " + " ".join(cells[i][0].ljust(widths[i]) for i in block))
            lines.append("corrupt " + " ".join(cells[i][1].ljust(widths[i]) for i in block))
            if first in block or width is None:
                lines.append("        " + " ".join(("^" if i == first else " ").ljust(widths[i]) for i in block))
        return lines


class BadFileError(LenstopError):
    code = ExitCode.BAD_FILE


class CancelledError(LenstopError):
    code = ExitCode.INTERRUPTED


class OutOfMemoryError(LenstopError):
    code = ExitCode.OUT_OF_MEMORY


class NumericError(LenstopError):
    code = ExitCode.NUMERIC


def corrupt_weights(err: BaseException) -> bool:
    """Whether safetensors (through whichever loader) found a weights file truncated or corrupt."""
    text = str(err).lower()
    return "safetensor" in type(err).__name__.lower() or any(
        sign in text for sign in ("deserializ", "incomplete metadata")
    )


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError, or the RuntimeError some backends (MPS, older CUDA paths) raise instead."""
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower()


def allocation(err: BaseException) -> str:
    """What the allocator was asked for when it failed, as ` (tried to allocate 2.00 GiB)`, or nothing."""
    import re

    text = str(err)
    found = re.search(r"tried to allocate (\d+(?:\.\d+)? ?[KMGT]i?B)\b", text, re.IGNORECASE)
    if found:
        return f" (tried to allocate {found.group(1)})"
    found = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)  # the CPU allocator's wording
    if found:
        return f" (tried to allocate {int(found.group(1)) / 2**30:.2f} GiB)"
    return ""


def describe(err: BaseException) -> str:
    """One line for a user: ours as they are, anything else as its type and its message's first line."""
    if isinstance(err, LenstopError):
        return str(err)
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def read_json(path: str | Path, option: str) -> Any:
    """A JSON file a user named with `option`; a missing or malformed one is a one-line error."""
    import json

    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"{option} {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise BadFileError(
            f"{option} {path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "pass a JSON file saved as UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise BadFileError(f"{option} {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
