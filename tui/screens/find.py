"""Finding features (`F` in the inspector): type words of a label or `L:F`, `+token` for the features that
promote a token, or `=` for what fires on the selected token (`=A:B` a span of the prompt). The results list
every dictionary's best; `enter` opens a card, `a` ablates and `s` steers the feature, back in the inspector,
and `G` opens the graph view at the selected token with the feature's node selected (a transcoder's)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input

from lenstop.models.feature_cards import FeatureHit
from lenstop.models.prompts import unescape
from lenstop.models.protocol import EngineProtocol
from lenstop.models.safe_text import printable
from lenstop.tui.messages import FeatureHitsFound, FindFailed
from lenstop.tui.safe import SafeInput, SafeLabel, SafeTable
from lenstop.tui.work import EngineWork, Job, Kind

HINT = "words of a label or L:F · +token: what promotes it · = what fires on the selected token (=A:B a span)"


@dataclass(frozen=True)
class Found:
    """What the user chose to do with a result, done by the inspector."""

    action: str  # "card", "ablate", "steer" or "graph"
    layer: int
    feature: int


@dataclass(frozen=True)
class Query:
    search: str | None = None
    span: tuple[int, int] | None = None
    promotes: str | None = None


def parse(text: str, position: int) -> Query:
    """What a typed query asks: `+token`, `=` or `=A:B`, else a label search (or `L:F`)."""
    text = text.strip()
    if text.startswith("+"):
        return Query(promotes=unescape(text[1:]) if text[1:].startswith(("#", " ")) else " " + text[1:])
    if text.startswith("="):
        rest = text[1:].strip()
        if not rest:
            return Query(span=(position, position + 1))
        start, sep, stop = rest.partition(":")
        if sep and start.strip().isdigit() and stop.strip().isdigit():
            return Query(span=(int(start), int(stop)))
        raise ValueError(f"={rest}: a span is =A:B, token positions from 0 (BOS)")
    return Query(search=text)


class FindScreen(ModalScreen[Found | None]):
    BINDINGS = [
        Binding("escape", "close", "close", id="find.close"),
        Binding("a", "act('ablate')", "ablate", id="find.ablate", tooltip="ablate the found feature"),
        Binding("s", "act('steer')", "steer", id="find.steer", tooltip="steer the found feature by a strength"),
        Binding(
            "G",
            "act('graph')",
            "graph",
            id="find.graph",
            tooltip="the graph at the selected token, this feature selected",
        ),
    ]
    DEFAULT_CSS = """
    FindScreen { align: center middle; }
    FindScreen > Vertical { width: 95%; height: 90%; border: round $accent; padding: 0 1; background: $surface; }
    FindScreen #find-table { height: 1fr; }
    FindScreen #find-status { color: $text-muted; }
    """

    def __init__(self, engine: EngineProtocol, prompt: str, position: int) -> None:
        super().__init__()
        self.engine, self.prompt, self.position = engine, prompt, position
        self.work = EngineWork(self)
        self.hits: list[FeatureHit] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield SafeLabel("find features · " + HINT, id="find-hint")
            yield SafeInput(placeholder="docstring · L1:446 · + return · =", id="find-input")
            status = "enter searches; in the results enter opens a card, a ablates, s steers, G follows it in the graph"
            yield SafeLabel(status, id="find-status")
            table = SafeTable(id="find-table", cursor_type="row", zebra_stripes=False)
            table.add_columns("feature", "score", "label", "why")
            yield table

    def on_mount(self) -> None:
        self.query_one("#find-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            query = parse(event.value, self.position)
        except ValueError as err:
            self._say(str(err))
            return
        if query.search == "":
            self._say("type words of a label, L:F, +token or =")
            return
        engine, prompt = self.engine, self.prompt

        def call(job: Job) -> FeatureHitsFound:
            found = engine.find_features(
                search=query.search, prompt=prompt if query.span else None, span=query.span, promotes=query.promotes
            )
            return FeatureHitsFound(job.request, tuple(found))

        self._say("searching…")
        self.work.start(Kind.FIND, call, FindFailed)

    def on_feature_hits_found(self, message: FeatureHitsFound) -> None:
        if not self.work.is_latest(Kind.FIND, message.request):
            return
        self.hits = list(message.hits)
        table = self.query_one("#find-table", SafeTable)
        table.clear()
        for h in self.hits:
            table.add_row(
                Text(f"L{h.layer} #{h.feature}"),
                Text(f"{h.score:.3f}"),
                Text(printable(h.label) if h.label else "(no label)"),
                Text(printable(h.why), style="dim"),
            )
        self._say(f"{len(self.hits)} found" if self.hits else "nothing found")
        if self.hits:
            table.focus()

    def on_find_failed(self, message: FindFailed) -> None:
        if self.work.is_latest(Kind.FIND, message.request):
            self._say(message.failure.text)

    @on(DataTable.RowSelected, "#find-table")
    def _open(self) -> None:
        self.action_act("card")

    def action_act(self, action: str) -> None:
        table = self.query_one("#find-table", SafeTable)
        if not self.hits or not table.has_focus:
            return
        hit = self.hits[table.cursor_row]
        self.dismiss(Found(action, hit.layer, hit.feature))

    def action_close(self) -> None:
        self.dismiss(None)

    def _say(self, text: str) -> None:
        self.query_one("#find-status", SafeLabel).update(text)
