"""Prompts typed on one line: `\\n` and `\\t` stand for a newline and a tab, `\\\\` for a backslash.

Code prompts need newlines, and neither a shell's double quotes nor a one-line
input box makes them easy to type, so both the CLI and the app read these escapes.
"""

from __future__ import annotations

import re
import sys
from typing import BinaryIO

from lenstop.models.errors import BadFileError, IncompatibleError, UsageError

STDIN = "-"
STDIN_LIMIT = 64 * 2**20  # bytes: ten million tokens of text, the longest contexts there are

_ESCAPE = re.compile(r"\\(\\|n|t)")
_REPLACE = {"\\": "\\", "n": "\n", "t": "\t"}


def unescape(text: str) -> str:
    r"""`def f():\n    pass` -> a two-line prompt; `\\n` stays a backslash and an n."""
    return _ESCAPE.sub(lambda m: _REPLACE[m.group(1)], text)


def escape(text: str) -> str:
    """The inverse of `unescape`, for showing a prompt on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def check_text(prompt: str) -> str:
    """The prompt, if it is text a tokenizer can take; else a one-line error naming the first bad character.

    Python strings can hold lone UTF-16 surrogates (from a JSON escape such as \\ud800, or a
    mis-decoded file), which no tokenizer accepts."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UsageError(
            f"the prompt holds {prompt[err.start]!r} at character {err.start}: half of a UTF-16 surrogate pair, "
            "not a character; remove it or write the whole character"
        ) from None
    return prompt


def read_prompt(option: str, stdin: BinaryIO | None = None) -> str:
    """A prompt as given to `--prompt`: escapes read, or, for `-`, standard input taken as it is.

    Standard input must be UTF-8; a single trailing newline (the one `echo` and editors add) is dropped,
    so `echo 'The cat' | lenstop trace -p -` predicts after "cat", not after a newline. At most
    `STDIN_LIMIT` bytes are read: `-p - < /dev/zero` is refused, not read until memory runs out."""
    if option != STDIN:
        return unescape(option)
    data = (stdin or sys.stdin.buffer).read(STDIN_LIMIT + 1)
    if len(data) > STDIN_LIMIT:
        raise IncompatibleError(
            f"--prompt -: standard input holds more than {STDIN_LIMIT // 2**20} MiB, more text than any model's "
            "context; pass a shorter prompt"
        )
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark some editors write is not part of the prompt
    except UnicodeDecodeError as err:
        raise BadFileError(
            f"--prompt -: standard input is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
            "convert it, e.g. with iconv -t utf-8"
        ) from None
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")


def resolve_position(position: int | None, prompt_len: int) -> int | None:
    """A prompt position, negative counting from the end; None means every position."""
    if position is None:
        return None
    resolved = position + prompt_len if position < 0 else position
    if not 0 <= resolved < prompt_len:
        raise UsageError(
            f"position {position} is outside the prompt, which has {prompt_len} token{'s' if prompt_len != 1 else ''} "
            f"(0..{prompt_len - 1}, or -1..-{prompt_len})"
        )
    return resolved
