"""The top features of the selected token at the current layer: id, activation,
a bar, the label, and a mark for any intervention on it."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from lenstop.tui.format import bar, clip

BAR = 10
LABEL = 80  # the pane's right edge clips what does not fit


class FeatureTable(DataTable):
    """One row a feature, laid out here as one cell so the label runs to the pane's edge."""

    BINDINGS = [
        Binding("j", "cursor_down", "next feature", show=False, id="features.down"),
        Binding("k", "cursor_up", "previous feature", show=False, id="features.up"),
        Binding("left", "app.token(-1)", "previous token", show=False, id="features.token.previous"),
        Binding("right", "app.token(1)", "next token", show=False, id="features.token.next"),
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

    def show(
        self,
        features: list[tuple[int, float]],
        label: Callable[[int], str | None],
        mark: Callable[[int], str],
        keep: int | None,
        empty: str = "no active features here",
    ) -> None:
        """Rows for (feature, activation) pairs; keeps the cursor on `keep` when it is listed."""
        row = self.cursor_row
        self.clear()
        top = max((a for _, a in features), default=0.0)
        self.feature_ids = [f for f, _ in features]
        for feature, act in features:
            line = Text()
            line.append(f"{mark(feature):1} ", style="bold")
            line.append(f"{'#' + str(feature):<7} {act:7.2f}  {bar(act, top, BAR)}  ")
            line.append(clip(label(feature) or "", LABEL), style="italic")
            self.add_row(line, key=str(feature))
        if not features:
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
