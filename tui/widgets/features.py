"""The top features of the selected token at the current layer: id, activation,
a bar, the label, and a mark for any intervention on it."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.reactive import var

from lenstop.models.safe_text import printable
from lenstop.tui.format import bar, clip, plain
from lenstop.tui.views import FeatureRow, Shown, feature_rows
from lenstop.tui.widgets.marked import MarkedTable

BAR = 10
FIXED = 3 + 8 + 9 + BAR + 2  # the selection and intervention marks, id, activation, bar: what the label follows
DEFAULT_EMPTY = "no active features here"
WIDE = 1000  # the column's width: wider than any pane, which clips nothing now that labels fit their room


def feature_line(row: FeatureRow, top: float, label_width: int) -> Text:
    """` ✗ #446      2.83  ██████████  "·return"`: a blank for the selection mark, the intervention mark,
    id, activation, a bar against the top one, and the label, cut to the room the pane leaves it."""
    line = Text()
    line.append(f" {row.mark:1} ", style="bold")
    line.append(f"{'#' + str(row.feature):<7} {row.act:7.2f}  {bar(row.act, top, BAR)}  ")
    line.append(clip(printable(row.label or ""), max(1, label_width)), style="italic")
    return line


class FeatureTable(MarkedTable):
    """One row a feature, laid out here as one cell so the label runs to the pane's edge."""

    BINDINGS = [
        Binding("j", "cursor_down", "next feature", show=False, id="features.down"),
        Binding("k", "cursor_up", "previous feature", show=False, id="features.up"),
        Binding("left", "screen.token(-1)", "previous token", show=False, id="features.token.previous"),
        Binding("right", "screen.token(1)", "next token", show=False, id="features.token.next"),
        Binding("home", "screen.token_at(0)", "first token", show=False, id="features.token.first"),
        Binding("end", "screen.token_at(-1)", "last token", show=False, id="features.token.last"),
        Binding("enter", "select_cursor", "card", id="features.card"),
    ]
    DEFAULT_CSS = """
    FeatureTable { height: 1fr; overflow-x: hidden; }
    """
    shown: var[Shown | None] = var(None, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_header=True, cell_padding=0)
        self.feature_ids: list[int] = []
        self.drawn: Sequence[FeatureRow] = ()
        self.listed: tuple[tuple[FeatureRow, ...], str] | None = None  # the rows and the empty text drawn
        self.empty = ""

    def on_mount(self) -> None:
        # One cell a row, wider than any pane: no sizing from content; each label is cut to its room.
        header = Text(f"   {'feature':<7} {'act':>7}  {'':<{BAR}}  label", style="bold")
        self.add_column(header, key="row", width=WIDE)
        self.watch_shown(self.shown)

    def marked_rows(self) -> int:
        return len(self.feature_ids)

    def on_resize(self) -> None:
        if self.drawn:  # the labels' room has changed
            self.show(self.drawn, self.selected, self.empty)

    def watch_shown(self, s: Shown | None) -> None:
        """The selected token's features at the layer; redrawn when they change (the screen keeps the selected
        feature among them)."""
        if s is None or s.analysis is None or not self.columns:
            return
        lf = s.features()
        rows, empty = (
            (feature_rows(lf, s.position, s.entries), DEFAULT_EMPTY) if lf is not None else ([], s.features_empty())
        )
        if (tuple(rows), empty) != self.listed:
            self.show(rows, s.feature, empty)

    def show(self, rows: Sequence[FeatureRow], keep: int | None, empty: str = DEFAULT_EMPTY) -> None:
        """One row a feature; keeps the cursor on `keep` when it is listed, else on the same row."""
        row = self.cursor_row
        self.clear()
        self.drawn, self.empty, self.listed = rows, empty, (tuple(rows), empty)
        top = max((r.act for r in rows), default=0.0)
        room = (self.scrollable_content_region.width or FIXED + 80) - FIXED
        self.feature_ids = [r.feature for r in rows]
        for r in rows:
            self.add_row(feature_line(r, top, room), key=str(r.feature))
        if not rows:
            self.add_row(plain("   " + empty, style="dim"), key="empty")  # an error's words, maybe
        if keep in self.feature_ids:
            self.move_cursor(row=self.feature_ids.index(keep), animate=False)
        elif 0 <= row < len(self.feature_ids):
            self.move_cursor(row=row, animate=False)
        self.mark_cursor()

    @property
    def selected(self) -> int | None:
        if not self.feature_ids or not 0 <= self.cursor_row < len(self.feature_ids):
            return None
        return self.feature_ids[self.cursor_row]
