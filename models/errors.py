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
    """torch's OutOfMemoryError, the RuntimeError some backends (MPS, older CUDA paths) raise instead, the CPU
    allocator's ("DefaultCPUAllocator: not enough memory", "can't allocate memory"), or Python's MemoryError."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return any(sign in text for sign in ("out of memory", "not enough memory", "can't allocate memory"))


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


def json_kind(value: object) -> str:
    """What a JSON value is, in words, for an error line: `object`, `list`, `string`, `number`, ..."""
    kinds = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return kinds.get(type(value), "null")


def json_shown(value: object, limit: int = 40) -> str:
    """A JSON value as its file writes it, cut short for an error line."""
    import json

    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(err: BaseException) -> str:
    """One line for a user: ours as they are, anything else as its type and its message's first line."""
    if isinstance(err, LenstopError):
        return str(err)
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


JSON_LIMIT = 64 * 2**20  # bytes: configs, sessions and caches are kilobytes, the largest tokenizer.json some 30 MB


def read_json(path: str | Path, option: str, *, limit: int = JSON_LIMIT, what: str | None = None) -> Any:
    """A JSON file a user named with `option` (or that lenstop reads for them, named by `what`): a missing,
    unreadable, oversized, non-UTF-8, malformed or too deeply nested one is a one-line error naming the file.
    A file over `limit` bytes is refused by its size, before it is read."""
    path = Path(path).expanduser()
    name = what or f"{option} {path}"
    if not path.exists():
        raise NotFoundError(f"{name}: no such file")
    try:
        check_size(path, name, limit)
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise BadFileError(f"{name} cannot be read ({err.strerror or err})") from None
    if len(data) > limit:  # it grew while being read
        raise _too_big(name, limit)
    return parse_json(data, name)


def check_size(path: Path, name: str, limit: int) -> None:
    """A file that is read whole, bounded before it is: a regular file of at most `limit` bytes, else a one-line
    error naming it. A directory, a FIFO or a device (a link to /dev/zero) has no size to bound."""
    if not path.is_file():
        raise BadFileError(f"{name} is not a regular file; put the real file there")
    if path.stat().st_size > limit:
        raise _too_big(name, limit)


def _too_big(name: str, limit: int) -> BadFileError:
    return BadFileError(f"{name} is over {limit / 2**20:g} MiB, more than any such file lenstop reads")


def parse_json(data: bytes, name: str) -> Any:
    """JSON from bytes, or a BadFileError naming `name` and what is wrong, in one line: never the RecursionError
    of deep nesting, the ValueError of a 5,000-digit number or a MemoryError."""
    import json

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadFileError(
            f"{name} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "pass a JSON file saved as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadFileError(f"{name} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise BadFileError(f"{name} is nested too deeply to be JSON lenstop reads") from None
    except MemoryError:
        raise BadFileError(f"{name} holds more JSON than fits in memory") from None
    except ValueError as err:  # e.g. an integer longer than Python converts
        raise BadFileError(f"{name} is not JSON lenstop can read ({str(err).splitlines()[0][:80]})") from None
