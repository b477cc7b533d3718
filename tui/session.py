"""What the user has set up in the inspector, as plain data: the prompt, the
selection, and the list of interventions (each can be switched off without
being forgotten), with undo. Saved to and restored from a small JSON file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lenstop.models.errors import UsageError, read_json
from lenstop.models.interventions import Intervention, from_dict, to_dict

VERSION = 1
# A first prompt with something to see: repeated names for induction, and code structure.
DEFAULT_PROMPT = (
    r"def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first - second"
)


@dataclass(frozen=True)
class Entry:
    intervention: Intervention
    enabled: bool = True


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
    entries: list[Entry] = field(default_factory=list)
    _undo: list[list[Entry]] = field(default_factory=list, repr=False)

    # ---------------------------------------------------------------- interventions
    @property
    def active(self) -> tuple[Intervention, ...]:
        return tuple(e.intervention for e in self.entries if e.enabled)

    def _remember(self) -> None:
        self._undo.append(list(self.entries))
        del self._undo[:-100]

    def add(self, intervention: Intervention) -> None:
        """Add, or replace the intervention of the same kind on the same target and scope."""
        self._remember()
        key = _target(intervention)
        self.entries = [e for e in self.entries if _target(e.intervention) != key] + [Entry(intervention)]

    def toggle_ablation(self, intervention: Intervention) -> bool:
        """Add it, or remove it if it is already there; True when it is now on."""
        key = _target(intervention)
        if any(_target(e.intervention) == key for e in self.entries):
            self._remember()
            self.entries = [e for e in self.entries if _target(e.intervention) != key]
            return False
        self.add(intervention)
        return True

    def find(self, kind: str, layer: int, target: int, position: int | None) -> Intervention | None:
        for e in self.entries:
            if _target(e.intervention) == (kind, layer, target, position):
                return e.intervention
        return None

    def toggle_enabled(self, index: int) -> None:
        self._remember()
        entry = self.entries[index]
        self.entries[index] = replace(entry, enabled=not entry.enabled)

    def replace_at(self, index: int, intervention: Intervention) -> None:
        self._remember()
        self.entries[index] = replace(self.entries[index], intervention=intervention)

    def remove(self, index: int) -> None:
        self._remember()
        del self.entries[index]

    def clear(self) -> None:
        if self.entries:
            self._remember()
            self.entries = []

    def undo(self) -> bool:
        if not self._undo:
            return False
        self.entries = self._undo.pop()
        return True

    # ---------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "model": self.model,
            "saes": self.saes,
            "labels": self.labels,
            "prompt": self.prompt,
            "selection": self.selection.__dict__,
            "interventions": [{**to_dict(e.intervention), "enabled": e.enabled} for e in self.entries],
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Session:
        if doc.get("version") != VERSION:
            raise UsageError(
                f"session file version {doc.get('version')!r} is not {VERSION}; it was written by another lenstop"
            )
        entries = []
        for raw in doc.get("interventions", []):
            raw = dict(raw)
            enabled = bool(raw.pop("enabled", True))
            entries.append(Entry(from_dict(raw), enabled))
        sel = doc.get("selection", {})
        return cls(
            model=str(doc.get("model", "demo")),
            saes=list(doc.get("saes", [])),
            labels=list(doc.get("labels", [])),
            prompt=str(doc.get("prompt", "")),
            selection=Selection(**{k: sel[k] for k in ("layer", "position", "feature", "head") if k in sel}),
            entries=entries,
        )

    @classmethod
    def load(cls, path: str | Path) -> Session:
        return cls.from_json(read_json(path, "--session"))


def _target(i: Intervention) -> tuple[str, int, int, int | None]:
    """What an intervention acts on: one feature or head, at one scope. Ablate and clamp
    both set the feature's value, so they share a target and replace each other."""
    kind = "set" if i.kind in ("ablate", "clamp") else i.kind
    return (kind, i.layer, getattr(i, "feature", getattr(i, "head", -1)), i.position)
