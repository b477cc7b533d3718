"""The inspector: panes that all answer for the same selection (layer, token,
feature, head), over an engine that runs in worker threads.

The selection, the interventions and the latest analysis are reactive
attributes; each watcher redraws the panes that depend on it, from the pure
functions in `lenstop.tui.views` and the panes' own text builders. The UI
thread only draws: everything shown arrives in an `Analysis`, a `Generation`
or a card fetched by a worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.events import DescendantBlur, DescendantFocus, Resize
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Input, Label, Static

from lenstop.models.circuits.results import HeadRoles
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import LenstopError
from lenstop.models.interventions import (
    Adjustable,
    FeatureAblation,
    FeatureClamp,
    FeatureSteer,
    HeadKnockout,
)
from lenstop.models.prompts import unescape
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import Analysis, LayerAttention, LayerFeatures, LogitLens, ModelInfo
from lenstop.tui.analysis import N_PREDICTIONS, analyse, read_layer
from lenstop.tui.analysis import TOP_K as TOP_K  # how many features an analysis reads, named where it is asked for
from lenstop.tui.format import counted, plain
from lenstop.tui.keymap import PALETTE_KEY, Keymap
from lenstop.tui.messages import (
    AnalysisFailed,
    AnalysisFinished,
    AttentionFailed,
    AttentionFound,
    CardFailed,
    CardFound,
    EngineLoaded,
    Failure,
    FeaturesFailed,
    FeaturesFound,
    GenerationFailed,
    GenerationFinished,
    HeadRolesFound,
    LensFound,
    PositionsOutside,
)
from lenstop.tui.safe import SafeLabel, SafeStatic, title
from lenstop.tui.screens.circuit import CircuitScreen
from lenstop.tui.screens.feature_card import CardScreen
from lenstop.tui.screens.help import HelpRow, HelpScreen, help_rows
from lenstop.tui.screens.value import ConfirmScreen, PositionScreen, ValueScreen
from lenstop.tui.session import InterventionList, Selection, Session
from lenstop.tui.views import (
    PANES,
    analysed_text,
    card_text,
    feature_rows,
    header_text,
    knocked_heads,
    pane_tabs,
    quoted_token,
    summary_text,
    token_shading,
)
from lenstop.tui.widgets.effects import EffectsPane, InterventionTable, ShiftView
from lenstop.tui.widgets.features import FeatureTable
from lenstop.tui.widgets.field import Field
from lenstop.tui.widgets.footer import FooterKey, KeyFooter
from lenstop.tui.widgets.heads import HeadsView
from lenstop.tui.widgets.predictions import PredictionsView
from lenstop.tui.widgets.tokens import TokenStrip
from lenstop.tui.work import EngineWork, Kind

NEW_TOKENS = 24
DEBOUNCE_S = 0.25
LAYER_DEBOUNCE_S = 0.12  # what an analysis lacks of a layer is read once the layer keys come to rest
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 32
SESSION_FILE = Path("lenstop-session.json")


class Pane(Container):
    """A bordered pane of the inspector; `z` can zoom it to fill the screen."""

    ALLOW_MAXIMIZE = True


_TOKEN = "move the selection along the prompt"
_LAYER = "step through the layers"
_SCOPE = "new interventions act at every position, or at the selected token only"
_PANE = "go to the pane (1-4; tab cycles)"
_SPLIT = "move the split between the columns"
# The footer's keys, most used first: as many as fit, then "? every key" (tui/widgets/footer.py).
FOOTER = (
    FooterKey(("token.previous", "token.next"), "token"),
    FooterKey(("layer.previous", "layer.next"), "layer"),
    FooterKey(("ablate",), "ablate"),
    FooterKey(("steer",), "steer"),
    FooterKey(("knockout",), "head"),
    FooterKey(("generate",), "generate"),
    FooterKey(("circuit",), "circuit"),
    FooterKey(("prompt",), "prompt"),
    FooterKey(("pane.zoom",), "zoom"),
    FooterKey(("undo",), "undo"),
    FooterKey(("session.save",), "save"),
    FooterKey(("features.card",), "card"),
    FooterKey(("effects.toggle",), "on/off"),
    FooterKey(("effects.remove",), "remove"),
    FooterKey(("effects.edit",), "edit"),
    FooterKey(("effects.clear",), "clear all"),
    FooterKey(("clamp",), "clamp"),
    FooterKey(("scope",), "scope"),
    FooterKey(("token.go",), "go to"),
    FooterKey(("quit",), "quit"),
)
HINT = ("?", "more")
EDITING = (
    FooterKey(("prompt.leave",), "back to the keys"),
    FooterKey((), "analyse now", "⏎"),
    FooterKey((), "newline", r"\n"),
)
EDITING_HINT = ("esc ?", "every key")


class InspectorScreen(Screen[None]):
    # The description says what a key does in `?` and the palette, the tooltip is the palette's line under
    # it; the footer shows these keys in its own order (FOOTER). key_display draws a pair in the footer.
    BINDINGS = [
        Binding("q", "app.quit", "quit", id="quit", tooltip="leave lenstop"),
        Binding("question_mark", "help", "every key", id="help", tooltip="every key, where it acts, and its id"),
        Binding("h,left", "token(-1)", "previous token", key_display="←/→", id="token.previous", tooltip=_TOKEN),
        Binding("l,right", "token(1)", "next token", key_display="←/→", id="token.next", tooltip=_TOKEN),
        Binding("home", "token_at(0)", "first token", id="token.first", tooltip=_TOKEN),
        Binding("end", "token_at(-1)", "last token", id="token.last", tooltip=_TOKEN),
        Binding("number_sign", "go_to", "go to a position", id="token.go", tooltip="type a token's position"),
        Binding(
            "left_square_bracket", "layer(-1)", "previous layer", key_display="[ ]", id="layer.previous", tooltip=_LAYER
        ),
        Binding("right_square_bracket", "layer(1)", "next layer", key_display="[ ]", id="layer.next", tooltip=_LAYER),
        Binding(
            "a", "ablate", "ablate the feature", id="ablate", tooltip="zero the selected feature; again to restore"
        ),
        Binding("s", "steer", "steer the feature", id="steer", tooltip="add a strength you type × its decoder row"),
        Binding("c", "clamp", "clamp the feature", id="clamp", tooltip="set the selected feature to a value you type"),
        Binding("plus,equals_sign", "nudge(1)", "steer +1", id="steer.more", tooltip="steer the feature one more"),
        Binding("minus", "nudge(-1)", "steer -1", id="steer.less", tooltip="steer the feature one less"),
        Binding(
            "x", "knockout", "knock out the head", id="knockout", tooltip="zero the selected head; again to restore"
        ),
        Binding("at", "scope", "all positions or this token", id="scope", tooltip=_SCOPE),
        Binding("g", "generate", "continue the prompt", id="generate", tooltip="clean and intervened, side by side"),
        Binding("t", "circuit", "the circuit view", id="circuit", tooltip="why the model predicts what it does here"),
        Binding("u", "undo", "undo", id="undo", tooltip="undo the last change to the interventions"),
        Binding("slash", "focus_prompt", "edit the prompt", id="prompt", tooltip="type in the prompt box"),
        Binding("escape", "leave_prompt", "back to the keys", id="prompt.leave", tooltip="leave the prompt box"),
        Binding("1", "pane('features')", "features pane", id="pane.features", tooltip=_PANE),
        Binding("2", "pane('heads')", "heads pane", id="pane.heads", tooltip=_PANE),
        Binding("3", "pane('predictions')", "predictions pane", id="pane.predictions", tooltip=_PANE),
        Binding("4", "pane('effects')", "effects pane", id="pane.effects", tooltip=_PANE),
        Binding(
            "z", "zoom", "zoom the pane", id="pane.zoom", tooltip="fill the screen with the active pane, or restore"
        ),
        Binding("less_than_sign", "split(-1)", "narrower left column", id="pane.narrower", tooltip=_SPLIT),
        Binding("greater_than_sign", "split(1)", "wider left column", id="pane.wider", tooltip=_SPLIT),
        Binding("w", "save_session", "save the session", id="session.save", tooltip="to lenstop-session.json"),
    ]

    # What the panes answer for. Watchers redraw; nothing else calls a redraw by hand.
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

    def __init__(
        self, session: Session, spec: EngineSpec, *, session_path: Path | None = None, show_timings: bool = True
    ) -> None:
        super().__init__()
        self.spec = spec  # what is loaded, for the header and for `w`
        self.session_path = session_path or SESSION_FILE
        self.show_timings = show_timings  # off for snapshot tests, whose screens must not vary
        self.engine: EngineProtocol | None = None
        self.work = EngineWork(self)  # the engine's calls, and the latest request of each kind: only it counts
        self._debounce: Timer | None = None
        self._roles_wanted = False  # the standard-task head roles, asked for after the engine's first analysis
        self._change_request = -1  # the analysis asked for by the last change of the interventions
        self._rolled_back: str | None = None  # why the last change was rolled back, until its analysis is shown
        self._switched_off: str | None = None  # which interventions lay beyond a shortened prompt, likewise
        self._analysis_seconds: float | None = None
        self.keymap = Keymap()  # what the app applied of the user's keys.json, for `?` and the palette
        self._keymap_told = False  # what it refused is said once, on the first analysed screen
        sel = session.selection
        self.set_reactive(InspectorScreen.prompt, session.prompt)
        self.set_reactive(InspectorScreen.current_layer, sel.layer)
        self.set_reactive(InspectorScreen.position, sel.position)
        self.set_reactive(InspectorScreen.feature, sel.feature)
        self.set_reactive(InspectorScreen.head, sel.head)
        self.set_reactive(InspectorScreen.interventions, InterventionList(session.entries))
        self.set_reactive(InspectorScreen.scope_all, session.scope_all)
        # The file `w` may write without asking: the one the session came from, then the one it was saved to.
        self._own_file = self.session_path.resolve() if session_path is not None and session_path.is_file() else None

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield SafeStatic(id="header")
        with Horizontal(id="prompt-row"):
            yield SafeLabel("❯", id="prompt-mark")
            yield Field(
                value=self.prompt,
                placeholder=r"type a prompt; \n is a newline",
                id="prompt",
                select_on_focus=False,
            )
        with Pane(id="tokens-pane", classes="pane"):
            yield TokenStrip(id="tokens")
        with Container(id="grid"):
            with Pane(id="features-pane", classes="pane grid-pane -active"):
                yield FeatureTable(id="features")
            with Pane(id="heads-pane", classes="pane grid-pane"):
                yield HeadsView(id="heads")
            with Pane(id="predictions-pane", classes="pane grid-pane"):
                yield PredictionsView(id="predictions")
            with Pane(id="effects-pane", classes="pane grid-pane"):
                yield EffectsPane()
        yield SafeStatic(id="summary")
        yield SafeStatic(id="status")
        with Horizontal(id="bottom"):
            yield SafeLabel(id="mode")
            yield KeyFooter(FOOTER, HINT)

    def on_mount(self) -> None:
        self.query_one("#tokens-pane").border_title = title("tokens")
        for pane in PANES:
            self.query_one(f"#{pane}-pane").border_title = title(pane)
        self._apply_size(self.app.size.width, self.app.size.height)
        self._draw_header()
        self._draw_interventions()
        self.status(f"loading {self.spec.model}…")
        # With a prompt to look at, keys navigate; with none, the user's first job is to type one.
        self.query_one(FeatureTable if self.prompt.strip() else Input).focus()
        self.query_one("#mode", Label).update(" KEYS ")  # the focus events set it from here on

    def on_resize(self, event: Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.query_one(TokenStrip).max_rows = 1 if height < 28 else (2 if self.compact else 3)

    def attach(self, loaded: EngineLoaded) -> None:
        """The engine is ready: start at its first dictionary's layer, unless a session said otherwise."""
        self.engine, self.spec = loaded.engine, loaded.spec
        info = loaded.info
        layer = min(max(0, self.current_layer), info.n_layers - 1)
        if layer == 0 and info.dictionaries and not self.interventions.entries:
            layer = info.dictionaries[0].layer
        self.set_reactive(InspectorScreen.current_layer, layer)
        self.info = info
        timing = f" in {loaded.seconds:.1f} s" if self.show_timings else ""
        self.status(f"ready{timing} · {info.device} · {info.dtype}")
        self.head_roles = None  # a retry may have loaded another model
        self._roles_wanted = True  # after the first analysis, which should not share the CPU with them
        self.run_analysis()

    @property
    def request(self) -> int:
        """The latest analysis asked for: only it counts."""
        return self.work.latest(Kind.ANALYSIS)

    def on_head_roles_found(self, message: HeadRolesFound) -> None:
        self.head_roles = message.roles

    def watch_head_roles(self) -> None:
        self._draw_heads()

    # ---------------------------------------------------------------- analysis
    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        self.prompt = event.value

    def watch_prompt(self) -> None:
        self._drop_continuation()
        self.work.supersede(Kind.ANALYSIS)  # what is on its way was asked for the prompt before: none of it may land
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, self.run_analysis)

    def _drop_continuation(self) -> None:
        """A continuation belongs to the prompt and the interventions it was made with: when either changes it
        is no longer true, so it goes (and one still being made is ignored when it comes)."""
        view = self.query_one(ShiftView)
        if view.generation is not None or view.busy:
            self.work.supersede(Kind.GENERATE)
            view.show_generation(None)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self.run_analysis()
        self.action_leave_prompt()

    def run_analysis(self) -> None:
        """Analyse the current prompt with the active interventions; only the latest request counts."""
        if self.engine is None:
            return
        prompt = unescape(self.prompt)
        if not prompt:  # whitespace is a prompt (newlines and indentation are tokens), nothing is not
            self.work.supersede(Kind.ANALYSIS)
            self.status("type a prompt")
            self.stale = self.analysis is not None  # the panes show the prompt that was there
            self._after_analysis()
            return
        self.status("analysing…")
        engine, interventions, layer = self.engine, self.interventions.active, self.current_layer
        self.work.start(
            Kind.ANALYSIS, lambda job: analyse(engine, job.request, prompt, interventions, layer), AnalysisFailed
        )

    def on_positions_outside(self, message: PositionsOutside) -> None:
        """Shortening the prompt left pinned interventions beyond its end: they are switched off (u brings them
        back) and the prompt analysed without them, and the status line says so once that analysis is shown."""
        self._after_analysis()
        if message.request != self.request:
            return
        which = ", ".join(iv.describe() for iv in message.outside)
        self._switched_off = (
            f"switched off {counted(len(message.outside), 'intervention')} beyond the prompt's"
            f" {counted(message.n_tokens, 'token')}: {which} (u switches back on)"
        )
        self.interventions = self.interventions.with_switched_off(message.outside)
        self._change_request = -1  # not a change of the user's: a NaN after it is said, not rolled back into this

    def _after_analysis(self) -> None:
        if self._roles_wanted and self.engine is not None:
            self._roles_wanted = False
            engine = self.engine
            # Its failure is not said: the heads pane then shows the prompt's roles alone.
            self.work.start(Kind.HEAD_ROLES, lambda job: HeadRolesFound(engine.head_roles()))

    def on_analysis_finished(self, message: AnalysisFinished) -> None:
        self._after_analysis()
        if message.request == self.request:  # else a newer request is on its way: this one is stale
            self._analysis_seconds = message.seconds if self.show_timings else None
            self.analysis = message.analysis

    def on_analysis_failed(self, message: AnalysisFailed) -> None:
        self._after_analysis()
        if message.request != self.request:
            return
        undone = self.interventions.undone()
        if message.failure.numeric and message.request == self._change_request and undone is not None:
            self._rolled_back = message.failure.text  # said once the analysis without the change is shown
            self.interventions = undone
            self._change_request = -1  # a rollback is not rolled back in turn
            return
        hint = " (u undoes the last change)" if self.interventions.entries else ""
        shown = " · the panes show the last analysis that worked" if self.analysis is not None else ""
        also = f" · also {self._switched_off}" if self._switched_off is not None else ""
        self._switched_off = self._rolled_back = None  # said now: not later, over an analysis they are not about
        self.status(message.failure.text + hint + shown + also, error=True)
        self.stale = self.analysis is not None  # for another prompt or other interventions than these

    def watch_analysis(self, previous: Analysis | None, analysis: Analysis | None) -> None:
        if analysis is None:
            return
        n = len(analysis.tokens)
        at_end = previous is not None and self.position == len(previous.tokens) - 1
        if self.position < 0 or self.position >= n or at_end:
            self.set_reactive(InspectorScreen.position, n - 1)  # follow the end of the prompt while typing there
        self.set_reactive(InspectorScreen.stale, False)  # redrawn below, with the panes
        self.set_class(False, "-stale")
        if self._rolled_back is not None:
            self.status(f"rolled back: {self._rolled_back}", error=True)  # first, where a narrow line still shows it
            self._rolled_back = None
        elif self._switched_off is not None:
            self.status(self._switched_off, note=True)
            self._switched_off = None
        elif not self._keymap_told and (note := self.keymap.note()) is not None:
            self._keymap_told = True
            self.status(note, error=True)
        else:
            self.status(analysed_text(n, self._analysis_seconds, len(self.interventions.active)))
        self.set_reactive(InspectorScreen.lens, None)  # the last one read another analysis: "…" until this one's
        self.set_reactive(InspectorScreen.layer_features, None)
        self.set_reactive(InspectorScreen.attention, None)
        self._draw_selection()
        self._request_lens()
        self._request_layer()

    # ---------------------------------------------------------------- watchers
    def watch_info(self) -> None:
        self._draw_header()

    def watch_current_layer(self) -> None:
        if isinstance(self.layer_features, Failure):  # why another layer's features could not be read
            self.set_reactive(InspectorScreen.layer_features, None)
        if isinstance(self.attention, Failure):  # and its attention
            self.set_reactive(InspectorScreen.attention, None)
        self._draw_selection()
        self._request_layer()

    def watch_position(self) -> None:
        self._draw_selection()
        self._request_lens()

    def _request_lens(self) -> None:
        """One position's logit lens, fetched for the selected token (every position's would cost a pass)."""
        a = self.analysis
        if self.engine is None or a is None or not 0 <= self.position < len(a.tokens):
            return
        engine, position = self.engine, self.position
        # Its failure is not said: the lens is extra, and its panes say "…" without it.
        self.work.start(
            Kind.LENS,
            lambda job: LensFound(job.request, engine.logit_lens(a.prompt, position, a.interventions, n=N_PREDICTIONS)),
        )

    def on_lens_found(self, message: LensFound) -> None:
        if self.work.is_latest(Kind.LENS, message.request):
            self.lens = message.lens

    def _request_layer(self) -> None:
        """What the analysis lacks of the selected layer (its features, its attention): read by a pass up to
        that layer once the layer keys rest (the engine keeps what it read: coming back costs no pass)."""
        a, layer = self.analysis, self.current_layer
        if self.engine is None or a is None:
            self.work.supersede(Kind.LAYER)  # whatever is on its way was asked for another layer or analysis
            return
        features = self._has_dictionary(layer) and a.layer(layer) is None and self._fetched_features() is None
        attention = a.attention_at(layer) is None and self._fetched_attention() is None
        if features or attention:
            self.work.start(Kind.LAYER, read_layer(self.engine, a, layer, features, attention, LAYER_DEBOUNCE_S))
        else:
            self.work.supersede(Kind.LAYER)

    def _is_this_layer(self, request: int, layer: int) -> bool:
        return self.work.is_latest(Kind.LAYER, request) and layer == self.current_layer

    def on_features_found(self, message: FeaturesFound) -> None:
        if self._is_this_layer(message.request, message.layer):
            self.layer_features = message.features

    def on_features_failed(self, message: FeaturesFailed) -> None:
        if self._is_this_layer(message.request, message.layer):
            self.layer_features = message.failure

    def on_attention_found(self, message: AttentionFound) -> None:
        if self._is_this_layer(message.request, message.layer):
            self.attention = message.attention

    def on_attention_failed(self, message: AttentionFailed) -> None:
        if self._is_this_layer(message.request, message.layer):
            self.attention = message.failure

    def _has_dictionary(self, layer: int) -> bool:
        return self.info is not None and any(d.layer == layer for d in self.info.dictionaries)

    def _fetched_features(self) -> LayerFeatures | None:
        found = self.layer_features
        return found if isinstance(found, LayerFeatures) and found.layer == self.current_layer else None

    def _fetched_attention(self) -> LayerAttention | None:
        found = self.attention
        return found if isinstance(found, LayerAttention) and found.layer == self.current_layer else None

    def watch_layer_features(self) -> None:
        self._draw_tokens()
        self._draw_features()

    def watch_attention(self) -> None:
        self._draw_heads()

    def watch_lens(self) -> None:
        self._draw_predictions()
        self._draw_summary()

    def watch_feature(self) -> None:
        self._draw_tokens()

    def watch_head(self) -> None:
        self._draw_heads()

    def watch_scope_all(self, scope_all: bool) -> None:
        self._draw_header()
        self.status("interventions now apply to " + ("all positions" if scope_all else "the selected token only"))

    def watch_interventions(self) -> None:
        self._drop_continuation()
        self._draw_interventions()
        self._draw_features()
        self._draw_heads()
        self.run_analysis()
        self._change_request = self.request  # a NaN from this analysis rolls the change back

    def watch_stale(self, stale: bool) -> None:
        self.set_class(stale, "-stale")
        self._draw_selection()

    def _title(self, pane: str, text: str) -> None:
        """A pane's title, marked when what it shows is no longer the current prompt's and interventions'."""
        self.query_one(f"#{pane}-pane").border_title = title(f"stale · {text}" if self.stale else text)

    def watch_active_pane(self) -> None:
        self._draw_tabs()
        self._draw_summary()

    def watch_split(self, split: int) -> None:
        self.query_one("#grid").styles.grid_columns = f"{split}fr {6 - split}fr"

    def watch_compact(self, compact: bool) -> None:
        self.set_class(compact, "-compact")
        self._draw_tabs()
        self._draw_selection()

    def watch_editing(self, editing: bool) -> None:
        mode = self.query_one("#mode", Label)
        mode.update(" EDIT " if editing else " KEYS ")
        mode.set_class(editing, "-editing")
        self.query_one(KeyFooter).use(*((EDITING, EDITING_HINT) if editing else (FOOTER, HINT)))
        self.refresh_bindings()

    @on(DescendantFocus)
    @on(DescendantBlur)
    def _focus_moved(self) -> None:
        self.editing = self.query_one("#prompt", Input).has_focus
        for pane in PANES:
            if self.query_one(f"#{pane}-pane").has_focus_within:
                self.active_pane = pane

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While typing in the prompt the footer offers esc; otherwise `/` to go there."""
        if action == "focus_prompt":
            return not self.editing
        if action == "leave_prompt":
            return self.editing
        return True

    # ---------------------------------------------------------------- drawing
    def _layer_features(self) -> LayerFeatures | None:
        if self.analysis is None:
            return None
        return self.analysis.layer(self.current_layer) or self._fetched_features()

    def _draw_selection(self) -> None:
        self._draw_header()
        self._draw_tokens()
        self._draw_features()
        self._draw_heads()
        self._draw_predictions()
        self._draw_effects()
        self._draw_summary()

    def _at(self) -> tuple[int, str] | None:
        a = self.analysis
        return (
            (self.position, a.tokens[self.position]) if a is not None and 0 <= self.position < len(a.tokens) else None
        )

    def _draw_header(self) -> None:
        text = header_text(self.info, self.spec.model, self.current_layer, self._at(), self.scope_all, self.compact)
        self.query_one("#header", Static).update(text)

    def _draw_tokens(self) -> None:
        if self.analysis is None:
            return
        values, shading = token_shading(self._layer_features(), self.feature, len(self.analysis.tokens))
        self._title("tokens", shading)
        self.query_one(TokenStrip).show(self.analysis.tokens, values, self.position)

    def _draw_features(self) -> None:
        a, layer, table = self.analysis, self.current_layer, self.query_one(FeatureTable)
        if a is None:
            return
        token = quoted_token(a.tokens[self.position])
        self._title("features", f"features · L{layer} · pos {self.position} {token}")
        lf = self._layer_features()
        if lf is None:
            have = ", ".join(str(d.layer) for d in self.info.dictionaries) if self.info else ""
            empty = (
                f"no dictionary at layer {layer} (dictionaries at: {have or 'none'})"
                if not self._has_dictionary(layer)
                else f"features unavailable: {self.layer_features.text}"
                if isinstance(self.layer_features, Failure)
                else "reading features…"
            )
            table.show([], None, empty=empty)
            self.feature = None
            return
        table.show(feature_rows(lf, self.position, self.interventions.entries), self.feature)
        if self.feature not in table.feature_ids:
            self.feature = table.selected

    def _draw_heads(self) -> None:
        if self.analysis is None:
            return
        knocked = knocked_heads(self.interventions.entries, self.current_layer)
        attention = self.analysis.attention_at(self.current_layer) or self._fetched_attention()
        roles = self.head_roles
        task = roles.layers[self.current_layer] if roles is not None and self.current_layer < len(roles.layers) else ()
        why = self.attention
        empty = f"attention unavailable: {why.text}" if isinstance(why, Failure) else "reading attention…"
        heads = self.query_one(HeadsView)
        heads.show(attention, self.analysis.tokens, self.position, knocked, self.head, task, empty)
        self._title("heads", f"heads · L{self.current_layer} · from pos {self.position}")

    def _draw_predictions(self) -> None:
        if self.analysis is None:
            return
        self.query_one(PredictionsView).show(self.analysis, self.position, self.current_layer, self.lens)
        self._title("predictions", f"predictions · after pos {self.position}")

    def _draw_effects(self) -> None:
        if self.analysis is None:
            return
        self.query_one(ShiftView).show(self.analysis, self.position)
        n = len(self.interventions.active)
        self._title("effects", f"effects · {n} active" if n else "effects")

    def _draw_interventions(self) -> None:
        self.query_one(InterventionTable).show(self.interventions.entries)

    def _draw_summary(self) -> None:
        if self.analysis is not None:
            self.query_one("#summary", Static).update(summary_text(self.analysis, self.position, self.lens))

    def _draw_tabs(self) -> None:
        tabs = pane_tabs(self.active_pane) if self.compact else ""
        for pane in PANES:
            widget = self.query_one(f"#{pane}-pane")
            widget.set_class(pane == self.active_pane, "-active")
            widget.border_subtitle = title(tabs)

    def status(self, text: str, error: bool = False, note: bool = False) -> None:
        """One line, or as many as a long message needs (up to three; the rest of the screen gives way)."""
        status = self.query_one("#status", Static)
        status.update(plain((" error: " if error else " note: " if note else " ") + text))
        status.set_class(error, "-error")
        status.set_class(note, "-note")

    # ---------------------------------------------------------------- selection
    @on(DataTable.RowHighlighted, "#features")
    def _feature_highlighted(self) -> None:
        if self.analysis is not None:
            self.feature = self.query_one(FeatureTable).selected

    @on(DataTable.RowSelected, "#features")
    def _feature_selected(self) -> None:
        self.action_card()

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
            self.maximize(self.query_one(f"#{self.active_pane}-pane"), container=False)

    def action_split(self, step: int) -> None:
        self.split = max(1, min(5, self.split + step))

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def action_leave_prompt(self) -> None:
        if self.editing:
            self.query_one(FeatureTable).focus()

    def action_scope(self) -> None:
        self.scope_all = not self.scope_all

    # ---------------------------------------------------------------- interventions
    def _scope(self) -> int | None:
        return None if self.scope_all else self.position

    def _selected_feature(self) -> tuple[int, int] | None:
        if self._layer_features() is None or self.feature is None:
            self.status("select a feature first (features pane, j/k)", error=True)
            return None
        return self.current_layer, self.feature

    def _change(self, interventions: InterventionList, note: str) -> None:
        self.interventions = interventions
        self.status(note)

    def action_ablate(self) -> None:
        if (target := self._selected_feature()) is not None:
            ablation = FeatureAblation(*target, position=self._scope())
            changed = self.interventions.with_toggled(ablation)
            on_now = changed.find(ablation.slot) is not None
            self._change(changed, ("ablated" if on_now else "restored") + f" L{target[0]} #{target[1]}")

    def action_knockout(self) -> None:
        if self.info is not None:
            knockout = HeadKnockout(self.current_layer, self.head, position=self._scope())
            changed = self.interventions.with_toggled(knockout)
            on_now = changed.find(knockout.slot) is not None
            self._change(
                changed, ("knocked out" if on_now else "restored") + f" head L{self.current_layer}.H{self.head}"
            )

    def _steer_now(self, layer: int, feature: int) -> float | None:
        steer = self.interventions.find(FeatureSteer(layer, feature, 0.0, self._scope()).slot)
        return steer.amount if isinstance(steer, FeatureSteer) else None

    def action_steer(self) -> None:
        if (target := self._selected_feature()) is None:
            return
        position = self._scope()

        def done(value: float | None) -> None:
            if value is not None:
                steer = FeatureSteer(*target, value, position=position)
                self._change(self.interventions.with_added(steer), f"steering L{target[0]} #{target[1]} by {value:+g}")

        default = self._steer_now(*target)
        question = f"steer L{target[0]} #{target[1]}: strength (× its decoder row)"
        self.app.push_screen(ValueScreen(question, 5.0 if default is None else default), done)

    def action_nudge(self, step: float) -> None:
        if (target := self._selected_feature()) is not None:
            strength = (self._steer_now(*target) or 0.0) + step
            steer = FeatureSteer(*target, strength, position=self._scope())
            self._change(self.interventions.with_added(steer), f"steering L{target[0]} #{target[1]} by {strength:+g}")

    def action_clamp(self) -> None:
        if (target := self._selected_feature()) is None:
            return
        position = self._scope()
        lf = self._layer_features()
        acts = lf.activation_of(target[1]) if lf is not None else None
        default = float(acts.max()) * 2 if acts is not None and acts.max() > 0 else 10.0

        def done(value: float | None) -> None:
            if value is not None:
                clamp = FeatureClamp(*target, value, position=position)
                self._change(self.interventions.with_added(clamp), f"clamped L{target[0]} #{target[1]} to {value:g}")

        self.app.push_screen(ValueScreen(f"clamp L{target[0]} #{target[1]} to value", default), done)

    def action_undo(self) -> None:
        undone = self.interventions.undone()
        if undone is None:
            self.status("nothing to undo")
        else:
            self._change(undone, "undone")

    def _entry_index(self) -> int | None:
        entries = self.interventions.entries
        return min(max(0, self.query_one(InterventionTable).cursor_row), len(entries) - 1) if entries else None

    def action_toggle_entry(self) -> None:
        if (index := self._entry_index()) is not None:
            changed = self.interventions.with_switched(index)
            self._change(changed, "switched " + ("on" if changed.entries[index].enabled else "off"))

    def action_remove_entry(self) -> None:
        if (index := self._entry_index()) is not None:
            self._change(self.interventions.without(index), "removed")

    def action_clear_entries(self) -> None:
        self._change(self.interventions.cleared(), "cleared all interventions")

    def action_edit_entry(self) -> None:
        if (index := self._entry_index()) is None:
            return
        iv = self.interventions.entries[index].intervention
        if not isinstance(iv, Adjustable):
            self.status("only steers and clamps have a value to edit")
            return

        def done(value: float | None) -> None:
            if value is not None:
                self._change(self.interventions.with_amount(index, value), f"{iv.kind} set to {value:g}")

        self.app.push_screen(ValueScreen(f"{iv.describe()}: new {iv.value_name}", iv.amount), done)

    # ---------------------------------------------------------------- circuits, generation and cards
    def action_circuit(self) -> None:
        """Why this prediction: the circuit view for the selected token's next-token prediction."""
        if self.engine is None or self.analysis is None:
            return
        ignored = len(self.interventions.active)
        circuit = CircuitScreen(self.engine, self.analysis.prompt, self.position, ignored=ignored, keymap=self.keymap)
        self.app.push_screen(circuit)

    def action_generate(self) -> None:
        prompt = unescape(self.prompt)
        if self.engine is None or not prompt:
            return
        self.query_one(ShiftView).show_generation(None, "generating…")
        self.active_pane = "effects"
        engine, interventions = self.engine, self.interventions.active
        self.work.start(
            Kind.GENERATE,
            lambda job: GenerationFinished(
                job.request, engine.generate(prompt, interventions, max_new_tokens=NEW_TOKENS, temperature=0.0)
            ),
            GenerationFailed,
        )

    def on_generation_finished(self, message: GenerationFinished) -> None:
        if self.work.is_latest(Kind.GENERATE, message.request):  # a superseded continuation is ignored
            self.query_one(ShiftView).show_generation(message.generation)

    def on_generation_failed(self, message: GenerationFailed) -> None:
        if self.work.is_latest(Kind.GENERATE, message.request):
            self.query_one(ShiftView).show_generation(None)
            self.status(message.failure.text, error=True)

    def action_card(self) -> None:
        target, lf = self._selected_feature(), self._layer_features()
        if target is None or lf is None or self.engine is None or self.analysis is None:
            return
        acts = lf.activation_of(target[1])
        across = None if acts is None else [float(a) for a in acts]
        width = max(20, int(self.size.width * 0.95) - 4)  # the card's text area
        engine, tokens = self.engine, self.analysis.tokens
        self.work.start(
            Kind.CARD,
            lambda job: CardFound(job.request, card_text(*target, engine.card(*target), tokens, across, width)),
            CardFailed,
        )

    def on_card_found(self, message: CardFound) -> None:
        self.app.push_screen(CardScreen(message.text))

    def on_card_failed(self, message: CardFailed) -> None:
        self.status(message.failure.text, error=True)

    # ---------------------------------------------------------------- session, help, palette
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

    def action_save_session(self) -> None:
        """`w`: save to the session's file; a file there that is not this session's is overwritten only if
        the user says so (it may be another session, saved from another folder's run)."""
        target = self.session_path
        if target.exists() and target.resolve() != self._own_file:

            def done(overwrite: bool | None) -> None:
                if overwrite:
                    self._save_session()
                else:
                    self.status(f"not saved: {target} was left as it was")

            question = f"{target} exists and is not this session's file: overwrite it?"
            self.app.push_screen(ConfirmScreen(question), done)
            return
        self._save_session()

    def _save_session(self) -> None:
        try:
            path = self.session().save(self.session_path)
        except (OSError, LenstopError) as err:  # a read-only folder, a full disk: the last saved session is untouched
            why = getattr(err, "strerror", None) or err
            self.status(f"cannot save the session to {self.session_path}: {why}", error=True)
            return
        self._own_file = path.resolve()
        self.status(f"saved session to {path} (lenstop inspect --session {path})")

    def action_help(self) -> None:
        groups: list[tuple[str, list[Binding]]] = [("anywhere", _bindings(self.app.BINDINGS, self.BINDINGS))]
        for where, widget in (("features", FeatureTable), ("heads", HeadsView), ("interventions", InterventionTable)):
            groups.append((where, _bindings(widget.BINDINGS)))
        palette = HelpRow(self.app.get_key_display(Binding(PALETTE_KEY, "")), "the command palette", "anywhere", "")
        self.app.push_screen(HelpScreen([*help_rows(groups, self._keys_of), palette]))

    def _keys_of(self, binding: Binding) -> str:
        return self.keymap.keys_of(binding, self.app.get_key_display)

    def system_commands(self) -> Iterator[SystemCommand]:
        """The palette's entries: every binding of this screen with what it does, and two without a key."""
        for binding in _bindings(self.BINDINGS):
            if binding.id not in ("quit", "help", "prompt.leave"):
                action = binding.action
                title = f"{binding.description.capitalize()} ({self._keys_of(binding)})"
                yield SystemCommand(title, binding.tooltip or binding.description, lambda a=action: self.run_action(a))
        yield SystemCommand("Clear interventions", "remove every intervention", self.action_clear_entries)
        yield SystemCommand("Feature card", "open the selected feature's card", self.action_card)


def _bindings(*groups: Iterable[object]) -> list[Binding]:
    """The `Binding`s of BINDINGS lists (which may also hold tuples)."""
    return [b for group in groups for b in group if isinstance(b, Binding)]
