"""The top features of the selected token at the current layer: id, activation,
a bar, the label, and a mark for any intervention on it."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from lenstop.tui.format import bar, clip

BAR = 10
FIXED = 1 + 1 + 7 + 1 + 7 + 2 + BAR + 2  # mark, id, act and bar, with their gaps


class FeatureTable(DataTable):
    """One row a feature; the row is laid out here so the label gets the width that is left."""

    BINDINGS = [
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
        Binding("left", "app.token(-1)", "token", show=False),
        Binding("right", "app.token(1)", "token", show=False),
        Binding("enter", "select_cursor", "card", id="features.card"),
    ]
    DEFAULT_CSS = """
    FeatureTable { height: 1fr; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_header=True, cell_padding=0)
        self.feature_ids: list[int] = []
        self._rows: list[tuple[str, int, float, float, str]] = []
        self._empty = ""

    def on_mount(self) -> None:
        self.add_column(self._header(), key="row")

    def _header(self) -> Text:
        return Text(f"  {'feature':<7} {'act':>7}  {'':<{BAR}}  label", style="bold")

    def _label_width(self) -> int:
        return max(8, self.size.width - FIXED - 1)

    def show(
        self,
        features: list[tuple[int, float]],
        label: Callable[[int], str | None],
        mark: Callable[[int], str],
        keep: int | None,
        empty: str = "no active features here",
    ) -> None:
        """Rows for (feature, activation) pairs; keeps the cursor on `keep` when it is listed."""
        top = max((a for _, a in features), default=0.0)
        self._rows = [(mark(f), f, a, top, label(f) or "") for f, a in features]
        self._empty = empty
        self.feature_ids = [f for f, _ in features]
        self._fill()
        if keep in self.feature_ids:
            self.move_cursor(row=self.feature_ids.index(keep), animate=False)

    def _fill(self) -> None:
        row = self.cursor_row
        self.clear()
        width = self._label_width()
        for mark, feature, act, top, label in self._rows:
            line = Text()
            line.append(f"{mark:1} ", style="bold")
            line.append(f"{'#' + str(feature):<7} {act:7.2f}  {bar(act, top, BAR)}  ")
            line.append(clip(label, width), style="italic")
            self.add_row(line, key=str(feature))
        if not self._rows:
            self.add_row(Text("  " + self._empty, style="dim"), key="empty")
        elif 0 <= row < len(self._rows):
            self.move_cursor(row=row, animate=False)

    def on_resize(self) -> None:
        if self._rows:
            self._fill()

    @property
    def selected(self) -> int | None:
        if not self.feature_ids or not 0 <= self.cursor_row < len(self.feature_ids):
            return None
        return self.feature_ids[self.cursor_row]
