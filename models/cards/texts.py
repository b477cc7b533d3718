"""Where a corpus pass reads its text: files, folders of them, JSON lines, or a Hugging Face dataset from the
local cache. Each source is a `Corpus`: a name for the cards to say, a digest that changes when the text does
(the cache key), and the texts in a fixed order (so a resumed pass reads what the first one read)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenstop.models.errors import BadFileError, UsageError

TEXT_FIELD = "text"
SNIFF = 8192  # bytes read to tell text from binary


@dataclass(frozen=True)
class Corpus:
    name: str  # what the cards say they were read from
    digest: str  # changes when the text does
    texts: Callable[[], Iterator[str]]  # a fresh iterator, the same texts in the same order each time


def from_paths(paths: Sequence[str | Path], text_field: str = TEXT_FIELD) -> Corpus:
    """Plain-text files, folders of them (every text file below, in path order; hidden ones and binary files
    left out), and `.jsonl` / `.jsonl.gz` files of objects whose `text_field` is the text."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            files += [p for p in found if _jsonl(p) or _is_text(p)]
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"--corpus {raw}: no such file or folder")
    if not files:
        raise UsageError(f"--corpus {' '.join(map(str, paths))}: no text files there")
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{text_field}\n".encode())
    shown = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    name = f"{shown} ({len(files)} file{'s' * (len(files) != 1)})"

    def texts() -> Iterator[str]:
        for f in files:
            yield from _jsonl_texts(f, text_field) if _jsonl(f) else [_read_text(f)]

    return Corpus(name, digest.hexdigest()[:16], texts)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def _is_text(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(SNIFF)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start > len(head) - 4  # a character cut at the sniff's end is still text
    return True


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BadFileError(
            f"--corpus {path} is not UTF-8 text (byte {err.start}); convert it or leave it out"
        ) from None


def _jsonl_texts(path: Path, field: str) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    found = 0
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(_lines(fh, path), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise BadFileError(f"--corpus {path}: line {number} is not JSON; one object a line") from None
            text = item.get(field) if isinstance(item, dict) else None
            if isinstance(text, str):
                found += 1
                yield text
    if not found:
        raise BadFileError(f'--corpus {path}: no line has a string "{field}"; name the field with --text-field')


def _lines(fh: Any, path: Path) -> Iterator[str]:
    try:
        yield from fh
    except (UnicodeDecodeError, OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise BadFileError(
            f"--corpus {path} is not UTF-8 JSON lines ({type(err).__name__}); fix or leave it out"
        ) from None


def from_dataset(spec: str, text_field: str | None = None) -> Corpus:
    """`NAME[:SPLIT]` (default split `train`) from the local Hugging Face datasets cache, never the network:
    what `datasets.load_dataset(NAME)` left there once. Its text is `text_field`, else its first string column."""
    name, _, split = spec.partition(":")
    split = split or "train"
    dataset = _cached_dataset(name, split)
    columns = [c for c, feature in dataset.features.items() if getattr(feature, "dtype", None) == "string"]
    field = text_field or (TEXT_FIELD if TEXT_FIELD in columns else (columns[0] if columns else None))
    if field is None or field not in dataset.features:
        raise UsageError(
            f"--dataset {spec}: no text column {field or ''} (its string columns: {', '.join(columns) or 'none'}); "
            "name one with --text-field"
        )

    def texts() -> Iterator[str]:
        for row in dataset:
            text = row[field]
            if isinstance(text, str):
                yield text

    digest = hashlib.sha256(f"{name}\0{split}\0{field}\0{dataset._fingerprint}".encode()).hexdigest()[:16]
    return Corpus(f"dataset {name}:{split} ({len(dataset):,} rows, column {field})", digest, texts)


def _cached_dataset(name: str, split: str):  # type: ignore[no-untyped-def]  # datasets has no stubs here
    """The dataset from the cache alone: offline mode for this call, whatever the environment says."""
    import datasets  # type: ignore[import-untyped]  # no stubs here
    from datasets.utils import logging as ds_logging  # type: ignore[import-untyped]

    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity_error()  # "Using the latest cached version..." is not news here
    try:
        return datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError) as err:
        raise UsageError(
            f"--dataset {name}: not in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}); load it "
            "once where the hub is reachable (datasets.load_dataset), or pass files with --corpus"
        ) from err
    except ValueError as err:  # an unknown split
        raise UsageError(f"--dataset {name}:{split}: {str(err).splitlines()[0][:160]}") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = saved
        ds_logging.set_verbosity(verbosity)


def from_demo() -> Corpus:
    """The bundled demo's held-out text: the standard library files its build kept out of training, in the
    order the build reads them (read from this Python's standard library, as the build does)."""
    from lenstop.models.demo import corpus as demo_corpus

    held_out = demo_corpus.split().holdout
    digest = hashlib.sha256()
    for text in held_out:
        digest.update(hashlib.sha256(text.encode()).digest())
    return Corpus(
        f"the demo's held-out text ({len(held_out)} standard library files)",
        digest.hexdigest()[:16],
        lambda: iter(held_out),
    )
