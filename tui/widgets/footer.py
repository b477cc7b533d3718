"""The footer: the most used keys first, as many as the width allows, and a hint that `?` lists
the rest, which always shows.

Textual's `Footer` lists every shown binding in the order of the focus chain and cuts the row where
the terminal ends: at 120 columns the circuit view's `t` and the prompt's `/` fell off, and at 80 the
row stopped in the middle of a word. Here each screen names its keys in order of use, with the keys
bound now (a remapped binding shows its new key), and the bindings the screen has switched off
(`/` while typing in the prompt) are left out. One line of text, redrawn when the bindings change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen

from lenstop.tui.safe import SafeWidget


@dataclass(frozen=True)
class FooterKey:
    ids: tuple[str, ...]  # the bindings it stands for: one, or a pair such as previous/next token
    label: str
    keys: str = ""  # with no ids: a key handled by a widget itself (a field's enter), shown as it is


def footer_text(items: Sequence[tuple[str, str]], hint: tuple[str, str], width: int) -> Text:
    """`key label` pairs two spaces apart, as many as fit in `width` beside the hint, which always shows."""
    hint_width = len(hint[0]) + 1 + len(hint[1])
    out, used = Text(" "), 1
    for keys, label in items:
        if used + len(keys) + 1 + len(label) + 2 + hint_width > width:
            break
        out.append(keys, style="bold")
        out.append(f" {label}  ")
        used += len(keys) + 1 + len(label) + 2
    out.append(hint[0], style="bold")
    out.append(" " + hint[1])
    return out


class KeyFooter(SafeWidget):
    DEFAULT_CSS = """
    KeyFooter { height: 1; width: 1fr; background: $footer-background; color: $footer-foreground; }
    """

    def __init__(self, keys: Sequence[FooterKey], hint: tuple[str, str] = ("?", "more")) -> None:
        super().__init__()
        self.keys, self.hint = keys, hint

    def use(self, keys: Sequence[FooterKey], hint: tuple[str, str]) -> None:
        """Show other keys: the prompt's while typing there, say."""
        self.keys, self.hint = keys, hint
        self.refresh()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        self.refresh()

    def items(self) -> list[tuple[str, str]]:
        """What to show: each key of `keys` that is bound and enabled now, with the key it is bound to."""
        bound: dict[str, list[Binding]] = {}
        for active in self.screen.active_bindings.values():
            if active.enabled and active.binding.id:
                bound.setdefault(active.binding.id, []).append(active.binding)
        out = []
        for key in self.keys:
            if not key.ids:
                out.append((key.keys, key.label))
                continue
            if not all(i in bound for i in key.ids):
                continue
            first = bound[key.ids[0]][0]
            # A pair's bindings share a display (`←/→`, `[ ]`), which a keymap that moves either resets.
            if first.key_display and all(bound[i][0].key_display == first.key_display for i in key.ids):
                shown = first.key_display
            else:  # each by its own key: the display the pair shared names keys one of them no longer has
                shown = "/".join(self.app.get_key_display(replace(bound[i][0], key_display=None)) for i in key.ids)
            out.append((shown, key.label))
        return out

    def draw(self) -> Text:
        return footer_text(self.items(), self.hint, self.size.width)
