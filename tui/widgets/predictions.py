"""The next-token distribution at the selected position, and the logit lens:
what each layer's residual stream would predict, so one sees where a prediction forms."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import var

from lenstop.models.results import Analysis, LogitLens
from lenstop.models.tokens import visible
from lenstop.tui.format import bar, clip, percent
from lenstop.tui.safe import SafeWidget
from lenstop.tui.views import Shown, lens_at


def predictions_text(
    analysis: Analysis, position: int, layer: int, width: int, height: int, lens: LogitLens | None = None
) -> Text:
    """The top predictions with bars, as many as fit above the lens; then the lens's top 3 a layer."""
    out = Text()
    preds = analysis.predictions.at(position)
    top = preds[0].prob if preds else 0.0
    layers = lens_at(analysis, position, lens)
    rows = max(1, min(len(preds), height - max(len(layers), 1) - 2))
    for p in preds[:rows]:
        out.append(f"{clip(visible(p.token), 12):<12} {percent(p.prob)} ")
        out.append(bar(p.prob, top, max(0, min(20, width - 20))) + "\n")
    out.append("lens", style="bold")
    out.append("  top token of each layer's residual\n", style="dim")
    if not layers:
        out.append("…", style="dim")
    for n, guesses in enumerate(layers):
        marker = "▶" if n == layer else " "
        out.append(f"{marker}L{n:<2} ", style="bold" if n == layer else "")
        for guess in guesses[:3]:
            out.append(f"{clip(visible(guess.token), 10)} {percent(guess.prob)}  ")
        if n < len(layers) - 1:
            out.append("\n")
    return out


class PredictionsView(SafeWidget):
    DEFAULT_CSS = """
    PredictionsView { height: 1fr; }
    """
    shown: var[Shown | None] = var(None, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.analysis: Analysis | None = None
        self.lens: LogitLens | None = None
        self.position = 0
        self.selected_layer = 0

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and s.analysis is not None:
            self.show(s.analysis, s.position, s.layer, s.lens)

    def show(self, analysis: Analysis, position: int, layer: int, lens: LogitLens | None = None) -> None:
        self.analysis, self.position, self.selected_layer, self.lens = analysis, position, layer, lens
        self.refresh()

    def draw(self) -> Text:
        if self.analysis is None:
            return Text("no predictions yet", style="dim")
        return predictions_text(
            self.analysis, self.position, self.selected_layer, self.size.width, self.size.height, self.lens
        )
