"""Writing files so that a crash, a full disk or ctrl+c never leaves half of one: sessions,
exported graphs, screenshots and caches all go through `write_atomically`; and where lenstop's cache is."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from lenstop.models.errors import ExitCode, LenstopError, NumericError
from lenstop.models.safe_text import json_safe

# What to do when the file system refuses a write, by errno.
_ADVICE = {
    errno.ENOSPC: "free some room or write elsewhere",
    errno.EDQUOT: "free some room or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "write elsewhere or fix the folder's permissions",
    errno.EPERM: "write elsewhere or fix the folder's permissions",
}


class WriteError(LenstopError, OSError):
    """A file that could not be written, in one line: a LenstopError for the CLI's edge (exit 2 when the
    path names something that is not a file, else 7), and an OSError for the app, which says it in a status line
    as `cannot write PATH: {strerror}`."""

    code = ExitCode.BAD_FILE

    def __init__(self, path: Path, why: str, code: ExitCode = ExitCode.BAD_FILE) -> None:
        super().__init__(f"cannot write {path}: {why}", code)
        self.strerror = why


def cache_dir() -> Path:
    """`$LENSTOP_CACHE`, else `$XDG_CACHE_HOME/lenstop`, else `~/.cache/lenstop`."""
    if explicit := os.environ.get("LENSTOP_CACHE"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lenstop"


def json_text(doc: object, *, indent: int | None = None) -> str:
    """A JSON document as lenstop writes it, on stdout or to a file, with a final newline: UTF-8 to read, with
    lone surrogates (which UTF-8 cannot hold: a prompt from a JSON escape) and characters a terminal would obey
    escaped (`json_safe`). NaN and infinity are not JSON, which a parser downstream would choke on: a result
    holding one is a numeric error instead."""
    import json

    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=indent)
    except ValueError:
        raise NumericError(
            "the result holds NaN or infinite numbers, which JSON cannot carry; check the model's and the "
            "dictionaries' files, or use smaller intervention strengths"
        ) from None
    return json_safe(text) + "\n"


def write_json(path: str | Path, doc: object, *, indent: int | None = None) -> Path:
    """`doc` as `json_text`, written by `write_atomically`."""
    return write_atomically(path, json_text(doc, indent=indent))


def write_atomically(path: str | Path, text: str) -> Path:
    """A temporary file beside the target, flushed to disk, then renamed over it: readers see the old
    file or the new one, never a mix; on any failure the old one is left as it was.

    The target is a regular file or a path with nothing there; a symlink is written through, so the file it
    points at is the one replaced. Anything else (a directory, a FIFO, a device such as /dev/null or
    /proc/self/fd/1) is refused: renaming over it would replace it with a file. An existing file keeps its
    mode; a new one gets what the umask gives."""
    shown = Path(path).expanduser()
    target = _target(shown)
    folder = target.parent
    try:
        if not os.path.lexists(shown):
            folder.mkdir(parents=True, exist_ok=True)
        existing = os.stat(target) if target.exists() else None
        handle, temporary = _create_beside(target)
    except OSError as err:
        raise _unwritable(shown, err) from None
    try:
        if existing is not None:
            os.fchmod(handle, stat.S_IMODE(existing.st_mode))
        _write_all(handle, text.encode("utf-8"))
        os.fsync(handle)
        os.close(handle)
        handle = -1
        os.replace(temporary, target)
    except BaseException as err:
        if handle >= 0:
            os.close(handle)
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise _unwritable(shown, err) from None
        raise
    return shown


def check_writable(path: str | Path) -> None:
    """Refuse at once a target `write_atomically` would refuse, before minutes of work that it would then lose."""
    _target(Path(path).expanduser())


def _target(path: Path) -> Path:
    """The file `path` names: itself, or what its symlinks lead to; refused unless it is a regular file or missing."""
    try:
        found = os.stat(path)  # follows symlinks, as far as they lead
    except FileNotFoundError:
        return Path(os.path.realpath(path))  # missing, or a dangling link: the file is created where it points
    except OSError as err:
        raise _unwritable(path, err) from None
    if not stat.S_ISREG(found.st_mode):
        raise WriteError(
            path, f"it is {_kind(found.st_mode)}, not a regular file; name a file to write", ExitCode.USAGE
        )
    return Path(os.path.realpath(path))


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _create_beside(target: Path) -> tuple[int, str]:
    """A new, empty temporary file in the target's folder, created with mode 0666 so that the umask decides
    its permissions (tempfile.mkstemp makes 0600 files, which is how saved sessions used to lose theirs)."""
    for _ in range(100):
        temporary = str(target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666
            ), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _unwritable(path: Path, err: OSError) -> WriteError:
    """One line for a write the file system refused: the OSError's own words, then what to do."""
    if isinstance(err, WriteError):
        return err
    words = err.strerror or str(err)
    if err.errno in (errno.EISDIR, errno.ENOTDIR):
        return WriteError(path, f"{words}; name a file to write", ExitCode.USAGE)
    advice = _ADVICE.get(err.errno or 0, "write elsewhere")
    return WriteError(path, f"{words}; {advice} (the old file, if any, is left as it was)")
