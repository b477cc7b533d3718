"""Prompts typed on one line: `\\n` and `\\t` stand for a newline and a tab, `\\\\` for a backslash.

Code prompts need newlines, and neither a shell's double quotes nor a one-line
input box makes them easy to type, so both the CLI and the app read these escapes.
"""

from __future__ import annotations

import re

from lenstop.models.errors import UsageError

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
