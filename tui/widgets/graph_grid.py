"""The attribution graph as a grid: a row per layer (the logits on top, the embeddings at the bottom), a
column per position headed by its token, a mark per node (`lenstop.tui.graph_views`). The selected node is
drawn reversed, pinned nodes underlined, the selected row and column marked: all of it legible without
colour. A prompt wider (or a model taller) than the pane scrolls so that the selection stays in view,
with ‹ › saying there is more."""

from __future__ import annotations

from collections.abc import Collection

from rich.text import Text
from textual.geometry import Size

from lenstop.models.tokens import visible
from lenstop.tui.format import clip
from lenstop.tui.graph_views import GraphModel, row_name
from lenstop.tui.safe import SafeWidget

MIN_CELL, MAX_CELL = 4, 8  # a column's width: its marks and a space


class GraphGrid(SafeWidget):
    DEFAULT_CSS = """
    GraphGrid { height: auto; max-height: 60%; }
    """

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.model: GraphModel | None = None
        self.selected: int | None = None
        self.pinned: Collection[int] = ()
        self.message = "building the graph…"
        self._first_col = 0
        self._first_row = 0  # rows counted from the top

    def show(self, model: GraphModel | None, selected: int | None, pinned: Collection[int], message: str = "") -> None:
        self.model, self.selected, self.pinned = model, selected, pinned
        self.message = message
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 if self.model is None else self.model.n_rows + 1

    def _label_width(self) -> int:
        assert self.model is not None
        return max(len(row_name(r, self.model.graph.n_layers)) for r in range(self.model.n_rows)) + 2

    def _columns(self, width: int) -> tuple[int, range]:
        """The cell width, and the positions in view."""
        assert self.model is not None
        n_pos = self.model.graph.n_pos
        room = max(MIN_CELL, width - self._label_width())
        cell = max(MIN_CELL, min(MAX_CELL, room // max(1, n_pos)))
        fit = max(1, room // cell)
        if self.selected is not None:
            position = self.model.cell_of(self.selected)[1]
            if position < self._first_col:
                self._first_col = position
            elif position >= self._first_col + fit:
                self._first_col = position - fit + 1
        self._first_col = max(0, min(self._first_col, n_pos - fit))
        return cell, range(self._first_col, min(n_pos, self._first_col + fit))

    def _rows(self, height: int) -> range:
        """The rows in view, from the top (index 0 is the logits' row)."""
        assert self.model is not None
        n_rows, fit = self.model.n_rows, max(1, height - 1)
        if self.selected is not None:
            top = n_rows - 1 - self.model.cell_of(self.selected)[0]
            if top < self._first_row:
                self._first_row = top
            elif top >= self._first_row + fit:
                self._first_row = top - fit + 1
        self._first_row = max(0, min(self._first_row, n_rows - fit))
        return range(self._first_row, min(n_rows, self._first_row + fit))

    def draw(self) -> Text:
        model = self.model
        if model is None:
            return Text(" " + self.message, style="dim")
        graph = model.graph
        cell, columns = self._columns(self.size.width)
        at = model.cell_of(self.selected) if self.selected is not None else (-1, -1)
        label_width = self._label_width()
        out = Text()
        more = ("‹" if columns.start > 0 else " ") + ("›" if columns.stop < graph.n_pos else " ")
        out.append(f"{more:<{label_width}}", "dim")
        for p in columns:
            out.append(clip(visible(graph.tokens[p]), cell - 1), "reverse" if p == at[1] else "bold")
            out.append(" " * (cell - min(cell - 1, len(clip(visible(graph.tokens[p]), cell - 1)))))
        for top in self._rows(self.size.height):
            row = model.n_rows - 1 - top
            out.append("\n")
            mark = "▶" if row == at[0] else " "
            out.append(f"{mark}{row_name(row, graph.n_layers):<{label_width - 1}}", "bold" if row == at[0] else "")
            for p in columns:
                self._cell(out, model, model.cells.get((row, p), ()), cell)
        return out

    def _cell(self, out: Text, model: GraphModel, nodes: tuple[int, ...], cell: int) -> None:
        room = cell - 1
        if not nodes:
            out.append("·", "dim")
            out.append(" " * room)
            return
        shown: list[int | None] = list(nodes[:room])
        if len(nodes) > room:  # the last slot says there is more, unless the selection is among the rest
            shown = [*nodes[: room - 1], self.selected if self.selected in nodes[room - 1 :] else None]
        for i in shown:
            if i is None:
                out.append("+", "dim")
                continue
            style = "reverse bold" if i == self.selected else "underline" if i in self.pinned else ""
            out.append(model.marks[i], style)
        out.append(" " * (cell - len(shown)))
