"""What the user has set up in the inspector, as plain data.

`InterventionList` is the list of interventions (each can be switched off
without being forgotten) as a frozen value with its own undo history: every
change returns a new list, which the inspector assigns to a reactive attribute,
so one watcher redraws and re-analyses. `Session` is what `w` saves and
`--session` restores: the model, the prompt, the selection and the interventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lenstop.models.errors import BadFileError, UsageError, json_shown, read_json
from lenstop.models.files import write_json
from lenstop.models.interventions import Adjustable, Intervention, Slot, from_dict, to_dict

VERSION = 1
UNDO_DEPTH = 100
# A first prompt with something to see: repeated names for induction, and code structure.
DEFAULT_PROMPT = (
    r"def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first - second"
)


@dataclass(frozen=True)
class Entry:
    intervention: Intervention
    enabled: bool = True


@dataclass(frozen=True)
class InterventionList:
    entries: tuple[Entry, ...] = ()
    history: tuple[tuple[Entry, ...], ...] = ()  # earlier `entries`, the latest last

    @property
    def active(self) -> tuple[Intervention, ...]:
        return tuple(e.intervention for e in self.entries if e.enabled)

    def _then(self, entries: tuple[Entry, ...]) -> InterventionList:
        if entries == self.entries:
            return self
        return InterventionList(entries, (*self.history, self.entries)[-UNDO_DEPTH:])

    def find(self, slot: Slot) -> Intervention | None:
        return next((e.intervention for e in self.entries if e.intervention.slot == slot), None)

    def with_added(self, intervention: Intervention) -> InterventionList:
        """Add it, replacing whatever acts on the same slot (a clamp replaces an ablation of that feature)."""
        kept = tuple(e for e in self.entries if e.intervention.slot != intervention.slot)
        return self._then((*kept, Entry(intervention)))

    def with_toggled(self, intervention: Intervention) -> InterventionList:
        """Add it, or remove what acts on its slot if something does."""
        if self.find(intervention.slot) is not None:
            return self._then(tuple(e for e in self.entries if e.intervention.slot != intervention.slot))
        return self.with_added(intervention)

    def with_switched(self, index: int) -> InterventionList:
        """Switch entry `index` off, or back on."""
        entry = self.entries[index]
        return self._then(self._replace(index, replace(entry, enabled=not entry.enabled)))

    def with_switched_off(self, interventions: tuple[Intervention, ...]) -> InterventionList:
        """The entries holding `interventions` switched off, as one change (one undo switches them back on)."""
        return self._then(
            tuple(replace(e, enabled=False) if e.intervention in interventions else e for e in self.entries)
        )

    def with_amount(self, index: int, amount: float) -> InterventionList:
        """Entry `index`, a steer or a clamp, with a new strength or value."""
        entry = self.entries[index]
        if not isinstance(entry.intervention, Adjustable):
            return self
        return self._then(self._replace(index, replace(entry, intervention=entry.intervention.with_amount(amount))))

    def without(self, index: int) -> InterventionList:
        return self._then(self.entries[:index] + self.entries[index + 1 :])

    def cleared(self) -> InterventionList:
        return self._then(())

    def undone(self) -> InterventionList | None:
        """The list before the last change, or None when there is nothing to undo."""
        if not self.history:
            return None
        return InterventionList(self.history[-1], self.history[:-1])

    def _replace(self, index: int, entry: Entry) -> tuple[Entry, ...]:
        return self.entries[:index] + (entry,) + self.entries[index + 1 :]


@dataclass
class Selection:
    layer: int = 0
    position: int = -1  # -1: the last token
    feature: int | None = None
    head: int = 0


@dataclass
class Session:
    model: str = "demo"
    saes: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    prompt: str = DEFAULT_PROMPT
    selection: Selection = field(default_factory=Selection)
    entries: tuple[Entry, ...] = ()
    scope_all: bool = True  # `@`: new interventions apply at every position, or at the selected token only

    def to_json(self) -> dict[str, object]:
        return {
            "version": VERSION,
            "model": self.model,
            "saes": self.saes,
            "labels": self.labels,
            "prompt": self.prompt,
            "selection": self.selection.__dict__,
            "interventions": [{**to_dict(e.intervention), "enabled": e.enabled} for e in self.entries],
            "scope": "all" if self.scope_all else "token",
        }

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_json(), indent=2)

    @classmethod
    def from_json(cls, doc: dict[str, object], name: str = "session file") -> Session:
        """The session a document describes, or a BadFileError naming `name` and the first field of the wrong
        type: a session comes from a file anyone can write, and the app must not trip over it later."""
        version = doc.get("version")
        if isinstance(version, int) and version > VERSION:
            raise BadFileError(
                f"{name}: version {version} was written by a newer lenstop (this one reads {VERSION}); upgrade"
            )
        if version != VERSION:
            raise BadFileError(f"{name}: version {version!r} is not {VERSION}: not a session lenstop saved")
        entries = []
        for raw in _list(doc.get("interventions")):
            if not isinstance(raw, dict):
                raise BadFileError(f"{name}: an intervention is {json_shown(raw)}, not an object")
            item = dict(raw)
            enabled = item.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise BadFileError(f"{name}: an intervention's enabled is {json_shown(enabled)}, not true or false")
            entries.append(Entry(_intervention(item, name), enabled))
        sel = doc.get("selection")
        sel = sel if isinstance(sel, dict) else {}
        return cls(
            model=_text(doc.get("model", "demo"), "model", name),
            saes=[_text(s, "saes", name) for s in _list(doc.get("saes"))],
            labels=[_text(s, "labels", name) for s in _list(doc.get("labels"))],
            prompt=_text(doc.get("prompt", ""), "prompt", name),
            selection=_selection(sel, name),
            entries=tuple(entries),
            scope_all=doc.get("scope") != "token",  # files saved before the scope was kept: all positions
        )

    @classmethod
    def load(cls, path: str | Path) -> Session:
        doc = read_json(path, "--session")
        if not isinstance(doc, dict):
            raise BadFileError(f"--session {path}: expected a JSON object saved by lenstop")
        return cls.from_json(doc, f"--session {path}")


SELECTION_FIELDS = ("layer", "position", "feature", "head")
# Each intervention kind's fields and whether they are whole numbers (else any number); position may be null.
INTERVENTION_FIELDS = {
    "layer": True,
    "feature": True,
    "head": True,
    "position": True,
    "strength": False,
    "value": False,
}


def _selection(fields: dict[str, object], name: str) -> Selection:
    """The saved selection: each of its fields a whole number (the feature may be null)."""
    for key in SELECTION_FIELDS:
        if key in fields:
            _number(fields[key], f"selection.{key}", name, whole=True, none=key == "feature")
    return Selection(**{k: fields[k] for k in SELECTION_FIELDS if k in fields})  # type: ignore[arg-type]


def _intervention(item: dict[str, object], name: str) -> Intervention:
    for key, value in item.items():
        if key in INTERVENTION_FIELDS:
            _number(value, f"an intervention's {key}", name, whole=INTERVENTION_FIELDS[key], none=key == "position")
    try:
        return from_dict(item)
    except UsageError as err:
        raise BadFileError(f"{name}: {str(err)[:200]}") from None


def _number(value: object, what: str, name: str, *, whole: bool, none: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    if (value is None and none) or (isinstance(value, kinds) and not isinstance(value, bool)):
        return
    raise BadFileError(f"{name}: {what} is {json_shown(value)}, not a {'whole ' if whole else ''}number")


def _text(value: object, what: str, name: str) -> str:
    if not isinstance(value, str):
        raise BadFileError(f"{name}: {what} is {json_shown(value)}, not a string")
    return value


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []
