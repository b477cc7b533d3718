"""Feature labels from where researchers keep them: Neuronpedia's exports, matched to the loaded dictionaries.

Neuronpedia publishes its data as dataset exports (`s3://neuronpedia-datasets/v1/`), one folder per source,
`v1/{modelId}/{sourceId}/`, written by its `utils/neuronpedia-utils/neuronpedia_utils/export-data.py`. The
labels are in `explanations/batch-N.jsonl.gz`: gzip JSON lines, one per explanation (its `Explanation` table's
rows): `modelId`, `layer` (the source id, e.g. `6-res-jb`), `index` (the feature, a string), `description`
(the label), and `typeName`, `explanationModelName`, `embedding`, `umap_*`, `authorId`, `id`, unread here.
Beside them `features/` and `activations/` hold dashboards, which lenstop does not read. The older
`/api/explanation/export` gave a JSON list of the same objects, and is read too.

SAELens names each pretrained SAE's Neuronpedia source (`SAE.cfg.metadata.neuronpedia_id`, from its
pretrained_saes.yaml): `{modelId}/{sourceId}`, e.g. `gpt2-small/6-res-jb`. A dictionary with one gets the
labels of `{cache}/neuronpedia/{modelId}/{sourceId}/explanations/` when that is there, and those of a folder
laid out like the export passed with `--labels`. Every label says where it came from (`Labels.source`).

Exports are untrusted and may be huge: each file is bounded as the cards are (a gzip bomb stops after a
few megabytes), and anything malformed is one `BadFileError` line naming the file. The labels are shown
through `printable` and safe widgets like every other text from outside.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lenstop.models.errors import (
    JSON_LIMIT,
    BadFileError,
    NotFoundError,
    UsageError,
    check_size,
    json_shown,
    parse_json,
    read_json,
)
from lenstop.models.feature_cards import CARDS_RATIO, LABELS_LIMIT, feature_number
from lenstop.models.files import cache_dir

if TYPE_CHECKING:
    from lenstop.models.dictionaries import Dictionary

EXPLANATIONS = "explanations"
DATASET_VERSION = "v1"  # the bucket's top folder, which a copy of it may keep
LINE_LIMIT = 1 * 2**20  # bytes in one explanation: Neuronpedia's hold a 256-number embedding, some 4 KB
_BATCH = re.compile(r"^batch-(\d+)\.jsonl(\.gz)?$")
_NEURONPEDIA_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # `{modelId}/{sourceId}`, as every id SAELens lists is
_AGAIN = "re-download the export"


@dataclass(frozen=True, eq=False)
class Labels:
    """The labels of one export, by feature, and what it says of itself."""

    by_feature: dict[int, str]
    source: str  # where they came from, as a card shows it: "neuronpedia gpt2-small/6-res-jb (explanations, 2 files)"
    model: str | None = None  # the modelId its records name, if they all name one
    layer: str | None = None  # the source id its records name (`6-res-jb`), if they all name one

    @property
    def neuronpedia_id(self) -> str | None:
        """`{modelId}/{sourceId}`, as SAELens names the source, when the records name both."""
        return f"{self.model}/{self.layer}" if self.model and self.layer else None


def neuronpedia_id(dictionary: Dictionary) -> str | None:
    """The Neuronpedia source SAELens gives the dictionary (`gpt2-small/6-res-jb`), or None."""
    found = getattr(dictionary.sae.cfg.metadata, "neuronpedia_id", None)
    if not isinstance(found, str) or not _NEURONPEDIA_ID.match(found):
        return None
    return found if all(part.strip(".") for part in found.split("/")) else None  # a folder name, never `..`


def labels_cache() -> Path:
    """Where Neuronpedia's exports are looked for: `{cache}/neuronpedia/{modelId}/{sourceId}/explanations/`."""
    return cache_dir() / "neuronpedia"


# ---------------------------------------------------------------- reading


