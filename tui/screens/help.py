"""`?`: every binding of the app and of the focused pane, from the bindings themselves."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from lenstop.tui.format import plain
from lenstop.tui.safe import SafeStatic

GUIDE = r"""Type a prompt (\n is a newline), then esc to leave the prompt box.
Move between tokens with ←/→ (h/l), between layers with [ and ], and through
a list with j/k. Every pane answers for the selected layer and token.
Interventions apply to all positions, or only the selected token after @."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%; border: round $accent; padding: 0 1; background: $surface;
    }
    """

    def __init__(self, bindings: list[tuple[str, Binding]]) -> None:
        super().__init__()
        self.rows = bindings

    def compose(self) -> ComposeResult:
        table = Table(show_edge=False, pad_edge=False, box=None, expand=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        table.add_column("where", style="dim")
        table.add_column("id", style="dim")
        for where, b in self.rows:
            table.add_row(plain(self.app.get_key_display(b)), plain(b.description), plain(where), plain(b.id or ""))
        with VerticalScroll():
            yield SafeStatic(Text(GUIDE + "\n", style="italic"))
            yield SafeStatic(table)
            yield SafeStatic(
                Text(
                    '\nRemap a key by its id in ~/.config/lenstop/keys.json, e.g. {"ablate": "A"}.  esc closes.',
                    style="dim",
                )
            )
