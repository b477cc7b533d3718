"""Text from outside lenstop, made safe to draw in a terminal.

Labels, prompts, tokens, model and dictionary names, file names and cached values
come from files that strangers write. A terminal obeys the control characters in
them: `ESC]52;c;...` writes the user's clipboard, `ESC]0;...` retitles the window,
a right-to-left override reverses what follows. Rich strips only BEL, BS, VT, FF
and CR, and Textual passes the rest on. So every string from outside is drawn
through `printable` (or, where each character must keep its one cell, `glyphs`),
which shows those characters instead of sending them:

- C0 controls and DEL as their Unicode control pictures (`␛` for ESC, `␀` for NUL),
  newline, tab and carriage return as `⏎`, `⇥` and `␍`;
- C1 controls, format characters (bidi overrides and isolates, zero-width
  characters, the byte-order mark, tags), lone surrogates and the line and
  paragraph separators as escapes (`\\x9b`, `\\u202e`, `\\U000e0041`).

Nothing here imports anything heavy: the CLI and the app call it on every line.
"""

from __future__ import annotations

import re

# Unicode categories Cc (controls), Cf (format), Cs (surrogates), Zl and Zp (line and paragraph
# separators), as ranges: tests/test_safe_text.py checks them against the running Python's database.
_UNSAFE_RANGES = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls (Unicode 15 added 13439..1343F)
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
UNSAFE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _UNSAFE_RANGES) + "]")
UNSAFE_BESIDE_NEWLINES = re.compile(f"(?!\\n){UNSAFE.pattern}")  # for text whose line breaks are layout

_WHITESPACE = {"\n": "⏎", "\t": "⇥", "\r": "␍"}
_OTHER_GLYPH = "�"  # where one cell must stand for a character that has no picture


def _shown(char: str) -> str:
    """How `printable` shows one unsafe character."""
    code = ord(char)
    if char in _WHITESPACE:
        return _WHITESPACE[char]
    if code < 0x20:
        return chr(0x2400 + code)  # the control pictures: ␀ ␁ ... ␛ ... ␟
    if code == 0x7F:
        return "␡"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _glyph(char: str) -> str:
    """How `glyphs` shows one unsafe character: one cell, always."""
    code = ord(char)
    if char in _WHITESPACE:
        return _WHITESPACE[char]
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "␡"
    return _OTHER_GLYPH


def printable(text: str) -> str:
    """`text` with every character that a terminal would obey, or that would garble the layout, shown
    visibly instead (see the module docstring). Safe text comes back unchanged, the same object."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(lambda m: _shown(m.group()), text)


def glyphs(text: str, *, keep_newlines: bool = False) -> str:
    """Like `printable`, but each character becomes exactly one character (a picture, or `�`), so that
    positions in the text stay positions on screen: for text being edited, whose cursor counts characters,
    and for styled text, whose styles cover ranges of characters. `keep_newlines` leaves its line breaks."""
    unsafe = UNSAFE_BESIDE_NEWLINES if keep_newlines else UNSAFE
    if unsafe.search(text) is None:
        return text
    return unsafe.sub(lambda m: _glyph(m.group()), text)


def json_safe(document: str) -> str:
    """A JSON document with the unsafe characters inside its strings written as `\\uXXXX` escapes.

    `json.dumps(ensure_ascii=False)` escapes C0 controls but leaves C1 controls and bidi overrides raw,
    which a terminal showing `--json` output would obey; escaped, the document means the same."""
    if UNSAFE.search(document) is None:
        return document

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        if code < 0x20:  # json.dumps escapes these inside strings; outside them they are its own whitespace
            return match.group()
        if code <= 0xFFFF:
            return f"\\u{code:04x}"
        code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters beyond the BMP
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return UNSAFE.sub(escape, document)