class _Collected:
    """Labels gathered record by record: the first explanation of each feature wins, and the model and source
    ids the records name are kept, to say what the export is of."""

    def __init__(self) -> None:
        self.by_feature: dict[int, str] = {}
        self.models: set[str] = set()
        self.layers: set[str] = set()

    def add(self, record: object, where: str) -> None:
        if not isinstance(record, dict):
            raise BadFileError(f"{where} is not an object with 'index' and 'description'; {_AGAIN}")
        if "index" not in record or "description" not in record:
            raise BadFileError(f"{where} has no 'index' and 'description'; {_AGAIN}")
        if (feature := feature_number(record["index"])) is None:
            raise BadFileError(f"{where}: index {json_shown(record['index'])} is not a feature number; {_AGAIN}")
        description = record["description"]
        if not isinstance(description, str):
            raise BadFileError(f"{where}: the description of feature {feature} is not a string; {_AGAIN}")
        for key, names in (("modelId", self.models), ("layer", self.layers)):
            if isinstance(record.get(key), str) and record[key]:
                names.add(record[key])
        if (text := description.strip()) and feature not in self.by_feature:
            self.by_feature[feature] = text

    def labels(self, shown: Path, where: str, np_id: str | None = None) -> Labels:
        """The labels, their source saying which Neuronpedia source they are of (the records' own ids, else
        `np_id`, the one they were looked up by) and `where` they were read."""
        if not self.by_feature:
            raise BadFileError(f"{shown}: no explanations in it (objects with 'index' and 'description')")
        model = next(iter(self.models)) if len(self.models) == 1 else None
        layer = next(iter(self.layers)) if len(self.layers) == 1 else None
        named = f"{model}/{layer}" if model and layer else np_id
        return Labels(self.by_feature, f"neuronpedia {named} ({where})" if named else where, model, layer)


def batch_files(folder: Path) -> list[Path]:
    """An `explanations/` folder's `batch-N.jsonl.gz` files (or `.jsonl`, before Neuronpedia compresses them),
    in the order of N."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _BATCH.match(p.name))]
    return [p for _n, p in sorted(found, key=lambda item: (item[0], item[1].name))]


def read_explanations(folder: Path, where: str, np_id: str | None = None) -> Labels:
    """The labels of an `explanations/` folder: every batch file in order; a feature with several explanations
    keeps the first (the export carries no score to rank them by), so the lowest batch, then the earliest line.
    `where` says where the folder was found, `np_id` which source it was looked up for."""
    files = batch_files(folder)
    if not files:
        raise NotFoundError(f"{folder}: no Neuronpedia batch files in it (batch-0.jsonl.gz, ...)")
    collected = _Collected()
    for path in files:
        _read_lines(path, collected)
    count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
    return collected.labels(folder, f"{EXPLANATIONS}, {count}, {where}", np_id)


def read_export(path: Path, where: str | None = None) -> Labels:
    """One export file: a `batch-N.jsonl.gz` (or `.jsonl`), or the older JSON list of explanations."""
    collected = _Collected()
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        _read_lines(path, collected)
    else:
        _read_list(path, collected)
    return collected.labels(path, where or f"--labels {path}")


def _read_list(path: Path, into: _Collected) -> None:
    """The older export: a JSON list of explanations (or an object holding one as `explanations`)."""
    data = read_json(path, "--labels", limit=LABELS_LIMIT)
    if isinstance(data, dict) and "explanations" in data:
        data = data["explanations"]
    if not isinstance(data, list):
        raise BadFileError(f"--labels {path}: expected a list of objects with 'index' and 'description'")
    for item in data:
        if isinstance(item, dict) and "index" in item and "description" in item:
            into.add(item, f"--labels {path}")


def _read_lines(path: Path, into: _Collected) -> None:
    """A JSON-lines file, gzipped or not, read line by line: decompression is bounded by the file's own size
    (explanations compress some 3x; a gzip bomb a thousandfold), and a line by `LINE_LIMIT`."""
    compressed = path.name.endswith(".gz")
    check_size(path, str(path), LABELS_LIMIT)
    limit = min(LABELS_LIMIT, max(JSON_LIMIT, CARDS_RATIO * path.stat().st_size)) if compressed else LABELS_LIMIT
    read = 0
    try:
        with _opened(path, compressed) as fh:
            for number, line in enumerate(_lines(fh), 1):
                read += len(line)
                if read > limit:
                    raise BadFileError(
                        f"{path} decompresses to more than {limit / 2**20:g} MiB, {CARDS_RATIO}x its size: not an "
                        f"export but a gzip bomb, or one lenstop cannot hold; {_AGAIN}"
                    )
                if len(line) > LINE_LIMIT:
                    raise BadFileError(f"{path}: line {number} is over {LINE_LIMIT // 2**20} MiB; {_AGAIN}")
                if line.strip():
                    where = f"{path}: line {number}"
                    try:
                        record = parse_json(line, where)
                    except BadFileError as err:
                        raise BadFileError(f"{err}; {_AGAIN}") from None
                    into.add(record, where)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise BadFileError(f"{path} is truncated or not gzip ({err}); {_AGAIN}") from None


def _opened(path: Path, compressed: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _lines(fh: io.BufferedIOBase) -> Iterator[bytes]:
    """The file's lines, none read past `LINE_LIMIT` + 1 bytes, so one endless line is not held whole."""
    while line := fh.readline(LINE_LIMIT + 1):
        yield line


