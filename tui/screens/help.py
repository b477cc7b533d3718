"""`?`: every binding of the screen and of its panes, with the keys bound now (the keymap's included)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from lenstop.tui.format import plain
from lenstop.tui.safe import SafeStatic

GUIDE = (
    r"Type a prompt (\n is a newline), then esc to leave the prompt box. Move between tokens with ←/→ (h/l), "
    "home/end or #, between layers with [ and ], and through a list with j/k. Every pane answers for the "
    "selected layer and token. Interventions apply to all positions, or only the selected token after @."
)


@dataclass(frozen=True)
class HelpRow:
    keys: str  # as bound now, each key as the footer writes it: `h, ←`
    does: str
    where: str
    id: str


def help_rows(groups: Sequence[tuple[str, Sequence[Binding]]], keys_of: Callable[[Binding], str]) -> list[HelpRow]:
    """One row a binding, `where` it acts, with the keys `keys_of` says it has now."""
    return [HelpRow(keys_of(b), b.description, where, b.id or "") for where, bindings in groups for b in bindings]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%; border: round $accent; padding: 0 1; background: $surface;
    }
    """

    def __init__(self, rows: Sequence[HelpRow], guide: str = GUIDE) -> None:
        super().__init__()
        self.rows, self.guide = rows, guide

    def compose(self) -> ComposeResult:
        table = Table(show_edge=False, pad_edge=False, box=None, expand=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        table.add_column("where", style="dim")
        table.add_column("id", style="dim")
        for row in self.rows:
            table.add_row(plain(row.keys), plain(row.does), plain(row.where), plain(row.id))
        with VerticalScroll():
            yield SafeStatic(Text(self.guide + "\n", style="italic"))
            yield SafeStatic(table)
            yield SafeStatic(
                Text(
                    '\nRemap a key by its id in ~/.config/lenstop/keys.json, e.g. {"ablate": "A"}.  esc closes.',
                    style="dim",
                )
            )
