"""A one-line text field whose editing keys keep their place among the characters typed.

Textual's `Input` inserts a printable character in its own key handler, but its bound keys
(backspace, the arrows, home, end, delete) bubble up to the app, and only there is the binding
found and run. Keys that arrive in one burst (a paste, tmux `send-keys`, a fast typist on a loaded
machine) then act out of order: `12⌫3` gave `12`, the 3 inserted and then deleted by the backspace
that came before it (Textual issue #6605, open in 8.2). `Field` runs its own bindings where it
handles the characters, so each key acts in the order it came. It draws its value as `SafeInput` does.
"""

from __future__ import annotations

from textual import events

from lenstop.tui.safe import SafeInput


class Field(SafeInput):
    async def _on_key(self, event: events.Key) -> None:
        """A key bound here runs now; anything else goes on to `Input`'s handler (the next in the MRO)."""
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()  # Input's own handler, and the bubbling to the app, are skipped
                return