# ---------------------------------------------------------------- matching


Matched = list[tuple["Dictionary", Labels]]


def from_cache(dictionaries: Sequence[Dictionary], say: Callable[[str], None] | None = None) -> Matched:
    """The labels in the cache (`labels_cache`) of each dictionary that has a Neuronpedia id."""
    root, found = labels_cache(), []
    for d in dictionaries:
        if (np_id := neuronpedia_id(d)) and (folder := _source_folder(root, np_id)) is not None:
            if say is not None:
                say(f"reading Neuronpedia's labels of {np_id}")
            labels = read_explanations(folder, "in the cache", np_id)
            _check_source(labels, np_id, folder)
            found.append((d, labels))
    return found


def from_option(spec: str, dictionaries: Sequence[Dictionary]) -> Matched:
    """The labels `--labels [LAYER=]PATH` names, with the dictionaries they are for.

    PATH is an export file (`batch-N.jsonl.gz` or the JSON list), a source's `explanations/` folder (or the
    folder holding it), or a folder laid out like Neuronpedia's exports (`[v1/]{modelId}/{sourceId}/...`, or
    one model's `{sourceId}/...`), whose sources are matched to the dictionaries by their Neuronpedia ids.
    LAYER says which dictionary they are for; without it the records' own source decides.
    """
    layer_text, sep, rest = spec.partition("=")
    layer = int(layer_text) if sep and layer_text.strip().isdecimal() else None
    path = Path(rest if layer is not None else spec).expanduser()
    where = f"--labels {path}"
    if not path.exists():
        raise NotFoundError(f"--labels {path}: no such file or folder")
    if path.is_dir():
        if (single := _explanations_in(path)) is not None:
            labels = read_explanations(single, where)
            return [(d, labels) for d in _for_one(labels, layer, dictionaries, spec, path)]
        return _from_root(path, layer, dictionaries, where)
    labels = read_export(path, where)
    return [(d, labels) for d in _for_one(labels, layer, dictionaries, spec, path)]


def _explanations_in(path: Path) -> Path | None:
    """The one source's explanations a folder is or holds: itself, or its `explanations/`."""
    if path.name == EXPLANATIONS or batch_files(path):
        return path
    inner = path / EXPLANATIONS
    return inner if inner.is_dir() else None


def _source_folder(root: Path, np_id: str) -> Path | None:
    """Where a copy of the exports keeps a source's explanations: `[v1/]{modelId}/{sourceId}/explanations`, or
    `{sourceId}/explanations` in the model's own folder."""
    model, _, source = np_id.partition("/")
    for folder in (root / np_id, root / DATASET_VERSION / np_id, *([root / source] if root.name == model else [])):
        if (folder / EXPLANATIONS).is_dir():
            return folder / EXPLANATIONS
    return None


