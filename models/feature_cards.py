"""Feature cards and labels, for any dictionary.

A dictionary directory may hold `feature_cards.json.gz` (the bundled demo's do):
per feature, a label, top-activating contexts, firing frequency, and the tokens
its decoder row promotes and suppresses. Beside it, `feature_labels.json` holds
the labels alone, because every analysis shows labels and reading them from the
cards (megabytes of contexts) would cost the first analysis about a second.
Labels can also come from Neuronpedia's exports (`lenstop.models.labels`); each label says where it came from.
A folder of several dictionaries (circuit-tracer's transcoders) names each one's files after it:
`layer_0.feature_cards.json.gz` and `layer_0.feature_labels.json` (`Cards.named`).
Cards cross into the UI as frozen values, like every other result.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lenstop.models.errors import JSON_LIMIT, BadFileError, json_shown, parse_json, read_json

CARDS_FILE = "feature_cards.json.gz"
LABELS_FILE = "feature_labels.json"  # {"<feature id>": "<label>"}, written with the cards
CARDS_LIMIT = 2 * 2**30  # decompressed bytes: the demo's 512 cards are 3.5 MB
CARDS_RATIO = 32  # at most this many decompressed bytes per byte of the file
LABELS_LIMIT = 256 * 2**20  # a Neuronpedia export of a million features' explanations
OWN_SOURCE = "cards"  # where a dictionary's own labels come from: its cards and the labels file beside them


@dataclass(frozen=True)
class Context:
    tokens: tuple[str, ...]
    acts: tuple[float, ...]
    focus: int  # index of the peak token in `tokens`
    act: float
    at: tuple[int, int] | None = None  # (window, position) in the corpus pass that found it


@dataclass(frozen=True)
class FeatureHit:
    """A feature found by a search (`lenstop.models.cards.search`): where it is, how well it matched and why."""

    layer: int
    feature: int
    dictionary: str
    score: float
    label: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return vars(self).copy()


@dataclass(frozen=True)
class Quantile:
    """Examples from one band of a feature's activations (a corpus pass samples them), highest band first."""

    low: float
    high: float
    contexts: tuple[Context, ...]


@dataclass(frozen=True)
class Histogram:
    """Counts of a feature's nonzero activations in equal bins over [0, hi]."""

    hi: float
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Neighbour:
    """A feature whose decoder direction is close to another's."""

    layer: int
    feature: int
    cosine: float
    label: str | None


@dataclass(frozen=True)
class FromWeights:
    """What the weights alone say of a feature (`lenstop.models.cards.weights`), besides the tokens it promotes
    and suppresses, which are the card's `promoted` and `suppressed` whenever this is set."""

    decoder_norm: float
    left_out: int  # vocabulary entries the tokenizer never produces, left out of promoted and suppressed
    neighbours: tuple[Neighbour, ...]  # by decoder cosine, highest first, over this and the neighbouring layers

    def to_json(self) -> dict[str, Any]:
        return {
            "decoder_norm": self.decoder_norm,
            "left_out": self.left_out,
            "neighbours": [vars(n) for n in self.neighbours],
        }


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
    weights: FromWeights | None = None  # set when promoted/suppressed come from the weights (every card lenstop shows)
    quantiles: tuple[Quantile, ...] = ()
    histogram: Histogram | None = None
    corpus: str | None = None  # what the contexts, frequency and histogram were read from
    label_source: str | None = None  # where the label came from: "cards", "neuronpedia gpt2-small/6-res-jb (...)"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "label_source": self.label_source,
            "frequency": self.frequency,
            "mean_act": self.mean_act,
            "max_act": self.max_act,
            "contexts": [_context_json(c) for c in self.contexts],
            "promoted": [list(p) for p in self.promoted],
            "suppressed": [list(s) for s in self.suppressed],
            "weights": self.weights.to_json() if self.weights is not None else None,
            "quantiles": [
                {"low": q.low, "high": q.high, "contexts": [_context_json(c) for c in q.contexts]}
                for q in self.quantiles
            ],
            "histogram": {"hi": self.histogram.hi, "counts": list(self.histogram.counts)} if self.histogram else None,
            "corpus": self.corpus,
        }


def _context_json(c: Context) -> dict[str, Any]:
    out = {"tokens": list(c.tokens), "acts": list(c.acts), "focus": c.focus, "act": c.act}
    return out if c.at is None else {**out, "at": list(c.at)}


