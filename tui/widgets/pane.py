"""The inspector's bordered panes and one-line bars, each bound to what the screen shows (`Shown`) and
drawing itself from it: a pane titles itself, the header and the summary write their own line."""

from __future__ import annotations

from textual.containers import Container
from textual.reactive import var

from lenstop.tui.safe import SafeStatic, title
from lenstop.tui.views import Shown, header_text, summary_text


class Pane(Container):
    """A bordered pane of the inspector; `z` can zoom it to fill the screen. Its title says what it shows
    (`stale ·` first when that is no longer the current prompt's), its subtitle the compact layout's tabs."""

    ALLOW_MAXIMIZE = True
    shown: var[Shown | None] = var(None, init=False)
    active_pane = var("", init=False)
    tabs = var("", init=False)

    def __init__(self, pane: str, *, classes: str = "pane") -> None:
        super().__init__(id=f"{pane}-pane", classes=classes)
        self.pane = pane

    def watch_shown(self, shown: Shown | None) -> None:
        caption = shown.caption(self.pane) if shown is not None else self.pane
        self.border_title = title(f"stale · {caption}" if shown is not None and shown.stale else caption)

    def watch_active_pane(self, active: str) -> None:
        self.set_class(active == self.pane, "-active")

    def watch_tabs(self, tabs: str) -> None:
        if tabs or self.border_subtitle:  # none until the compact layout first shows them
            self.border_subtitle = title(tabs)


class HeaderLine(SafeStatic):
    """The top line: the model, the layer strip, the token, the scope."""

    shown: var[Shown | None] = var(None, init=False)

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None:
            self.update(header_text(s.info, s.title, s.layer, s.at, s.scope_all, s.compact))


class SummaryLine(SafeStatic):
    """The compact layout's line of the next-token guesses, the logit lens and the KL."""

    shown: var[Shown | None] = var(None, init=False)

    def watch_shown(self, s: Shown | None) -> None:
        if s is not None and s.analysis is not None:
            self.update(summary_text(s.analysis, s.position, s.lens))
