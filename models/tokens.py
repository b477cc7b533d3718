"""Tokens as text a person can read, one at a time.

Decoding a single token of a byte-level BPE can give half a UTF-8 character,
which prints as U+FFFD; such tokens are shown as their bytes (`\\xe2\\x80`) instead.
`visible` shows a token's whitespace and control characters, for every front end and for
the demo's labels: a tokenizer has tokens for ESC and the other control bytes, and a
token drawn raw would be obeyed by the terminal (see `lenstop.models.safe_text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from lenstop.models.safe_text import printable


def visible(token: str) -> str:
    """A token with its whitespace made visible (`·` space, `⏎` newline, `⇥` tab) and its control
    characters shown as `printable` shows them (`␛` for ESC), never empty."""
    return printable(token).replace(" ", "·") or "∅"


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each id decoded on its own."""
    decoded = tokenizer.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False)
    return [
        text if "\ufffd" not in text else byte_token(tokenizer, int(i), text)
        for i, text in zip(ids, decoded, strict=True)
    ]


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def byte_token(tokenizer: Any, token_id: int, fallback: str) -> str:
    """A token that is part of a UTF-8 character, as its bytes (`\\xe2\\x80`), for byte-level BPE."""
    to_byte = _unicode_to_byte()
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str) or any(c not in to_byte for c in piece):
        return fallback
    return bytes(to_byte[c] for c in piece).decode("utf-8", errors="backslashreplace")