def _context(c: dict[str, Any]) -> Context:
    at = c.get("at")
    where = (int(at[0]), int(at[1])) if isinstance(at, list) and len(at) == 2 else None
    return Context(tuple(c["tokens"]), tuple(c["acts"]), int(c["focus"]), float(c["act"]), where)


def _card(raw: dict[str, Any]) -> FeatureCard:
    return FeatureCard(
        id=int(raw["id"]),
        label=raw.get("label"),
        frequency=raw.get("frequency"),
        mean_act=raw.get("mean_act"),
        max_act=raw.get("max_act"),
        contexts=tuple(_context(c) for c in raw.get("contexts", ())),
        promoted=tuple((str(t), float(v)) for t, v in raw.get("promoted", ())),
        suppressed=tuple((str(t), float(v)) for t, v in raw.get("suppressed", ())),
        quantiles=tuple(
            Quantile(float(q["low"]), float(q["high"]), tuple(_context(c) for c in q["contexts"]))
            for q in raw.get("quantiles", ())
        ),
        histogram=Histogram(float(h["hi"]), tuple(int(c) for c in h["counts"]))
        if (h := raw.get("histogram"))
        else None,
        corpus=str(raw["corpus"]) if raw.get("corpus") else None,
        label_source=OWN_SOURCE if raw.get("label") else None,
    )