def _from_root(root: Path, layer: int | None, dictionaries: Sequence[Dictionary], where: str) -> Matched:
    """The labels of every loaded dictionary (the one at `layer`, if given) whose source a copy of the exports
    holds; a UsageError naming what it holds and what is loaded when that is none of them."""
    wanted = [d for d in dictionaries if layer is None or d.layer == layer]
    found = []
    for d in wanted:
        if (np_id := neuronpedia_id(d)) and (folder := _source_folder(root, np_id)) is not None:
            labels = read_explanations(folder, where, np_id)
            _check_source(labels, np_id, folder)
            found.append((d, labels))
    if found:
        return found
    held = _sources_in(root)
    if not held:
        raise BadFileError(
            f"--labels {root}: a folder with no Neuronpedia explanations in it "
            "([v1/]MODEL/SOURCE/explanations/batch-N.jsonl.gz); name an export's folder or file"
        )
    raise UsageError(
        f"--labels {root}: it holds Neuronpedia's {_listed(held)}, none of them a loaded dictionary "
        f"({_loaded(wanted if layer is not None else dictionaries)}); load the matching SAE, "
        "or say which layer a source's explanations/ folder is for: --labels LAYER=FOLDER"
    )


def _for_one(
    labels: Labels, layer: int | None, dictionaries: Sequence[Dictionary], spec: str, path: Path
) -> list[Dictionary]:
    """The dictionary one source's labels are for: the one at `layer`; else the one whose Neuronpedia id is the
    source the records name; else, for a dictionary with no id, the one at the layer the source id starts with
    (`6-res-jb`: 6), or the only one loaded. A source that is none of them is a UsageError."""
    if layer is not None:
        return [_at(dictionaries, layer)]
    if labels.layer is not None:
        same = [d for d in dictionaries if (np_id := neuronpedia_id(d)) and _is_source(np_id, labels)]
        if same:
            return same
        number = feature_number(labels.layer.split("-")[0])
        unnamed = [d for d in dictionaries if d.layer == number and neuronpedia_id(d) is None]
        if unnamed:
            return [_at(unnamed, number)]
        raise UsageError(
            f"--labels {path}: its explanations are of Neuronpedia's {labels.neuronpedia_id or labels.layer}, "
            f"which is none of the loaded dictionaries ({_loaded(dictionaries)}); load that SAE, "
            f"or say which layer they are for: --labels LAYER={path}"
        )
    if len(dictionaries) != 1:
        raise UsageError(f"--labels {spec}: say which layer it is for, e.g. --labels 3={path}")
    return [dictionaries[0]]


def _at(dictionaries: Sequence[Dictionary], layer: int | None) -> Dictionary:
    found = [d for d in dictionaries if d.layer == layer]
    if len(found) == 1:
        return found[0]
    if not found:
        have = ", ".join(str(n) for n in sorted({d.layer for d in dictionaries})) or "none"
        raise UsageError(f"--labels: no dictionary at layer {layer}; dictionaries are loaded at layers: {have}")
    raise UsageError(
        f"--labels: layer {layer} has {len(found)} dictionaries ({', '.join(d.key for d in found)}); "
        "load one per layer to label them"
    )


def _is_source(np_id: str, labels: Labels) -> bool:
    """Whether the records are of the dictionary's source: its id, or its source id when they name no model."""
    return np_id == labels.neuronpedia_id if labels.model else np_id.partition("/")[2] == labels.layer


def _check_source(labels: Labels, np_id: str, folder: Path) -> None:
    """Explanations filed under one source whose records name another are in the wrong folder."""
    named = labels.neuronpedia_id if labels.model else labels.layer
    if named is not None and not _is_source(np_id, labels):
        raise BadFileError(f"{folder} holds explanations of {named}, not of {np_id}; put them in their own folder")


def _sources_in(root: Path) -> list[str]:
    """The sources a copy of the exports holds, as Neuronpedia ids (`gpt2-small/6-res-jb`)."""
    held = {
        f"{p.parent.parent.name}/{p.parent.name}"
        for base in (root, root / DATASET_VERSION)
        for p in base.glob(f"*/*/{EXPLANATIONS}")
        if p.is_dir()
    }
    held |= {f"{root.name}/{p.parent.name}" for p in root.glob(f"*/{EXPLANATIONS}") if p.is_dir()}
    return sorted(held)


def _listed(names: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _loaded(dictionaries: Sequence[Dictionary]) -> str:
    """The dictionaries, each with its Neuronpedia id, for an error line."""
    if not dictionaries:
        return "no dictionaries are loaded"
    parts = [f"L{d.layer} {d.key}: {neuronpedia_id(d) or 'no Neuronpedia id'}" for d in dictionaries]
    return "loaded: " + _listed(parts)
