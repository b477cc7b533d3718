"""The inspector's selection (layer, token, feature, head), its interventions and what the engine found,
as reactive attributes; the panes, bound to `shown`, draw themselves from them. Here also the keys that
move the selection and the layout, and the status line.

`InspectorScreen` (screens/inspector.py) adds the engine's work; `InterventionKeys` (screens/editing.py)
the keys that change the interventions.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Container, Horizontal
from textual.events import DescendantBlur, DescendantFocus, Resize
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static

from lenstop.models.circuits.results import HeadRoles
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.results import Analysis, LayerAttention, LayerFeatures, LogitLens, ModelInfo
from lenstop.tui.failure import Failure
from lenstop.tui.format import plain
from lenstop.tui.safe import SafeLabel, SafeStatic
from lenstop.tui.screens.inspector_keys import BINDINGS, EDITING, EDITING_HINT, FOOTER, HINT
from lenstop.tui.screens.value import PositionScreen
from lenstop.tui.session import InterventionList, Selection, Session
from lenstop.tui.views import (
    PANES,
    Shown,
    feature_rows,
    pane_tabs,
)
from lenstop.tui.widgets.effects import EffectsPane, InterventionTable, ShiftView
from lenstop.tui.widgets.features import FeatureTable
from lenstop.tui.widgets.field import Field
from lenstop.tui.widgets.footer import KeyFooter
from lenstop.tui.widgets.heads import HeadsView
from lenstop.tui.widgets.pane import HeaderLine, Pane, SummaryLine
from lenstop.tui.widgets.predictions import PredictionsView
from lenstop.tui.widgets.tokens import TokenStrip

COMPACT_WIDTH, COMPACT_HEIGHT = 100, 32


class SelectionScreen(Screen[None]):
    BINDINGS = BINDINGS  # tui/screens/inspector_keys.py

    # What the panes answer for; `shown` gathers it, and the panes, bound to it, draw themselves.
    info: var[ModelInfo | None] = var(None, init=False)
    analysis: var[Analysis | None] = var(None, init=False)
    prompt = var("", init=False)
    current_layer = var(0, init=False)  # (a Widget's `layer` is its CSS layer)
    position = var(-1, init=False)  # -1 until the first analysis: the last token
    feature: var[int | None] = var(None, init=False)
    head = var(0, init=False)
    scope_all = var(True, init=False)  # interventions apply at every position, or only the selected one
    interventions: var[InterventionList] = var(InterventionList, init=False)
    # How they are laid out.
    active_pane = var("features", init=False)
    split = var(3, init=False)  # the left column's share of the grid, in sixths
    compact = var(False, init=False)  # one pane at a time, for small terminals
    editing = var(False, init=False)  # the prompt has the focus: keys type into it
    head_roles: var[HeadRoles | None] = var(None, init=False)  # each head's role on the standard task
    lens: var[LogitLens | None] = var(None, init=False)  # the selected token's logit lens, fetched apart
    # The selected layer's features and attention when the analysis did not read them (it reads the layer
    # selected when it was asked for; under interventions that layer's features alone), fetched apart; or why
    # they could not be.
    layer_features: var[LayerFeatures | Failure | None] = var(None, init=False)
    attention: var[LayerAttention | Failure | None] = var(None, init=False)
    stale = var(False, init=False)  # the last analysis failed: the panes show one of another prompt or interventions
    shown: var[Shown | None] = var(None, init=False)  # computed: all of the above, as the panes see it
    tabs = var("", init=False)  # computed: the compact layout's tabs, under each pane of the grid

    def __init__(self, session: Session, spec: EngineSpec) -> None:
        super().__init__()
        self.spec = spec  # what is loaded, for the header and for `w`
        sel = session.selection
        self.set_reactive(SelectionScreen.prompt, session.prompt)
        self.set_reactive(SelectionScreen.current_layer, sel.layer)
        self.set_reactive(SelectionScreen.position, sel.position)
        self.set_reactive(SelectionScreen.feature, sel.feature)
        self.set_reactive(SelectionScreen.head, sel.head)
        self.set_reactive(SelectionScreen.interventions, InterventionList(session.entries))
        self.set_reactive(SelectionScreen.scope_all, session.scope_all)

    def session(self) -> Session:
        """Everything `w` saves: the model and dictionaries, the prompt, the selection, the interventions."""
        return Session(
            model=self.spec.model,
            saes=list(self.spec.saes),
            labels=list(self.spec.labels),
            prompt=self.prompt,
            selection=Selection(self.current_layer, self.position, self.feature, self.head),
            entries=self.interventions.entries,
            scope_all=self.scope_all,
        )

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        """Each pane is bound to `shown` and draws itself from it; the grid's panes also to the tabs."""
        on_screen, tabs = SelectionScreen.shown, SelectionScreen.tabs
        yield HeaderLine(id="header").data_bind(on_screen)
        with Horizontal(id="prompt-row"):
            yield SafeLabel("❯", id="prompt-mark")
            yield Field(
                value=self.prompt,
                placeholder=r"type a prompt; \n is a newline",
                id="prompt",
                select_on_focus=False,
            )
        with Pane("tokens").data_bind(on_screen):
            yield TokenStrip(id="tokens").data_bind(on_screen)
        with Container(id="grid"):
            for pane, widget in (
                ("features", FeatureTable(id="features")),
                ("heads", HeadsView(id="heads")),
                ("predictions", PredictionsView(id="predictions")),
                ("effects", EffectsPane()),
            ):
                with Pane(pane, classes="pane grid-pane").data_bind(on_screen, SelectionScreen.active_pane, tabs):
                    yield widget.data_bind(on_screen)
        yield SummaryLine(id="summary").data_bind(on_screen)
        yield SafeStatic(id="status")
        with Horizontal(id="bottom"):
            yield SafeLabel(id="mode")
            yield KeyFooter(FOOTER, HINT)

    def on_mount(self) -> None:
        self._apply_size(self.app.size.width, self.app.size.height)
        self.status(f"loading {self.spec.model}…")
        # With a prompt to look at, keys navigate; with none, the user's first job is to type one.
        (self.features_table if self.prompt.strip() else self.prompt_field).focus()
        self.mode_label.update(" KEYS ")  # the focus events set it from here on

    # Typed ways to the widgets the screen works with.
    @property
    def features_table(self) -> FeatureTable:
        return self.query_one(FeatureTable)

    @property
    def prompt_field(self) -> Field:
        return self.query_one(Field)

    @property
    def shift_view(self) -> ShiftView:
        return self.query_one(ShiftView)

    @property
    def mode_label(self) -> Label:
        return self.query_one("#mode", Label)

    @property
    def status_line(self) -> Static:
        return self.query_one("#status", Static)

    def pane(self, name: str) -> Pane:
        return self.query_one(f"#{name}-pane", Pane)

    def _shown(self) -> Shown:
        """What the panes answer for now (a new one each time: `shown` tells the panes of every change)."""
        return Shown(
            info=self.info,
            title=self.spec.model,
            analysis=self.analysis,
            position=self.position,
            layer=self.current_layer,
            feature=self.feature,
            head=self.head,
            scope_all=self.scope_all,
            entries=self.interventions.entries,
            compact=self.compact,
            stale=self.stale,
            lens=self.lens,
            fetched_features=self.layer_features,
            fetched_attention=self.attention,
            head_roles=self.head_roles,
        )

    def compute_shown(self) -> Shown:
        return self._shown()

    def compute_tabs(self) -> str:
        return pane_tabs(self.active_pane) if self.compact else ""

    def on_resize(self, event: Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.query_one(TokenStrip).max_rows = 1 if height < 28 else (2 if self.compact else 3)

    def watch_stale(self, stale: bool) -> None:
        self.set_class(stale, "-stale")

    def watch_split(self, split: int) -> None:
        self.query_one("#grid", Container).styles.grid_columns = f"{split}fr {6 - split}fr"

    def watch_compact(self, compact: bool) -> None:
        self.set_class(compact, "-compact")

    def watch_editing(self, editing: bool) -> None:
        mode = self.mode_label
        mode.update(" EDIT " if editing else " KEYS ")
        mode.set_class(editing, "-editing")
        self.query_one(KeyFooter).use(*((EDITING, EDITING_HINT) if editing else (FOOTER, HINT)))
        self.refresh_bindings()

    @on(DescendantFocus)
    @on(DescendantBlur)
    def _focus_moved(self) -> None:
        self.editing = self.prompt_field.has_focus
        for pane in PANES:
            if self.pane(pane).has_focus_within:
                self.active_pane = pane

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While typing in the prompt the footer offers esc; otherwise `/` to go there."""
        if action == "focus_prompt":
            return not self.editing
        if action == "leave_prompt":
            return self.editing
        return True

    # ---------------------------------------------------------------- the selected feature
    def _layer_features(self) -> LayerFeatures | None:
        return self._shown().features()

    def _keep_feature(self) -> None:
        """Keep the selected feature among those the features pane lists (it lists them once `shown` tells it):
        else the one at the pane's cursor, as the pane's cursor will stand; none when it lists none. Set
        quietly: `shown`, after the watcher that calls this, tells the panes."""
        if self.analysis is None:
            return
        lf = self._layer_features()
        ids = [r.feature for r in feature_rows(lf, self.position, self.interventions.entries)] if lf is not None else []
        if self.feature not in ids:
            row = self.features_table.cursor_row
            keep = ids[row] if 0 <= row < len(ids) else ids[0] if ids else None
            self.set_reactive(SelectionScreen.feature, keep)

    def status(self, text: str, error: bool = False, note: bool = False) -> None:
        """One line, or as many as a long message needs (up to three; the rest of the screen gives way)."""
        status = self.status_line
        status.update(plain((" error: " if error else " note: " if note else " ") + text))
        status.set_class(error, "-error")
        status.set_class(note, "-note")

    # ---------------------------------------------------------------- selection
    @on(DataTable.RowHighlighted, "#features")
    def _feature_highlighted(self) -> None:
        if self.analysis is not None:
            self.feature = self.features_table.selected

    @on(HeadsView.HeadSelected)
    def _head_selected(self, event: HeadsView.HeadSelected) -> None:
        self.head = event.head

    def action_token(self, step: int) -> None:
        if self.analysis is not None:
            self.position = max(0, min(len(self.analysis.tokens) - 1, self.position + step))

    def action_token_at(self, position: int) -> None:
        """Home and End: the first token, or the last (-1)."""
        if self.analysis is not None:
            self.position = position % len(self.analysis.tokens)

    def action_go_to(self) -> None:
        """`#`: type a position, for a long prompt that the arrows would take a hundred presses to cross."""
        if self.analysis is None:
            return

        def done(value: float | None) -> None:
            if value is not None and self.analysis is not None:
                self.position = int(value) % len(self.analysis.tokens)

        self.app.push_screen(PositionScreen(len(self.analysis.tokens), self.position), done)

    def action_layer(self, step: int) -> None:
        if self.info is not None:
            self.current_layer = max(0, min(self.info.n_layers - 1, self.current_layer + step))

    def action_pane(self, pane: str) -> None:
        self.active_pane = pane
        target = {"features": FeatureTable, "heads": HeadsView, "effects": InterventionTable}.get(pane)
        if target is not None:
            self.query_one(target).focus()

    def action_zoom(self) -> None:
        """Fill the screen with the active pane, or put it back."""
        if self.maximized is not None:
            self.minimize()
        else:
            self.maximize(self.pane(self.active_pane), container=False)

    def action_split(self, step: int) -> None:
        self.split = max(1, min(5, self.split + step))

    def action_focus_prompt(self) -> None:
        self.prompt_field.focus()

    def action_leave_prompt(self) -> None:
        if self.editing:
            self.features_table.focus()

    def action_scope(self) -> None:
        self.scope_all = not self.scope_all