class Cards:
    """The cards of one dictionary, read on first use, plus labels from elsewhere.

    Readers on other threads (the app's workers) may ask while the file is read
    or labels are added, so both are replaced whole, never emptied and refilled.
    Each added label keeps its source beside it, in the same dict, so the two never disagree.
    """

    def __init__(
        self,
        path: Path | None = None,
        labels: dict[int, str] | None = None,
        source: str | None = None,
        labels_beside: Path | None = None,
    ) -> None:
        self.path = path if path is not None and path.is_file() else None
        self._added: dict[int, tuple[str, str | None]] = {f: (text, source) for f, text in (labels or {}).items()}
        self.labels_beside = labels_beside  # a cards file whose labels file these cards' own labels come from
        self._raw: dict[int, dict[str, Any]] | None = None
        self._own_labels: dict[int, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, directory: str | Path | None) -> Cards:
        return cls(Path(directory) / CARDS_FILE if directory else None)

    @classmethod
    def named(cls, directory: str | Path, name: str) -> Cards:
        """The cards of dictionary `name` among several in `directory`: `{name}.feature_cards.json.gz`, with
        its labels in `{name}.feature_labels.json`."""
        return cls(Path(directory) / f"{name}.{CARDS_FILE}")

    def rebased(self, path: Path) -> Cards:
        """These cards' labels (added, with their sources, and own) over the cards in `path`: a corpus pass's
        cards, which have none."""
        cards = Cards(path)
        cards._added = dict(self._added)
        cards._own_labels = dict(self._own())  # read now: the new cards hold none, and a later rebase keeps these
        return cards

    @property
    def labels(self) -> dict[int, str]:
        """The labels added from elsewhere, by feature."""
        return {feature: text for feature, (text, _source) in self._added.items()}

    def add_labels(self, labels: dict[int, str], source: str | None = None) -> None:
        """Labels from another source, said in `source` where the card shows it; they take precedence over
        the cards' own, and over labels added before."""
        self._added = {**self._added, **{feature: (text, source) for feature, text in labels.items()}}

    def _load(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            if self._raw is None:
                self._raw = read_cards(self.path) if self.path is not None else {}
            return self._raw

    def _own(self) -> dict[int, str]:
        """The cards' own labels: from the labels file when there is one, else from the cards."""
        if self._own_labels is None:
            beside = self.labels_beside or self.path
            index = labels_file(beside) if beside is not None else None
            if index is not None and index.exists():  # a folder or a FIFO there is said by read_own_labels
                own = read_own_labels(index)
            else:
                own = labels_of(self._load().values())
            self._own_labels = own
        return self._own_labels

    def label(self, feature: int) -> str | None:
        if (added := self._added.get(feature)) is not None:
            return added[0]
        return self._own().get(feature)

    def max_acts(self) -> dict[int, float]:
        """Each carded feature's largest activation on the text its cards were read from."""
        return {
            f: float(raw["max_act"]) for f, raw in self._load().items() if isinstance(raw.get("max_act"), int | float)
        }

    def all_labels(self) -> dict[int, str]:
        """Every feature's label, the added ones over the own ones."""
        return {**self._own(), **self.labels}

    def label_source(self, feature: int) -> str | None:
        """Where `label(feature)` comes from: what `add_labels` was told, or `OWN_SOURCE`; None with no label."""
        if (added := self._added.get(feature)) is not None:
            return added[1]
        return OWN_SOURCE if feature in self._own() else None

    def card(self, feature: int) -> FeatureCard | None:
        raw = self._load().get(feature)
        added = self._added.get(feature)
        if raw is None:
            return FeatureCard(feature, added[0], None, None, None, label_source=added[1]) if added else None
        card = _checked_card(raw, self.path)
        label, source = self.label(feature), self.label_source(feature)  # added, then the labels file, then the card's
        if (label, source) != (card.label, card.label_source):
            card = replace(card, label=label, label_source=source)
        return card

    def all(self) -> list[FeatureCard]:
        return [_checked_card(raw, self.path) for raw in self._load().values()]


def labels_file(cards_file: Path) -> Path:
    """The labels file beside a cards file: `feature_labels.json` beside `feature_cards.json.gz`, and
    `layer_0.feature_labels.json` beside `layer_0.feature_cards.json.gz`."""
    name = cards_file.name
    prefix = name[: -len(CARDS_FILE)] if name.endswith(CARDS_FILE) else ""
    return cards_file.with_name(prefix + LABELS_FILE)


def _checked_card(raw: dict[str, Any], path: Path | None) -> FeatureCard:
    """A card, or a BadFileError naming the file and the feature when it is not of the shape cards have."""
    try:
        return _card(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise BadFileError(
            f"{path}: the card of feature {raw.get('id')!r} is not of the shape cards have "
            f"({type(err).__name__}: {str(err)[:60]}); re-download or rebuild the cards"
        ) from None


def feature_number(value: object) -> int | None:
    """A feature id as label and card files write it (`12`, `12.0` or `"12"`), or None for anything else: a
    bool, `Infinity`, `3.7`, a negative number, or a string of other digits than decimal ones (`"²"`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    return None


def read_cards(path: Path) -> dict[int, dict[str, Any]]:
    """The raw cards of a `feature_cards.json.gz`, by feature id. Decompression is bounded by the file's own
    size (JSON compresses some 5x; a gzip bomb a thousandfold), so a bomb is refused after a few megabytes."""
    what = f"{path}"
    limit = min(CARDS_LIMIT, max(JSON_LIMIT, CARDS_RATIO * path.stat().st_size))
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise BadFileError(f"{what} is truncated or not gzip ({err}); re-download or rebuild the cards") from None
    if len(data) > limit:
        raise BadFileError(
            f"{what} decompresses to more than {limit / 2**20:g} MiB, {CARDS_RATIO}x its size: not cards but a "
            "gzip bomb, or cards lenstop cannot hold; re-download or rebuild them"
        )
    doc = parse_json(data, what)
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise BadFileError(f"{what} has no list of features; re-download or rebuild the cards")
    raw: dict[int, dict[str, Any]] = {}
    for card in features:
        if not isinstance(card, dict) or "id" not in card:
            raise BadFileError(f"{what}: a card is not an object with a feature id; re-download or rebuild the cards")
        if (feature := feature_number(card["id"])) is None:
            raise BadFileError(f"{what}: a card's id {json_shown(card['id'])} is not a feature number")
        raw[feature] = card
    if isinstance(corpus := doc.get("corpus"), str):  # a corpus pass names what it read, once for all its cards
        for card in raw.values():
            card.setdefault("corpus", corpus)
    return raw


def read_own_labels(path: Path) -> dict[int, str]:
    """A dictionary's `feature_labels.json`: {"<feature id>": "<label>"}, or a one-line error naming it."""
    doc = read_json(path, "", what=str(path), limit=LABELS_LIMIT)
    if not isinstance(doc, dict):
        raise BadFileError(f'{path} is not a JSON object of feature ids to labels ({{"12": "a label"}})')
    labels: dict[int, str] = {}
    for key, label in doc.items():
        if (feature := feature_number(key)) is None:
            raise BadFileError(f"{path}: the key {json_shown(key)} is not a feature number")
        if not isinstance(label, str):
            raise BadFileError(f"{path}: the label of feature {feature} is not a string")
        labels[feature] = label
    return labels


def labels_of(cards: Iterable[dict[str, Any]]) -> dict[int, str]:
    """The labels of raw cards, what `LABELS_FILE` holds."""
    return {int(card["id"]): str(card["label"]) for card in cards if card.get("label")}
