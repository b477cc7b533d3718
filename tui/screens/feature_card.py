"""A feature's card in a scrollable modal; its text is `lenstop.tui.views.card_text`,
the same the CLI's `lenstop card` prints."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from lenstop.models.protocol import EngineProtocol
from lenstop.tui.card_text import card_text
from lenstop.tui.messages import CardFailed, CardFound
from lenstop.tui.safe import SafeStatic
from lenstop.tui.work import EngineWork, Job, Kind


class CardScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,enter", "dismiss", "close", id="card.close"),
        Binding("j,down", "scroll(1)", "scroll down", show=False, id="card.down"),
        Binding("k,up", "scroll(-1)", "scroll up", show=False, id="card.up"),
    ]
    DEFAULT_CSS = """
    CardScreen { align: center middle; }
    CardScreen > VerticalScroll { width: 95%; height: 90%; border: round $accent; padding: 0 1; background: $surface; }
    """

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="card-scroll"):
            yield SafeStatic(self.text, id="card-text")

    def action_scroll(self, step: int) -> None:
        self.query_one("#card-scroll", VerticalScroll).scroll_relative(y=step, animate=False)


def fetch_card(
    work: EngineWork,
    engine: EngineProtocol,
    layer: int,
    feature: int,
    width: int,
    tokens: Sequence[str] = (),
    acts: Sequence[float] | None = None,
) -> None:
    """Fetch a feature's card and draw it in a worker (with its activation across `tokens`, when given); the
    screen that asked gets `CardFound` and shows a `CardScreen`, or `CardFailed`."""

    def card(job: Job) -> CardFound:
        return CardFound(job.request, card_text(layer, feature, engine.card(layer, feature), tokens, acts, width))

    work.start(Kind.CARD, card, CardFailed)
