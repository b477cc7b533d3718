"""A table whose selected row carries a mark, not only a shade.

A DataTable shows its cursor row by its background alone, which NO_COLOR (and a monochrome
terminal) takes away: nothing on screen said which feature `a` would ablate. Each row's first
cell starts with a blank column, and the cursor's row shows `▶` there.
"""

from __future__ import annotations

from rich.text import Text
from textual.coordinate import Coordinate

from lenstop.tui.safe import SafeTable

SELECTED = "▶"


class MarkedTable(SafeTable):
    def marked_rows(self) -> int:
        """How many rows are items that can be selected (a table's 'none yet' row is not)."""
        return self.row_count

    def watch_cursor_coordinate(self, old_coordinate: Coordinate, new_coordinate: Coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        self._mark(old_coordinate.row, " ")
        self.mark_cursor()

    def mark_cursor(self) -> None:
        """Put the mark on the cursor's row: after the rows are replaced, which moves no cursor."""
        self._mark(self.cursor_row, SELECTED)

    def _mark(self, row: int, mark: str) -> None:
        if not 0 <= row < min(self.row_count, self.marked_rows()) or not self.columns:
            return
        cell = self.get_cell_at(Coordinate(row, 0))
        if isinstance(cell, Text) and cell.plain[:1] != mark:
            self.update_cell_at(Coordinate(row, 0), Text(mark, style="bold") + cell[1:])
