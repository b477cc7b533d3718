"""Textual's footer, recomposed once per refresh however often the bindings change.

Textual's `Footer` schedules a full recompose (about 20 key widgets, restyled) for
every change of the screen's bindings, and a focus move or a screen push changes
them several times in a row: at start-up that was eight recomposes before the first
frame. This one coalesces them into one.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class LazyFooter(Footer):
    _recompose_pending = False

    def bindings_changed(self, screen: Screen[object]) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._recompose_pending:
            self._recompose_pending = True
            self.call_after_refresh(self._recompose_once)

    async def _recompose_once(self) -> None:
        self._recompose_pending = False
        await self.recompose()
