"""The demo's corpus: the Python standard library's own source, which every machine
with Python has. Test suites are left out (they are repetitive and large), and a
fixed share of files, chosen by a hash of their path, is held out for evaluation.
"""

from __future__ import annotations

import hashlib
import io
import keyword
import os
import sysconfig
import token as token_types
import tokenize
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = "<|endoftext|>"
_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__", "dist-packages"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path | None = None) -> list[Path]:
    """Every .py file of the standard library except tests, in a stable order."""
    root = root or stdlib_root()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("test"))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py") and not f.startswith("test_"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_holdout(path: Path, root: Path, share: float) -> bool:
    digest = hashlib.sha256(path.relative_to(root).as_posix().encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    return text.replace("\r\n", "\n")


@dataclass(frozen=True)
class Split:
    train: list[str]
    holdout: list[str]
    n_files: int
    n_bytes: int


def split(share: float = 0.05, limit_files: int | None = None, root: Path | None = None) -> Split:
    root = root or stdlib_root()
    train: list[str] = []
    holdout: list[str] = []
    files = source_files(root)[:limit_files] if limit_files else source_files(root)
    n_bytes = 0
    for path in files:
        text = read_text(path)
        if not text:
            continue
        n_bytes += len(text.encode())
        (holdout if is_holdout(path, root, share) else train).append(text)
    if not holdout and train:  # tiny configurations: keep at least one file out
        holdout.append(train.pop())
    return Split(train, holdout, len(files), n_bytes)


# ---------------------------------------------------------------- syntax tags
# What a character of Python source is, according to Python's own tokenizer:
# used to label features ("inside a docstring", "in a comment", ...).
TAGS = ("code", "keyword", "name", "number", "operator", "string", "docstring", "comment", "indentation", "newline")


def char_tags(source: str) -> list[str]:
    """One tag per character of `source`; falls back to "code" where tokenizing fails."""
    tags = ["code"] * len(source)
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def offset(row: int, col: int) -> int:
        return line_starts[row - 1] + col if row - 1 < len(line_starts) else len(source)

    previous_significant = token_types.NEWLINE
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            start, end = offset(*tok.start), offset(*tok.end)
            if tok.type == token_types.STRING:
                tag = (
                    "docstring"
                    if previous_significant in (token_types.NEWLINE, token_types.INDENT, token_types.DEDENT)
                    and tok.string.startswith(('"""', "'''", 'r"""'))
                    else "string"
                )
            elif tok.type == token_types.COMMENT:
                tag = "comment"
            elif tok.type == token_types.NAME:
                tag = "keyword" if keyword.iskeyword(tok.string) else "name"
            elif tok.type == token_types.NUMBER:
                tag = "number"
            elif tok.type == token_types.OP:
                tag = "operator"
            elif tok.type == token_types.INDENT:
                tag = "indentation"
            elif tok.type in (token_types.NEWLINE, token_types.NL):
                tag = "newline"
            else:
                tag = None
            if tag:
                tags[start:end] = [tag] * (end - start)
            if tok.type not in (token_types.NL, token_types.COMMENT):
                previous_significant = tok.type
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    # Leading whitespace of every line is indentation, whatever the tokenizer said.
    for start in line_starts[:-1]:
        i = start
        while i < len(source) and source[i] == " ":
            tags[i] = "indentation"
            i += 1
    return tags
