"""Feature cards and labels, for any dictionary.

A dictionary directory may hold `feature_cards.json.gz` (the bundled demo's do):
per feature, a label, top-activating contexts, firing frequency, and the tokens
its decoder row promotes and suppresses. Beside it, `feature_labels.json` holds
the labels alone, because every analysis shows labels and reading them from the
cards (megabytes of contexts) would cost the first analysis about a second.
Labels can also come from a Neuronpedia-style JSON export passed with `--labels`.
Cards cross into the UI as frozen values, like every other result.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenstop.models.errors import BadFileError, read_json

CARDS_FILE = "feature_cards.json.gz"
LABELS_FILE = "feature_labels.json"  # {"<feature id>": "<label>"}, written with the cards


@dataclass(frozen=True)
class Context:
    tokens: tuple[str, ...]
    acts: tuple[float, ...]
    focus: int  # index of the peak token in `tokens`
    act: float


@dataclass(frozen=True)
class FeatureCard:
    id: int
    label: str | None
    frequency: float | None  # share of held-out tokens where it fires
    mean_act: float | None
    max_act: float | None
    contexts: tuple[Context, ...] = ()
    promoted: tuple[tuple[str, float], ...] = ()
    suppressed: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "frequency": self.frequency,
            "mean_act": self.mean_act,
            "max_act": self.max_act,
            "contexts": [
                {"tokens": list(c.tokens), "acts": list(c.acts), "focus": c.focus, "act": c.act} for c in self.contexts
            ],
            "promoted": [list(p) for p in self.promoted],
            "suppressed": [list(s) for s in self.suppressed],
        }


def _card(raw: dict[str, Any]) -> FeatureCard:
    return FeatureCard(
        id=int(raw["id"]),
        label=raw.get("label"),
        frequency=raw.get("frequency"),
        mean_act=raw.get("mean_act"),
        max_act=raw.get("max_act"),
        contexts=tuple(
            Context(tuple(c["tokens"]), tuple(c["acts"]), int(c["focus"]), float(c["act"]))
            for c in raw.get("contexts", ())
        ),
        promoted=tuple((str(t), float(v)) for t, v in raw.get("promoted", ())),
        suppressed=tuple((str(t), float(v)) for t, v in raw.get("suppressed", ())),
    )


class Cards:
    """The cards of one dictionary, read on first use, plus labels from elsewhere.

    Readers on other threads (the app's workers) may ask while the file is read
    or labels are added, so both are replaced whole, never emptied and refilled.
    """

    def __init__(self, path: Path | None = None, labels: dict[int, str] | None = None) -> None:
        self.path = path if path is not None and path.is_file() else None
        self.labels: dict[int, str] = dict(labels or {})
        self._raw: dict[int, dict[str, Any]] | None = None
        self._own_labels: dict[int, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, directory: str | Path | None) -> Cards:
        return cls(Path(directory) / CARDS_FILE if directory else None)

    def add_labels(self, labels: dict[int, str]) -> None:
        """Labels from another source; they take precedence over the cards' own."""
        self.labels = {**self.labels, **labels}

    def _load(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            if self._raw is None:
                raw: dict[int, dict[str, Any]] = {}
                if self.path is not None:
                    with gzip.open(self.path, "rt", encoding="utf-8") as fh:
                        doc = json.load(fh)
                    raw = {int(f["id"]): f for f in doc["features"]}
                self._raw = raw
            return self._raw

    def _own(self) -> dict[int, str]:
        """The cards' own labels: from the labels file when there is one, else from the cards."""
        if self._own_labels is None:
            index = self.path.with_name(LABELS_FILE) if self.path is not None else None
            if index is not None and index.is_file():
                own = {int(k): str(v) for k, v in json.loads(index.read_text(encoding="utf-8")).items()}
            else:
                own = labels_of(self._load().values())
            self._own_labels = own
        return self._own_labels

    def label(self, feature: int) -> str | None:
        if feature in self.labels:
            return self.labels[feature]
        return self._own().get(feature)

    def card(self, feature: int) -> FeatureCard | None:
        raw = self._load().get(feature)
        if raw is None:
            label = self.labels.get(feature)
            return FeatureCard(feature, label, None, None, None) if label else None
        card = _card(raw)
        if feature in self.labels:
            card = FeatureCard(**{**card.__dict__, "label": self.labels[feature]})
        return card

    def all(self) -> list[FeatureCard]:
        return [_card(raw) for raw in self._load().values()]


def labels_of(cards: Iterable[dict[str, Any]]) -> dict[int, str]:
    """The labels of raw cards, what `LABELS_FILE` holds."""
    return {int(card["id"]): str(card["label"]) for card in cards if card.get("label")}


def read_labels(path: str | Path) -> tuple[dict[int, str], int | None]:
    """Labels from a Neuronpedia-style export (a JSON list of {"index", "description"}),
    and the layer the export names (`"layer": "6-res-jb"`), if all its items name one."""
    data = read_json(path, "--labels")
    if isinstance(data, dict) and "explanations" in data:
        data = data["explanations"]
    if not isinstance(data, list):
        raise BadFileError(f"--labels {path}: expected a list of objects with 'index' and 'description'")
    labels: dict[int, str] = {}
    for item in data:
        if isinstance(item, dict) and "index" in item and "description" in item:
            try:
                labels[int(item["index"])] = str(item["description"]).strip()
            except (TypeError, ValueError):
                raise BadFileError(f"--labels {path}: index {item['index']!r} is not a feature number") from None
    if not labels:
        raise BadFileError(f"--labels {path}: no objects with 'index' and 'description' in it")
    layers = {str(item.get("layer", "")).split("-")[0] for item in data if isinstance(item, dict)}
    only = layers.pop() if len(layers) == 1 else ""
    return labels, int(only) if only.isdigit() else None
