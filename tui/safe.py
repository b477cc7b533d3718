"""Widgets that draw data and never obey it.

What the app shows comes from files strangers write (labels, cards, sessions,
tokenizers, model and folder names) and from what the user types. Textual reads a
string given to a `Static`, a `Label`, a border title or a table cell as markup, so
`[/]` in a label crashed the app and `[link=...]` made a hyperlink; and it passes
control characters on to the terminal, so `ESC]52;...` in a label wrote the user's
clipboard. Here a string is always data: shown through `printable`, never parsed.
Text built by lenstop's own views keeps its styles, with any control character
left in it shown one for one (`glyphs`), so its spans still fit.

The app's text widgets are these (tests/test_safe_tui.py holds every module of
tui/ to it): `SafeStatic` and `SafeLabel` for text, `SafeInput` for fields,
`SafeTable` for lists, `SafeWidget` for a widget that draws its own text, and
`title()` for border titles.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text, TextType
from textual.content import Content
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static
from textual.widgets.data_table import RowKey

from lenstop.models.safe_text import UNSAFE_BESIDE_NEWLINES, glyphs, printable


def safe_text(text: Text) -> Text:
    """Rich text with any control character in it shown as one character, its styles and lines kept."""
    if UNSAFE_BESIDE_NEWLINES.search(text.plain) is None:
        return text
    safe = text.copy()
    safe.plain = glyphs(text.plain, keep_newlines=True)  # one for one: the spans still cover what they covered
    return safe


def shown(content: VisualType) -> VisualType:
    """`content`, safe to draw: a string as plain data with its control characters shown; Rich or
    Textual text with any control character in it shown as one character, its styles kept."""
    if isinstance(content, str):
        return Content(printable(content))
    if isinstance(content, Text):
        return safe_text(content)
    if isinstance(content, Content):
        if UNSAFE_BESIDE_NEWLINES.search(content.plain) is None:
            return content
        return Content(glyphs(content.plain, keep_newlines=True), spans=list(content.spans))
    return content  # a Rich renderable of lenstop's own (a table of bindings), built from Text


def title(text: str | Text) -> Content:
    """A border title from text that may hold data (a token, a label): never read as markup."""
    if isinstance(text, Text):
        text = text.plain
    return Content(printable(text))


class SafeStatic(Static):
    """A `Static` whose content is data: strings are never markup, control characters are shown."""

    def __init__(self, content: VisualType = "", **options: Any) -> None:
        super().__init__(shown(content), markup=False, **options)

    def update(self, content: VisualType = "", *, layout: bool = True) -> None:
        super().update(shown(content), layout=layout)


class SafeLabel(SafeStatic, Label):
    """A `Label` (a `Static` sized to its text) whose content is data, as `SafeStatic`'s."""


class SafeInput(Input):
    """An `Input` whose value (a pasted prompt, a session's) is drawn with its control characters shown one
    glyph each, so the cursor stays over the character it is at; the value itself stays what was typed.

    Textual draws the value as `Text(value)`, which drops BEL, BS, VT, FF and CR (the cursor then stood one
    cell off for each) and sends the rest raw; this is the one place that drawing can be changed."""

    @property
    def _value(self) -> Text:
        if self.password:
            return super()._value
        return Text(glyphs(self.value), no_wrap=True, overflow="ignore", end="")


class SafeWidget(Widget):
    """A widget that draws text it builds itself: `draw()` builds it, and it is drawn through `safe_text`, the
    last net under the builders (which sanitise what they put in, so that C1 and bidi characters read as
    escapes rather than as `�`)."""

    def render(self) -> Text:
        return safe_text(self.draw())

    def draw(self) -> Text:
        raise NotImplementedError


class SafeTable(DataTable[Text]):
    """A `DataTable` whose cells are drawn safely, however they were built."""

    def add_row(
        self, *cells: Text, height: int | None = 1, key: str | None = None, label: TextType | None = None
    ) -> RowKey:
        return super().add_row(*(safe_text(c) for c in cells), height=height, key=key, label=label)
