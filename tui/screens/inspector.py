"""The inspector: panes that all answer for the same selection (layer, token,
feature, head), over an engine that runs in worker threads.

The selection and its panes are `SelectionScreen`'s (screens/selection.py), the
keys that change the interventions `InterventionKeys`' (screens/editing.py); this
screen does the engine's part: it asks for an analysis when the prompt or the
interventions change, for what it lacks of a layer when the layer keys rest, for
the selected token's logit lens, a continuation and a card, each through
`EngineWork` (tui/work.py), and puts what comes back in the reactives the panes
are bound to. The UI thread only draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from textual import on
from textual.app import SystemCommand
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import DataTable, Input

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import LenstopError
from lenstop.models.prompts import unescape
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import Analysis, LayerAttention, LayerFeatures
from lenstop.tui.analysis import N_PREDICTIONS, analyse, read_layer
from lenstop.tui.analysis import TOP_K as TOP_K  # how many features an analysis reads, named where it is asked for
from lenstop.tui.failure import Failure
from lenstop.tui.format import counted
from lenstop.tui.keymap import PALETTE_KEY, Keymap
from lenstop.tui.messages import (
    AnalysisFailed,
    AnalysisFinished,
    AttentionFailed,
    AttentionFound,
    CardFailed,
    CardFound,
    EngineLoaded,
    FeaturesFailed,
    FeaturesFound,
    GenerationFailed,
    GenerationFinished,
    HeadRolesFound,
    LensFound,
    PositionsOutside,
)
from lenstop.tui.screens.feature_card import CardScreen, fetch_card
from lenstop.tui.screens.graph import GraphCache
from lenstop.tui.screens.help import HelpRow, HelpScreen, help_rows
from lenstop.tui.screens.inspector_keys import bindings_of, help_groups
from lenstop.tui.screens.selection import SelectionScreen
from lenstop.tui.screens.value import ConfirmScreen
from lenstop.tui.screens.view_keys import ViewKeys
from lenstop.tui.session import Session
from lenstop.tui.views import (
    analysed_text,
)
from lenstop.tui.work import EngineWork, Kind

NEW_TOKENS = 24
DEBOUNCE_S = 0.25
LAYER_DEBOUNCE_S = 0.12  # what an analysis lacks of a layer is read once the layer keys come to rest
SESSION_FILE = Path("lenstop-session.json")


class InspectorScreen(ViewKeys):
    def __init__(
        self, session: Session, spec: EngineSpec, *, session_path: Path | None = None, show_timings: bool = True
    ) -> None:
        super().__init__(session, spec)
        self.session_path = session_path or SESSION_FILE
        self.show_timings = show_timings  # off for snapshot tests, whose screens must not vary
        self.engine: EngineProtocol | None = None
        self.work = EngineWork(self)  # the engine's calls, and the latest request of each kind: only it counts
        self._debounce: Timer | None = None
        self._roles_wanted = False  # the standard-task head roles, asked for after the engine's first analysis
        self._change_request = -1  # the analysis asked for by the last change of the interventions
        self._rolled_back: str | None = None  # why the last change was rolled back, until its analysis is shown
        self._switched_off: str | None = None  # which interventions lay beyond a shortened prompt, likewise
        self._noted: tuple[object, ...] | None = None  # the analysis a note was said over: a repeat keeps the note
        self._analysis_seconds: float | None = None
        self.keymap = Keymap()  # what the app applied of the user's keys.json, for `?` and the palette
        self._keymap_told = False  # what it refused is said once, on the first analysed screen
        # The file `w` may write without asking: the one the session came from, then the one it was saved to.
        self._own_file = self.session_path.resolve() if session_path is not None and session_path.is_file() else None

    def attach(self, loaded: EngineLoaded) -> None:
        """The engine is ready: start at its first dictionary's layer, unless a session said otherwise."""
        self.engine, self.spec = loaded.engine, loaded.spec
        self.graphs: GraphCache = {}  # the attribution graphs built on this engine, by prompt, for the graph view
        info = loaded.info
        layer = min(max(0, self.current_layer), info.n_layers - 1)
        if layer == 0 and info.dictionaries and not self.interventions.entries:
            layer = info.dictionaries[0].layer
        self.set_reactive(SelectionScreen.current_layer, layer)
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
        view = self.shift_view
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
            self.set_reactive(SelectionScreen.position, n - 1)  # follow the end of the prompt while typing there
        self.set_reactive(SelectionScreen.stale, False)  # redrawn below, with the panes
        self.set_class(False, "-stale")
        shown = (analysis.prompt, analysis.interventions)
        if self._rolled_back is not None:
            self.status(f"rolled back: {self._rolled_back}", error=True)  # first, where a narrow line still shows it
            self._rolled_back, self._noted = None, shown
        elif self._switched_off is not None:
            self.status(self._switched_off, note=True)
            self._switched_off, self._noted = None, shown
        elif shown == self._noted:
            pass  # the same prompt and interventions analysed again (a debounced request landing late): keep the note
        elif not self._keymap_told and (note := self.keymap.note()) is not None:
            self._keymap_told = True
            self.status(note, error=True)
        else:
            self._noted = None
            self.status(analysed_text(n, self._analysis_seconds, len(self.interventions.active)))
        self.set_reactive(SelectionScreen.lens, None)  # the last one read another analysis: "…" until this one's
        self.set_reactive(SelectionScreen.layer_features, None)
        self.set_reactive(SelectionScreen.attention, None)
        self._keep_feature()
        self._request_lens()
        self._request_layer()

    # ---------------------------------------------------------------- watchers
    def watch_current_layer(self) -> None:
        if isinstance(self.layer_features, Failure):  # why another layer's features could not be read
            self.set_reactive(SelectionScreen.layer_features, None)
        if isinstance(self.attention, Failure):  # and its attention
            self.set_reactive(SelectionScreen.attention, None)
        self._keep_feature()
        self._request_layer()

    def watch_position(self) -> None:
        self._keep_feature()
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
        self._keep_feature()

    def watch_scope_all(self, scope_all: bool) -> None:
        self.status("interventions now apply to " + ("all positions" if scope_all else "the selected token only"))

    def watch_interventions(self) -> None:
        self._drop_continuation()
        self._keep_feature()
        self.run_analysis()
        self._change_request = self.request  # a NaN from this analysis rolls the change back

    @on(DataTable.RowSelected, "#features")
    def _feature_selected(self) -> None:
        self.action_card()

    # ---------------------------------------------------------------- generation and cards
    def action_generate(self) -> None:
        prompt = unescape(self.prompt)
        if self.engine is None or not prompt:
            return
        self.shift_view.show_generation(None, "generating…")
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
            self.shift_view.show_generation(message.generation)

    def on_generation_failed(self, message: GenerationFailed) -> None:
        if self.work.is_latest(Kind.GENERATE, message.request):
            self.shift_view.show_generation(None)
            self.status(message.failure.text, error=True)

    def action_card(self) -> None:
        target, lf = self._selected_feature(), self._layer_features()
        if target is None or lf is None or self.engine is None or self.analysis is None:
            return
        acts = lf.activation_of(target[1])
        across = None if acts is None else [float(a) for a in acts]
        width = max(20, int(self.size.width * 0.95) - 4)  # the card's text area
        fetch_card(self.work, self.engine, *target, width, self.analysis.tokens, across)

    def on_card_found(self, message: CardFound) -> None:
        self.app.push_screen(CardScreen(message.text))

    def on_card_failed(self, message: CardFailed) -> None:
        self.status(message.failure.text, error=True)

    # ---------------------------------------------------------------- session, help, palette
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
        palette = HelpRow(self.app.get_key_display(Binding(PALETTE_KEY, "")), "the command palette", "anywhere", "")
        self.app.push_screen(HelpScreen([*help_rows(help_groups(self.app.BINDINGS), self._keys_of), palette]))

    def _keys_of(self, binding: Binding) -> str:
        return self.keymap.keys_of(binding, self.app.get_key_display)

    def system_commands(self) -> Iterator[SystemCommand]:
        """The palette's entries: every binding of this screen with what it does, and two without a key."""
        for binding in bindings_of(self.BINDINGS):
            if binding.id not in ("quit", "help", "prompt.leave"):
                action = binding.action
                title = f"{binding.description.capitalize()} ({self._keys_of(binding)})"
                yield SystemCommand(title, binding.tooltip or binding.description, lambda a=action: self.run_action(a))
        yield SystemCommand("Clear interventions", "remove every intervention", self.action_clear_entries)
        yield SystemCommand("Feature card", "open the selected feature's card", self.action_card)
