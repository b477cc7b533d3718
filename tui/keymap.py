"""Keys remapped by binding id from ~/.config/lenstop/keys.json, each entry checked before any is applied.

Textual applies a keymap as it is: an id it does not know is ignored, a value that is no key is bound
as it is, and a key that another binding holds takes that binding away (`{"ablate": "q"}` took quit).
Here each entry must name a binding id lenstop has and keys Textual can report, and its keys must be
free on every screen where the binding is live: not held by a binding live at the same time, whether
lenstop's or Textual's own (tab, the cursor keys of a table, ctrl+q). The entries that pass are
applied; the others are refused, and `Keymap.note` says which and why, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from textual.binding import Binding
from textual.dom import DOMNode
from textual.keys import Keys, _character_to_key, format_key, key_to_character

from lenstop.models.errors import LenstopError, json_kind, json_shown, read_json

KEYMAP_FILE = Path("~/.config/lenstop/keys.json").expanduser()
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
NAMED_KEYS = frozenset(k.value.rpartition("+")[2] for k in Keys) | {"space", "enter", "tab"}
FIXED = {"interrupt": "ctrl+c always quits"}  # bindings the keymap may not move
PALETTE_KEY = "ctrl+p"  # Textual binds the command palette at run time, outside any BINDINGS


@dataclass(frozen=True)
class Scope:
    """Bindings live together: `always` while the screen is shown, each of `focused` while its widget has
    the focus (as well as `always`, which its own bindings shadow)."""

    always: tuple[type[DOMNode], ...]
    focused: tuple[type[DOMNode], ...] = ()


@dataclass(frozen=True)
class Keymap:
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> its keys, as Textual's keymap takes them
    refused: tuple[str, ...] = ()  # why each entry that was not applied was refused
    unreadable: str | None = None  # why the file as a whole could not be used

    def keys_of(self, binding: Binding, display: Callable[[Binding], str]) -> str:
        """A binding's keys as bound now, each as `display` (the app's get_key_display) writes it: `h, ←`."""
        keys = self.keys.get(binding.id or "", binding.key)
        return ", ".join(display(Binding(key.strip(), "")) for key in keys.split(","))

    def note(self) -> str | None:
        """One line for the status bar, or None when every entry was applied."""
        if self.unreadable is not None:
            return f"{KEYMAP_FILE.name} not applied: {self.unreadable}"
        if not self.refused:
            return None
        applied = f"; applied {', '.join(f'{k} → {v}' for k, v in self.keys.items())}" if self.keys else ""
        return f"{KEYMAP_FILE.name}: refused {'; '.join(self.refused)}{applied}"


def normal_keys(value: str) -> list[str]:
    """`"?, ctrl+x"` as Textual names keys: `["question_mark", "ctrl+x"]`."""
    keys = [key.strip() for key in value.split(",")]
    return [_character_to_key(key) if len(key) == 1 else key for key in keys]


def is_key(key: str) -> bool:
    """Whether Textual can report `key`: modifiers, then a character or a key's name."""
    *modifiers, base = key.split("+")
    if not base or any(m not in MODIFIERS for m in modifiers):
        return False
    if len(base) == 1:
        return base.isprintable() and not base.isspace()
    # A character's long name only as Textual reports it (question_mark), not another spelling of it that
    # would never match (latin_small_letter_a for a, QUESTION_MARK, digit_one).
    character = key_to_character(base)
    return base in NAMED_KEYS or (character is not None and _character_to_key(character) == base)


def bindings_of(node: type[DOMNode]) -> list[Binding]:
    """Every binding of a class, its base classes' included (Textual's own, which have no id)."""
    return (
        [b for found in node._merged_bindings.key_to_bindings.values() for b in found] if node._merged_bindings else []
    )


def check_keymap(mapping: Mapping[str, object], scopes: Iterable[Scope]) -> Keymap:
    """The entries of `mapping` that can be applied, and why each of the others cannot.

    An entry moves a binding to new keys; it is refused when another binding live with it holds one of
    them, after the entries applied before it (so swapping two bindings' keys works in either order)."""
    scopes = list(scopes)
    ids = {b.id for s in scopes for node in (*s.always, *s.focused) for b in bindings_of(node) if b.id}
    refused: dict[str, str] = {}
    wanted: dict[str, list[str]] = {}
    shown_as = {binding_id: json_shown(value) for binding_id, value in mapping.items()}
    for binding_id, value in mapping.items():
        shown = json_shown(binding_id)
        if binding_id not in ids:
            refused[binding_id] = f"{shown} (no binding has that id; ? lists them)"
        elif binding_id in FIXED:
            refused[binding_id] = f"{shown} ({FIXED[binding_id]})"
        elif not isinstance(value, str) or not value.strip():
            refused[binding_id] = f"{shown} → {shown_as[binding_id]} (not a key)"
        elif bad := [k for k in normal_keys(value) if not is_key(k)]:
            refused[binding_id] = f"{shown} → {shown_as[binding_id]} ({json_shown(bad[0])} is not a key)"
        else:
            wanted[binding_id] = normal_keys(value)
    applied: dict[str, list[str]] = {}
    progress = True
    while progress:  # until no entry waiting for another to free its key can be applied
        progress = False
        for binding_id, keys in wanted.items():
            if binding_id not in applied and _holder(binding_id, keys, applied, scopes) is None:
                applied[binding_id] = keys
                progress = True
    for binding_id, keys in wanted.items():
        if binding_id not in applied:
            holder = _holder(binding_id, keys, applied, scopes)
            refused[binding_id] = f"{json_shown(binding_id)} → {shown_as[binding_id]} ({holder})"
    order = list(mapping)
    return Keymap(
        {k: ",".join(applied[k]) for k in order if k in applied},
        tuple(refused[k] for k in order if k in refused),
    )


def _holder(binding_id: str, keys: list[str], applied: Mapping[str, list[str]], scopes: list[Scope]) -> str | None:
    """What holds one of `keys` where `binding_id` is live, given the entries `applied`; None if nothing does."""
    for scope in scopes:
        always = [b for node in scope.always for b in bindings_of(node)]
        groups = [always + bindings_of(node) for node in scope.focused] or [always]
        for live in groups:
            if all(b.id != binding_id for b in live):
                continue
            taken: dict[str, str] = {PALETTE_KEY: "the command palette's key"}
            for b in live:
                if b.id == binding_id:
                    continue
                now = applied[b.id] if b.id is not None and b.id in applied else normal_keys(b.key)
                for key in now:
                    taken.setdefault(key, f"{b.id}'s key" if b.id else f"Textual's key for {b.action}")
            for key in keys:
                if key in taken:
                    return f"{format_key(key)} is {taken[key]}"
    return None


def load_keymap(scopes: Iterable[Scope], path: Path = KEYMAP_FILE) -> Keymap:
    """The user's keymap, checked; a file that cannot be read is said, and nothing of it is applied."""
    if not path.exists():
        return Keymap()
    try:
        mapping = read_json(path, "keymap")
    except LenstopError as err:
        return Keymap(unreadable=str(err))
    if not isinstance(mapping, dict):
        return Keymap(unreadable=f"it holds a JSON {json_kind(mapping)}, not an object of binding id: key")
    return check_keymap(mapping, scopes)
