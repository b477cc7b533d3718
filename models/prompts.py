"""Prompts typed on one line: `\\n` and `\\t` stand for a newline and a tab, `\\\\` for a backslash.

Code prompts need newlines, and neither a shell's double quotes nor a one-line
input box makes them easy to type, so both the CLI and the app read these escapes.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\(\\|n|t)")
_REPLACE = {"\\": "\\", "n": "\n", "t": "\t"}


def unescape(text: str) -> str:
    r"""`def f():\n    pass` -> a two-line prompt; `\\n` stays a backslash and an n."""
    return _ESCAPE.sub(lambda m: _REPLACE[m.group(1)], text)


def escape(text: str) -> str:
    """The inverse of `unescape`, for showing a prompt on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
