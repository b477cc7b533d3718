"""The next-token distribution at the selected position, and the logit lens:
what each layer's residual stream would predict, so one sees where a prediction forms."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from lenstop.models.results import Analysis
from lenstop.tui.format import bar, clip, percent, visible


class PredictionsView(Widget):
    DEFAULT_CSS = """
    PredictionsView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.analysis: Analysis | None = None
        self.position = 0
        self.selected_layer = 0

    def show(self, analysis: Analysis, position: int, layer: int) -> None:
        self.analysis, self.position, self.selected_layer = analysis, position, layer
        self.refresh()

    def render(self) -> Text:
        a = self.analysis
        if a is None:
            return Text("no predictions yet", style="dim")
        width = self.size.width
        out = Text()
        preds = a.predictions.at(self.position)
        top = preds[0].prob if preds else 0.0
        rows = max(1, min(len(preds), self.size.height - len(a.lens) - 2))
        for p in preds[:rows]:
            out.append(f"{clip(visible(p.token), 12):<12} {percent(p.prob)} ")
            out.append(bar(p.prob, top, max(0, min(20, width - 20))) + "\n")
        out.append("lens", style="bold")
        out.append("  top token of each layer's residual\n", style="dim")
        for layer, lens in enumerate(a.lens):
            guesses = lens.at(self.position)[:3]
            marker = "▶" if layer == self.selected_layer else " "
            out.append(f"{marker}L{layer:<2} ", style="bold" if layer == self.selected_layer else "")
            for g in guesses:
                out.append(f"{clip(visible(g.token), 10)} {percent(g.prob)}  ")
            if layer < len(a.lens) - 1:
                out.append("\n")
        return out
