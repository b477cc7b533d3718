"""The top features of the selected token at the current layer: id, activation,
a bar, the label, and a mark for any intervention on it."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding

from lenstop.models.safe_text import printable
from lenstop.tui.format import bar, clip
from lenstop.tui.safe import SafeTable
from lenstop.tui.views import FeatureRow

BAR = 10
LABEL = 80  # the pane's right edge clips what does not fit


def feature_line(row: FeatureRow, top: float) -> Text:
    """`✗ #446      2.83  ██████████  "·return"`: mark, id, activation, a bar against the top one, label."""
    line = Text()
    line.append(f"{row.mark:1} ", style="bold")
    line.append(f"{'#' + str(row.feature):<7} {row.act:7.2f}  {bar(row.act, top, BAR)}  ")
    line.append(clip(printable(row.label or ""), LABEL), style="italic")
    return line


class FeatureTable(SafeTable):
    """One row a feature, laid out here as one cell so the label runs to the pane's edge."""

    BINDINGS = [
        Binding("j", "cursor_down", "next feature", show=False, id="features.down"),
        Binding("k", "cursor_up", "previous feature", show=False, id="features.up"),
        Binding("left", "screen.token(-1)", "previous token", show=False, id="features.token.previous"),
        Binding("right", "screen.token(1)", "next token", show=False, id="features.token.next"),
        Binding("enter", "select_cursor", "card", id="features.card"),
    ]
    DEFAULT_CSS = """
    FeatureTable { height: 1fr; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_header=True, cell_padding=0)
        self.feature_ids: list[int] = []

    def on_mount(self) -> None:
        # A fixed width wider than any pane: no sizing from content, the pane's edge clips the rest.
        header = Text(f"  {'feature':<7} {'act':>7}  {'':<{BAR}}  label", style="bold")
        self.add_column(header, key="row", width=2 + 8 + 8 + 2 + BAR + 2 + LABEL)

    def show(self, rows: Sequence[FeatureRow], keep: int | None, empty: str = "no active features here") -> None:
        """One row a feature; keeps the cursor on `keep` when it is listed, else on the same row."""
        row = self.cursor_row
        self.clear()
        top = max((r.act for r in rows), default=0.0)
        self.feature_ids = [r.feature for r in rows]
        for r in rows:
            self.add_row(feature_line(r, top), key=str(r.feature))
        if not rows:
            self.add_row(Text("  " + empty, style="dim"), key="empty")
        if keep in self.feature_ids:
            self.move_cursor(row=self.feature_ids.index(keep), animate=False)
        elif 0 <= row < len(self.feature_ids):
            self.move_cursor(row=row, animate=False)

    @property
    def selected(self) -> int | None:
        if not self.feature_ids or not 0 <= self.cursor_row < len(self.feature_ids):
            return None
        return self.feature_ids[self.cursor_row]
