"""The inspector app: one screen of panes that all answer for the same selection
(layer, token, feature, head), over an engine that runs in worker threads.

The app takes a *loader* (a function returning an engine), so tests can hand it
the real engine on the demo or a fake one; it never imports torch itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, LoadingIndicator, Static

from lenstop.models.errors import LenstopError
from lenstop.models.head_scores import head_scores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout
from lenstop.models.prompts import unescape
from lenstop.tui.format import clip, percent, visible
from lenstop.tui.loader import EngineLoader, Loader, engine_loader
from lenstop.tui.messages import (
    AnalysisFailed,
    AnalysisFinished,
    EngineLoaded,
    GenerationFailed,
    GenerationFinished,
    LoadFailed,
    LoadProgressed,
)
from lenstop.tui.screens.card import CardScreen, card_text
from lenstop.tui.screens.help import HelpScreen
from lenstop.tui.screens.value import ValueScreen
from lenstop.tui.session import Session
from lenstop.tui.widgets.effects import EffectsPane, InterventionTable, ShiftView
from lenstop.tui.widgets.features import FeatureTable
from lenstop.tui.widgets.heads import HeadsView
from lenstop.tui.widgets.predictions import PredictionsView
from lenstop.tui.widgets.tokens import TokenStrip

TOP_K = 12
DEBOUNCE_S = 0.25
COMPACT_WIDTH, COMPACT_HEIGHT = 100, 32
PANES = ("features", "heads", "predictions", "effects")
KEYMAP_FILE = Path("~/.config/lenstop/keys.json").expanduser()


def describe_error(err: BaseException) -> str:
    """One line for the status bar: ours as they are, anything else with its type."""
    if isinstance(err, LenstopError):
        return str(err)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"internal error: {type(err).__name__}: {text}"


class Pane(Container):
    """A bordered pane of the inspector; `z` can zoom it to fill the screen."""

    ALLOW_MAXIMIZE = True


class LenstopApp(App[None]):
    TITLE = "lenstop"
    CSS_PATH = "lenstop.tcss"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("q", "quit", "quit", id="quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True, id="interrupt"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("h,left", "token(-1)", "token", key_display="←/→", id="token.previous"),
        Binding("l,right", "token(1)", "token", show=False, id="token.next"),
        Binding("left_square_bracket", "layer(-1)", "layer", key_display="[ ]", id="layer.previous"),
        Binding("right_square_bracket", "layer(1)", "layer", show=False, id="layer.next"),
        Binding("a", "ablate", "ablate", id="ablate"),
        Binding("s", "steer", "steer", id="steer"),
        Binding("c", "clamp", "clamp", id="clamp"),
        Binding("plus,equals_sign", "nudge(1)", "steer +1", show=False, id="steer.more"),
        Binding("minus", "nudge(-1)", "steer -1", show=False, id="steer.less"),
        Binding("x", "knockout", "head", id="knockout"),
        Binding("at", "scope", "scope", key_display="@", id="scope"),
        Binding("g", "generate", "generate", id="generate"),
        Binding("u", "undo", "undo", id="undo"),
        Binding("slash", "focus_prompt", "prompt", key_display="/", id="prompt"),
        Binding("escape", "leave_prompt", "leave prompt", show=False, id="prompt.leave"),
        Binding("1", "pane('features')", "features", show=False, id="pane.features"),
        Binding("2", "pane('heads')", "heads", show=False, id="pane.heads"),
        Binding("3", "pane('predictions')", "predictions", show=False, id="pane.predictions"),
        Binding("4", "pane('effects')", "effects", show=False, id="pane.effects"),
        Binding("z", "zoom", "zoom pane", show=False, id="pane.zoom"),
        Binding("less_than_sign", "split(-1)", "narrower left", show=False, id="pane.narrower"),
        Binding("greater_than_sign", "split(1)", "wider left", show=False, id="pane.wider"),
        Binding("w", "save_session", "save session", show=False, id="session.save"),
        Binding("ctrl+s", "save_svg", "save SVG", show=False, id="screenshot"),
    ]

    def __init__(
        self,
        loader: Loader,
        *,
        session: Session | None = None,
        session_path: Path | None = None,
        title: str | None = None,
        show_timings: bool = True,
    ) -> None:
        super().__init__()
        self.show_timings = show_timings  # off for snapshot tests, whose screens must not vary
        self.loader = loader
        self.session = session or Session()
        self.session_path = session_path
        self.model_title = title or self.session.model
        self.engine: Any = None
        self.info: Any = None
        self.analysis: Any = None
        self.request = 0
        self.scope_all = True
        self.active_pane = "features"
        self.split = 3  # left column share of the grid, in sixths
        self._debounce: Any = None
        self._main: Screen | None = None
        self._load_keymap()

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(id="prompt-row"):
            yield Label("❯", id="prompt-mark")
            yield Input(
                value=self.session.prompt,
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
        yield Static(id="summary")
        yield Static(id="status")
        yield Footer()
        with Container(id="loading"):
            with Vertical():
                yield Label(f"lenstop · loading {self.model_title}", id="loading-title")
                yield LoadingIndicator()
                yield Label("starting", id="loading-step")
                yield Input(value=self._retry_text(), id="loading-retry")

    def _q(self, selector: Any, expect: Any = None) -> Any:
        """A widget of the inspector screen, whichever screen is on top (help, a card...)."""
        screen = self._main or self.screen
        return screen.query_one(selector, expect) if expect is not None else screen.query_one(selector)

    @property
    def _alive(self) -> bool:
        """False once the app is closing: late worker messages are then ignored."""
        return self._main is not None and self._main.is_attached and self.is_running

    def on_mount(self) -> None:
        self._main = self.screen
        self._q("#tokens-pane").border_title = "tokens"
        for pane in PANES:
            self._q(f"#{pane}-pane").border_title = pane
        self._q("#header", Static).update(f" lenstop · {self.model_title} · loading…")
        self._apply_size(self.size.width, self.size.height)
        self._q("#prompt", Input).focus()
        self._load()

    def on_resize(self, event: Any) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.screen.set_class(compact, "-compact")
        self._q(TokenStrip).max_rows = 1 if height < 28 else (2 if compact else 3)
        self._set_active_pane(self.active_pane)
        self._render_all()

    @property
    def compact(self) -> bool:
        return self.screen.has_class("-compact")

    # ---------------------------------------------------------------- loading
    def _retry_text(self) -> str:
        parts = [self.session.model] + [f"--sae {s}" for s in self.session.saes]
        return " ".join(parts)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> None:
        tic = time.monotonic()
        try:
            engine = self.loader(lambda step: self.post_message(LoadProgressed(step)))
        except BaseException as err:  # noqa: BLE001 - shown on screen, the app stays up
            self.post_message(LoadFailed(describe_error(err)))
            return
        self.post_message(EngineLoaded(engine, time.monotonic() - tic))

    def on_load_progressed(self, message: LoadProgressed) -> None:
        if not self._alive:
            return
        self._q("#loading-step", Label).update(message.step + "…")
        self._status(message.step + "…")

    def on_load_failed(self, message: LoadFailed) -> None:
        if not self._alive:
            return
        loading = self._q("#loading")
        loading.add_class("-failed")
        step = self._q("#loading-step", Label)
        step.update(f"{message.error}\nedit and press enter to load again, or q to quit")
        step.add_class("-error")
        self._status(message.error, error=True)
        self._q("#loading-retry", Input).focus()

    @on(Input.Submitted, "#loading-retry")
    def _retry(self, event: Input.Submitted) -> None:
        words = event.value.split()
        if not words:
            return
        model, saes, i = words[0], [], 1
        while i < len(words):
            if words[i] == "--sae" and i + 1 < len(words):
                saes.append(words[i + 1])
                i += 2
            else:
                i += 1
        self.session.model, self.session.saes = model, saes
        self.model_title = model
        # Keep the device, dtype and labels the app was started with; only the model changes.
        self.loader = (
            replace(self.loader, model=model, saes=tuple(saes))
            if isinstance(self.loader, EngineLoader)
            else engine_loader(model, saes)
        )
        loading = self._q("#loading")
        loading.remove_class("-failed")
        self._q("#loading-step", Label).remove_class("-error")
        self._q("#loading-title", Label).update(f"lenstop · loading {model}")
        self._load()

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        if not self._alive:
            return
        self.engine = message.engine
        self.info = self.engine.info()
        self._q("#loading").display = False
        sel = self.session.selection
        sel.layer = min(max(0, sel.layer), self.info.n_layers - 1)
        if sel.layer == 0 and self.info.dictionaries and not self.session.entries:
            sel.layer = self.info.dictionaries[0].layer
        timing = f" in {message.seconds:.1f} s" if self.show_timings else ""
        self._status(f"ready{timing} · {self.info.device} · {self.info.dtype}")
        self._render_interventions()
        self.run_analysis()

    # ---------------------------------------------------------------- analysis
    @on(Input.Changed, "#prompt")
    def _prompt_changed(self, event: Input.Changed) -> None:
        if event.value == self.session.prompt:
            return  # set programmatically (at start): nothing new to analyse
        self.session.prompt = event.value
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, self.run_analysis)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        self.run_analysis()
        self.action_leave_prompt()

    def run_analysis(self) -> None:
        """Analyse the current prompt with the active interventions; only the latest request counts."""
        if self.engine is None:
            return
        self.request += 1
        prompt = unescape(self.session.prompt)
        if not prompt.strip():
            self._status("type a prompt")
            return
        self._status("analysing…")
        self._analyse(self.request, prompt, self.session.active)

    @work(thread=True, exclusive=True, group="analysis", exit_on_error=False)
    def _analyse(self, request: int, prompt: str, interventions: tuple) -> None:
        tic = time.monotonic()
        try:
            analysis = self.engine.analyse(prompt, interventions, top_k=TOP_K, n_predictions=10)
        except BaseException as err:  # noqa: BLE001 - shown on screen, the app stays up
            self.post_message(AnalysisFailed(request, describe_error(err)))
            return
        self.post_message(AnalysisFinished(request, analysis, time.monotonic() - tic))

    def on_analysis_finished(self, message: AnalysisFinished) -> None:
        if message.request != self.request or not self._alive:
            return  # a newer request is on its way: this one is stale
        previous = self.analysis
        self.analysis = message.analysis
        n = len(self.analysis.tokens)
        sel = self.session.selection
        at_end = previous is not None and sel.position == len(previous.tokens) - 1
        if sel.position < 0 or sel.position >= n or at_end:
            sel.position = n - 1  # follow the end of the prompt while typing there
        extra = f" · {len(self.session.active)} interventions" if self.session.active else ""
        timing = f" in {message.seconds * 1000:.0f} ms" if self.show_timings else ""
        self._status(f"{n} tokens · analysed{timing}{extra}")
        self._render_all()

    def on_analysis_failed(self, message: AnalysisFailed) -> None:
        if message.request != self.request or not self._alive:
            return
        hint = " (u undoes the last change)" if self.session.entries else ""
        self._status(message.error + hint, error=True)

    # ---------------------------------------------------------------- rendering
    def _status(self, text: str, error: bool = False) -> None:
        statuses = self._main.query("#status") if self._main is not None and self._main.is_attached else []
        if not statuses:
            return  # a modal screen is up, or the app is closing
        status = statuses.first(Static)
        status.update((" error: " if error else " ") + text)
        status.set_class(error, "-error")

    def _layer_features(self) -> Any:
        return self.analysis.layer(self.session.selection.layer) if self.analysis is not None else None

    def _render_all(self) -> None:
        if not self._alive:
            return
        self._render_header()
        if self.analysis is None:
            return
        self._render_tokens()
        self._render_features()
        self._render_heads()
        self._render_predictions()
        self._render_effects()
        self._render_summary()

    def _render_header(self) -> None:
        if self.info is None:
            return
        i = self.info
        sel = self.session.selection
        dict_layers = {d.layer for d in i.dictionaries}
        strip = " ".join(
            f"[{layer}]" if layer == sel.layer else (str(layer) if layer in dict_layers else f"·{layer}")
            for layer in range(i.n_layers)
        )
        arch = sorted({d.architecture for d in i.dictionaries})
        dicts = f"dict {'/'.join(arch)}×{len(i.dictionaries)}" if i.dictionaries else "no dict"
        pos = ""
        if self.analysis is not None:
            pos = f" · pos {sel.position} {clip(visible(self.analysis.tokens[sel.position]), 12)!r}"
        scope = "all positions" if self.scope_all else "this token"
        if self.compact:
            text = f" lenstop {self.model_title} · L{sel.layer}/{i.n_layers - 1}{pos} · @{scope}"
        else:
            text = (
                f" lenstop · {self.model_title} · {i.n_layers} layers · d={i.d_model} · {i.n_heads} heads · {dicts}"
                f" · {i.device} {i.dtype} │ layer {strip}{pos} │ @ {scope}"
            )
        self._q("#header", Static).update(text)

    def _render_tokens(self) -> None:
        a, sel = self.analysis, self.session.selection
        lf = self._layer_features()
        pane = self._q("#tokens-pane")
        if lf is not None and sel.feature is not None and (acts := lf.activation_of(sel.feature)) is not None:
            values = [float(v) for v in acts]
            label = lf.labels.get(sel.feature)
            pane.border_title = f"tokens · shaded by L{sel.layer} #{sel.feature}" + (f" {label!r}" if label else "")
        elif lf is not None:
            values = [float(v) for v in lf.relative_error]
            pane.border_title = f"tokens · shaded by L{sel.layer} reconstruction error"
        else:
            values = [0.0] * len(a.tokens)
            pane.border_title = "tokens"
        self._q(TokenStrip).show(a.tokens, values, sel.position)

    def _label(self, layer: int, feature: int) -> str | None:
        """Labels of features outside the analysis's top lists come from the engine (cached there)."""
        try:
            return self.engine.label(layer, feature)
        except LenstopError:  # e.g. two dictionaries at this layer
            return None

    def _mark(self, feature: int) -> str:
        layer = self.session.selection.layer
        for e in self.session.entries:
            iv = e.intervention
            if e.enabled and iv.layer == layer and getattr(iv, "feature", None) == feature:
                return {"ablate": "✗", "steer": "⇢", "clamp": "="}[iv.kind]
        return " "

    def _render_features(self) -> None:
        sel = self.session.selection
        table = self._q(FeatureTable)
        lf = self._layer_features()
        pane = self._q("#features-pane")
        token = clip(visible(self.analysis.tokens[sel.position]), 12)
        pane.border_title = f"features · L{sel.layer} · pos {sel.position} {token!r}"
        if lf is None:
            layers = ", ".join(str(d.layer) for d in self.info.dictionaries) or "none"
            table.show(
                [],
                lambda f: None,
                self._mark,
                None,
                empty=f"no dictionary at layer {sel.layer} (dictionaries at: {layers})",
            )
            sel.feature = None
            return
        feats = [(f.id, f.act) for f in lf.features(sel.position)]
        listed = {f for f, _ in feats}
        for e in self.session.entries:  # an ablated feature reads 0 but stays listed, so it can be restored
            feature = getattr(e.intervention, "feature", None)
            if e.intervention.layer == sel.layer and feature is not None and feature not in listed:
                acts = lf.activation_of(feature)
                feats.append((feature, float(acts[sel.position]) if acts is not None else 0.0))
                listed.add(feature)
        table.show(feats, lambda f: lf.labels.get(f) or self._label(sel.layer, f), self._mark, sel.feature)
        if sel.feature not in table.feature_ids:
            sel.feature = table.selected

    def _render_heads(self) -> None:
        sel = self.session.selection
        att = next((x for x in self.analysis.attention if x.layer == sel.layer), None)
        knocked = {
            e.intervention.head
            for e in self.session.entries
            if e.enabled and e.intervention.kind == "knockout" and e.intervention.layer == sel.layer
        }
        pattern = att.pattern if att is not None else None
        scores = head_scores(pattern, self.analysis.token_ids) if pattern is not None else []
        self._q(HeadsView).show(pattern, self.analysis.tokens, sel.position, scores, knocked, sel.head)
        self._q("#heads-pane").border_title = f"heads · L{sel.layer} · from pos {sel.position}"

    def _render_predictions(self) -> None:
        sel = self.session.selection
        self._q(PredictionsView).show(self.analysis, sel.position, sel.layer)
        self._q("#predictions-pane").border_title = f"predictions · after pos {sel.position}"

    def _render_effects(self) -> None:
        self._q(ShiftView).show(self.analysis, self.session.selection.position)
        n = len(self.session.active)
        self._q("#effects-pane").border_title = f"effects · {n} active" if n else "effects"

    def _render_interventions(self) -> None:
        self._q(InterventionTable).show(self.session.entries)

    def _render_summary(self) -> None:
        a, pos = self.analysis, self.session.selection.position
        nxt = "  ".join(f"{clip(visible(p.token), 8)} {percent(p.prob).strip()}" for p in a.predictions.at(pos)[:3])
        lens = " ".join(f"L{layer} {clip(visible(t.at(pos)[0].token), 6)}" for layer, t in enumerate(a.lens))
        kl = f" · KL {float(a.kl[pos]):.2f}" if a.kl is not None else ""
        self._q("#summary", Static).update(f" next {nxt} · lens {lens}{kl}")

    # ---------------------------------------------------------------- selection
    @on(DataTable.RowHighlighted, "#features")
    def _feature_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = self._q(FeatureTable)
        feature = table.selected
        if feature != self.session.selection.feature and self.analysis is not None:
            self.session.selection.feature = feature
            self._render_tokens()
            self._render_header()

    @on(DataTable.RowSelected, "#features")
    def _feature_selected(self, event: DataTable.RowSelected) -> None:
        self.action_card()

    @on(HeadsView.HeadSelected)
    def _head_selected(self, event: HeadsView.HeadSelected) -> None:
        self.session.selection.head = event.head

    def on_descendant_focus(self, event: Any) -> None:
        for pane in PANES:
            if self._q(f"#{pane}-pane").has_focus_within:
                self._set_active_pane(pane)

    def _set_active_pane(self, pane: str) -> None:
        self.active_pane = pane
        tabs = " ".join(f"[{i} {p}]" if p == pane else f"{i} {p}" for i, p in enumerate(PANES, 1))
        for p in PANES:
            widget = self._q(f"#{p}-pane")
            widget.set_class(p == pane, "-active")
            widget.border_subtitle = tabs if self.compact else ""
        if self.analysis is not None:
            self._render_summary()

    def action_pane(self, pane: str) -> None:
        self._set_active_pane(pane)
        target = {"features": FeatureTable, "heads": HeadsView, "effects": InterventionTable}.get(pane)
        if target is not None:
            self._q(target).focus()

    def action_zoom(self) -> None:
        """Fill the screen with the active pane, or put it back."""
        if self.screen is not self._main:
            return
        if self._main.maximized is not None:
            self._main.minimize()
        else:
            self._main.maximize(self._q(f"#{self.active_pane}-pane"), container=False)

    def action_split(self, step: int) -> None:
        """Move the split between the left and the right column of panes."""
        self.split = max(1, min(5, self.split + step))
        self._q("#grid").styles.grid_columns = f"{self.split}fr {6 - self.split}fr"

    def action_token(self, step: int) -> None:
        if self.analysis is None:
            return
        sel = self.session.selection
        sel.position = max(0, min(len(self.analysis.tokens) - 1, sel.position + step))
        self._render_all()

    def action_layer(self, step: int) -> None:
        if self.info is None:
            return
        sel = self.session.selection
        sel.layer = max(0, min(self.info.n_layers - 1, sel.layer + step))
        self._render_all()

    def action_focus_prompt(self) -> None:
        self._q("#prompt", Input).focus()

    def action_leave_prompt(self) -> None:
        if self._q("#prompt", Input).has_focus:
            self._q(FeatureTable).focus()

    def action_scope(self) -> None:
        self.scope_all = not self.scope_all
        self._render_header()
        self._status("interventions now apply to " + ("all positions" if self.scope_all else "the selected token only"))

    # ---------------------------------------------------------------- interventions
    def _position(self) -> int | None:
        return None if self.scope_all else self.session.selection.position

    def _feature_target(self) -> tuple[int, int] | None:
        sel = self.session.selection
        if self._layer_features() is None or sel.feature is None:
            self._status("select a feature first (features pane, j/k)", error=True)
            return None
        return sel.layer, sel.feature

    def _changed(self, note: str) -> None:
        self._render_interventions()
        self._status(note)
        self.run_analysis()

    def action_ablate(self) -> None:
        target = self._feature_target()
        if target is None:
            return
        on_now = self.session.toggle_ablation(FeatureAblation(*target, position=self._position()))
        self._changed(("ablated" if on_now else "restored") + f" L{target[0]} #{target[1]}")

    def action_steer(self) -> None:
        target = self._feature_target()
        if target is None:
            return
        existing = self.session.find("steer", *target, self._position())
        default = existing.strength if existing else 5.0

        def done(value: float | None) -> None:
            if value is not None:
                self.session.add(FeatureSteer(*target, value, position=self._position()))
                self._changed(f"steering L{target[0]} #{target[1]} by {value:+g}")

        self.push_screen(ValueScreen(f"steer L{target[0]} #{target[1]}: strength (× its decoder row)", default), done)

    def action_clamp(self) -> None:
        target = self._feature_target()
        if target is None:
            return
        lf = self._layer_features()
        acts = lf.activation_of(target[1])
        default = float(max(acts)) * 2 if acts is not None and max(acts) > 0 else 10.0

        def done(value: float | None) -> None:
            if value is not None:
                self.session.add(FeatureClamp(*target, value, position=self._position()))
                self._changed(f"clamped L{target[0]} #{target[1]} to {value:g}")

        self.push_screen(ValueScreen(f"clamp L{target[0]} #{target[1]} to value", default), done)

    def action_nudge(self, step: float) -> None:
        target = self._feature_target()
        if target is None:
            return
        existing = self.session.find("steer", *target, self._position())
        strength = (existing.strength if existing else 0.0) + step
        self.session.add(FeatureSteer(*target, strength, position=self._position()))
        self._changed(f"steering L{target[0]} #{target[1]} by {strength:+g}")

    def action_knockout(self) -> None:
        if self.info is None:
            return
        sel = self.session.selection
        on_now = self.session.toggle_ablation(HeadKnockout(sel.layer, sel.head, position=self._position()))
        self._changed(("knocked out" if on_now else "restored") + f" head L{sel.layer}.H{sel.head}")

    def action_undo(self) -> None:
        if self.session.undo():
            self._changed("undone")
        else:
            self._status("nothing to undo")

    def _entry_index(self) -> int | None:
        table = self._q(InterventionTable)
        if not self.session.entries:
            return None
        return min(max(0, table.cursor_row), len(self.session.entries) - 1)

    def action_toggle_entry(self) -> None:
        index = self._entry_index()
        if index is not None:
            self.session.toggle_enabled(index)
            self._changed("switched " + ("on" if self.session.entries[index].enabled else "off"))

    def action_remove_entry(self) -> None:
        index = self._entry_index()
        if index is not None:
            self.session.remove(index)
            self._changed("removed")

    def action_clear_entries(self) -> None:
        self.session.clear()
        self._changed("cleared all interventions")

    def action_edit_entry(self) -> None:
        index = self._entry_index()
        if index is None:
            return
        iv = self.session.entries[index].intervention
        if iv.kind not in ("steer", "clamp"):
            self._status("only steers and clamps have a value to edit")
            return
        field = "strength" if iv.kind == "steer" else "value"

        def done(value: float | None) -> None:
            if value is not None:
                self.session.replace_at(index, replace(iv, **{field: value}))
                self._changed(f"{iv.kind} set to {value:g}")

        self.push_screen(ValueScreen(f"{iv.describe()}: new {field}", getattr(iv, field)), done)

    # ---------------------------------------------------------------- generation and cards
    def action_generate(self) -> None:
        if self.engine is None or not unescape(self.session.prompt).strip():
            return
        self._q(ShiftView).show_generation(None, "generating…")
        self._set_active_pane("effects")
        self._generate(unescape(self.session.prompt), self.session.active)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, prompt: str, interventions: tuple) -> None:
        try:
            result = self.engine.generate(prompt, interventions, max_new_tokens=24, temperature=0.0)
        except BaseException as err:  # noqa: BLE001
            self.post_message(GenerationFailed(describe_error(err)))
            return
        self.post_message(GenerationFinished(result))

    def on_generation_finished(self, message: GenerationFinished) -> None:
        if not self._alive:
            return
        self._q(ShiftView).show_generation(message.generation)

    def on_generation_failed(self, message: GenerationFailed) -> None:
        if not self._alive:
            return
        self._q(ShiftView).show_generation(None)
        self._status(message.error, error=True)

    def action_card(self) -> None:
        target = self._feature_target()
        if target is None:
            return
        lf = self._layer_features()
        acts = lf.activation_of(target[1])
        self._open_card(target[0], target[1], self.analysis.tokens, None if acts is None else [float(a) for a in acts])

    @work(thread=True, exclusive=True, group="card", exit_on_error=False)
    def _open_card(self, layer: int, feature: int, tokens: tuple, acts: list[float] | None) -> None:
        try:
            card = self.engine.card(layer, feature)
        except BaseException as err:  # noqa: BLE001
            self.call_from_thread(self._status, describe_error(err), True)
            return
        width = max(20, int(self.size.width * 0.95) - 4)  # the card's text area
        self.call_from_thread(self.push_screen, CardScreen(card_text(layer, feature, card, tokens, acts, width)))

    # ---------------------------------------------------------------- files, help, palette
    def action_save_svg(self) -> None:
        name = time.strftime("lenstop-%Y%m%d-%H%M%S.svg")
        path = self.save_screenshot(filename=name)
        self._status(f"saved {path}")

    def action_save_session(self) -> None:
        path = self.session.save(self.session_path or Path("lenstop-session.json"))
        self._status(f"saved session to {path} (lenstop inspect --session {path})")

    def action_help(self) -> None:
        rows: list[tuple[str, Binding]] = [("anywhere", b) for b in self.BINDINGS if isinstance(b, Binding)]
        for where, cls in (("features", FeatureTable), ("heads", HeadsView), ("interventions", InterventionTable)):
            rows += [(where, b) for b in cls.BINDINGS if isinstance(b, Binding)]
        self.push_screen(HelpScreen(rows))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.id not in ("quit", "interrupt", "help", "prompt.leave"):
                action = binding.action
                yield SystemCommand(
                    binding.description.capitalize() + f" ({binding.key.split(',')[0]})",
                    f"lenstop: {binding.id}",
                    lambda a=action: self.run_action(a),
                )
        yield SystemCommand("Clear interventions", "remove every intervention", self.action_clear_entries)
        yield SystemCommand("Feature card", "open the selected feature's card", self.action_card)

    def _load_keymap(self) -> None:
        """Remap keys by binding id from ~/.config/lenstop/keys.json, e.g. {"ablate": "A"}."""
        try:
            mapping = json.loads(KEYMAP_FILE.read_text()) if KEYMAP_FILE.is_file() else {}
        except (OSError, json.JSONDecodeError):
            mapping = {}
        if isinstance(mapping, dict) and mapping:
            self.set_keymap({str(k): str(v) for k, v in mapping.items()})
