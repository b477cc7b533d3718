"""A feature's card in a scrollable modal; its text is `lenstop.tui.views.card_text`,
the same the CLI's `lenstop card` prints."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from lenstop.tui.safe import SafeStatic


class CardScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,enter", "dismiss", "close", id="card.close"),
        Binding("j,down", "scroll(1)", "scroll down", show=False, id="card.down"),
        Binding("k,up", "scroll(-1)", "scroll up", show=False, id="card.up"),
    ]
    DEFAULT_CSS = """
    CardScreen { align: center middle; }
    CardScreen > VerticalScroll { width: 95%; height: 90%; border: round $accent; padding: 0 1; background: $surface; }
    """

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="card-scroll"):
            yield SafeStatic(self.text, id="card-text")

    def action_scroll(self, step: int) -> None:
        self.query_one("#card-scroll", VerticalScroll).scroll_relative(y=step, animate=False)
