"""The sanitiser every string from outside goes through before it reaches a terminal
(`lenstop.models.safe_text`): what it shows for each kind of character, checked against
the Unicode database itself, not against a copy of its own table."""

from __future__ import annotations

import json
import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from lenstop.models.safe_text import UNSAFE, glyphs, json_safe, printable
from lenstop.models.tokens import visible

ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates included, which Hypothesis leaves out by default
DANGEROUS = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # what a terminal obeys, or what garbles a line


def test_the_unsafe_set_is_every_control_format_surrogate_and_separator_character() -> None:
    """Every character of those categories is caught; anything else caught is only unassigned here
    (a format character a newer Unicode added)."""
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        caught = UNSAFE.fullmatch(char) is not None
        if category in DANGEROUS:
            assert caught, f"U+{code:04X} ({category}) is not caught"
        elif caught:
            assert category == "Cn", f"U+{code:04X} ({category}) is caught but harmless"


def test_escape_sequences_are_shown_not_sent() -> None:
    clipboard = "\x1b]52;c;aGVsbG8=\x1b\\"
    assert printable(clipboard) == "␛]52;c;aGVsbG8=␛\\"
    assert printable("\x9b31m") == "\\x9b31m"  # C1 CSI: obeyed by terminals in 8-bit mode
    assert printable("abc\u202edef") == "abc\\u202edef"  # a right-to-left override
    assert printable("a\u2066b\u2069") == "a\\u2066b\\u2069"
    assert printable("\ud800") == "\\ud800"  # a lone surrogate, which cannot even be encoded
    assert printable("tag\U000e0041") == "tag\\U000e0041"
    assert printable("nul\x00 del\x7f") == "nul␀ del␡"
    assert printable("two\nlines\tand\r") == "two⏎lines⇥and␍"


def test_safe_text_comes_back_as_it_was() -> None:
    for text in ("", "def f(x):", "naïve café 東京 🙂", "[bold]markup is not our business here[/]"):
        assert printable(text) is text
        assert glyphs(text) is text


@given(st.text(alphabet=ANY_CHARACTER, max_size=40))
def test_nothing_unsafe_survives_and_glyphs_keep_one_character_each(text: str) -> None:
    for shown in (printable(text), glyphs(text), visible(text)):
        assert UNSAFE.search(shown) is None, repr(shown)
        shown.encode("utf-8")  # no lone surrogate left to break the terminal's encoding
    assert len(glyphs(text)) == len(text)


@given(st.text(alphabet=ANY_CHARACTER, max_size=40))
def test_json_made_safe_still_means_the_same(text: str) -> None:
    document = json.dumps({"label": text, "n": [1, 2]}, ensure_ascii=False)
    safe = json_safe(document)
    assert UNSAFE.search(safe) is None
    assert json.loads(safe) == json.loads(document)


def test_tokens_show_whitespace_and_control_bytes() -> None:
    assert visible(" return\n") == "·return⏎"
    assert visible("\x1b") == "␛"  # byte-level BPE has a token for ESC
    assert visible("") == "∅"
