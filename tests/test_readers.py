"""Every reader of a file from outside bounds what it reads: nested, huge, wrong-typed, truncated and
non-UTF-8 input each give one line naming the file (exit 7), never a RecursionError, a MemoryError or a
traceback. The readers are lenstop's own JSON reader (`read_json`, which the keys file uses too), a model's
config.json, tokenizer files and shard index, a dictionary's cfg.json, feature_labels.json and cards, --labels
exports and session files; a bad head-roles cache is computed again instead."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.errors import JSON_LIMIT, BadFileError, ExitCode, read_json
from lenstop.models.feature_cards import CARDS_FILE, LABELS_FILE, LABELS_LIMIT
from lenstop.tui.session import Session

from helpers import one_line

PROMPT = "def add(first, second):"
NESTED = b"[" * 100_000 + b"]" * 100_000
NOT_UTF8 = b'{"a": "\xff\xfe"}'
A_STRING = b'"not what this file holds"'


@dataclass(frozen=True)
class Reader:
    """One file lenstop reads: where it goes, what a good one holds, the command that reads it, its limit."""

    name: str
    place: Callable[[Path, Path, Path], Path]  # (tmp_path, tiny_model, resid_saes) -> the file's path
    command: Callable[[Path, Path, Path], list[str]]  # (the file, tiny_model, resid_saes) -> argv
    words: str  # how the one line names the file
    limit: int = JSON_LIMIT
    gzipped: bool = False


def _model_file(name: str) -> Callable[[Path, Path, Path], Path]:
    def place(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> Path:
        return Path(shutil.copytree(tiny_model, tmp_path / "model")) / name

    return place


def _info_model(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["info", str(path.parent), "--device", "cpu"]


def _sae_file(name: str) -> Callable[[Path, Path, Path], Path]:
    def place(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> Path:
        sae = Path(shutil.copytree(resid_saes / "L1", tmp_path / "L1"))
        if name != CARDS_FILE:  # the labels file is read beside the cards
            _write_cards(sae / CARDS_FILE, {"features": [{"id": 3, "label": "three"}]})
        return sae / name

    return place


def _trace_sae(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["trace", str(tiny_model), "--sae", str(path.parent), "-p", PROMPT, "--json", "--device", "cpu"]


def _card_sae(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["card", "1:3", str(tiny_model), "--sae", str(path.parent), "--json", "--device", "cpu"]


def _info_sae(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["info", str(tiny_model), "--sae", str(path.parent), "--device", "cpu"]


def _plain(name: str) -> Callable[[Path, Path, Path], Path]:
    def place(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> Path:
        return tmp_path / name

    return place


def _labels(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--labels", f"1={path}", "--json"]


def _session(path: Path, tiny_model: Path, resid_saes: Path) -> list[str]:
    return ["inspect", "demo", "--session", str(path), "--device", "cpu"]


def _write_cards(path: Path, doc: object) -> None:
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


READERS = [
    Reader("config.json", _model_file("config.json"), _info_model, "its config.json"),
    Reader("tokenizer.json", _model_file("tokenizer.json"), _info_model, "its tokenizer.json"),
    Reader("tokenizer_config.json", _model_file("tokenizer_config.json"), _info_model, "its tokenizer_config.json"),
    Reader("cfg.json", _sae_file("cfg.json"), _info_sae, "its cfg.json"),
    Reader(LABELS_FILE, _sae_file(LABELS_FILE), _trace_sae, LABELS_FILE, limit=LABELS_LIMIT),
    Reader(CARDS_FILE, _sae_file(CARDS_FILE), _card_sae, CARDS_FILE, gzipped=True),
    Reader("--labels", _plain("labels.json"), _labels, "--labels", limit=LABELS_LIMIT),
    Reader("--session", _plain("session.json"), _session, "--session"),
]
IDS = [r.name for r in READERS]


def _reader(name: str) -> Reader:
    return next(r for r in READERS if r.name == name)


def _good(reader: Reader, path: Path) -> bytes:
    """What a good file of this kind holds, for truncating."""
    if path.is_file():
        return gzip.decompress(path.read_bytes()) if reader.gzipped else path.read_bytes()
    if reader.name == "--labels":
        return json.dumps([{"index": str(i), "description": f"feature {i}"} for i in range(40)]).encode()
    if reader.name == "--session":
        return json.dumps(Session(prompt="a session worth keeping").to_json()).encode()
    return json.dumps({str(i): f"feature {i}" for i in range(64)}).encode()  # feature_labels.json


def _run(
    reader: Reader,
    tmp_path: Path,
    tiny_model: Path,
    resid_saes: Path,
    content: bytes | None,
    size: int = 0,
    compressed: bool = False,
):
    path = reader.place(tmp_path, tiny_model, resid_saes)
    if content is None:  # truncated: half of a good one
        good = _good(reader, path)
        content = good[: len(good) // 2]
    if reader.gzipped and not compressed:
        content = gzip.compress(content)
    path.write_bytes(content)
    if size:
        with path.open("r+b") as fh:
            fh.truncate(size)  # sparse: a file this large costs no disk, and no reader gets that far
    return CliRunner().invoke(app, reader.command(path, tiny_model, resid_saes))


@pytest.mark.parametrize("reader", READERS, ids=IDS)
@pytest.mark.parametrize(
    ("content", "why"),
    [
        (NESTED, "nested too deeply"),
        (A_STRING, ""),
        (None, ""),
        (NOT_UTF8, ""),
    ],
    ids=["nested", "wrong-type", "truncated", "not-utf8"],
)
def test_each_reader_refuses_bad_input_in_one_line(
    reader: Reader, content: bytes | None, why: str, tmp_path: Path, tiny_model: Path, resid_saes: Path
) -> None:
    result = _run(reader, tmp_path, tiny_model, resid_saes, content)
    one_line(result, ExitCode.BAD_FILE, reader.words, why)


@pytest.mark.parametrize("reader", READERS, ids=IDS)
def test_each_reader_refuses_a_huge_file_before_reading_it(
    reader: Reader, tmp_path: Path, tiny_model: Path, resid_saes: Path
) -> None:
    if reader.gzipped:  # a gzip bomb: a few hundred kilobytes that decompress to 300 MB of spaces
        bomb = gzip.compress(b" " * (300 * 2**20), compresslevel=1)
        result = _run(reader, tmp_path, tiny_model, resid_saes, bomb, compressed=True)
        one_line(result, ExitCode.BAD_FILE, reader.words, "decompresses to more than 64 MiB")
        return
    result = _run(reader, tmp_path, tiny_model, resid_saes, b"{}", size=reader.limit + 1)
    one_line(result, ExitCode.BAD_FILE, reader.words, f"is over {reader.limit // 2**20} MiB")


SHAPES = [
    (_reader(LABELS_FILE), json.dumps(["one", "two"]).encode(), "not a JSON object of feature ids to labels"),
    (_reader(LABELS_FILE), json.dumps({"seven": "a label"}).encode(), 'the key "seven" is not a feature number'),
    (_reader(LABELS_FILE), json.dumps({"²": "a label"}).encode(), 'the key "²" is not a feature number'),
    (_reader(LABELS_FILE), json.dumps({"7": ["a", "list"]}).encode(), "the label of feature 7 is not a string"),
    (_reader(CARDS_FILE), json.dumps({"features": [{"id": "x"}]}).encode(), 'a card\'s id "x" is not a feature number'),
    (_reader(CARDS_FILE), b'{"features": [{"id": Infinity}]}', "a card's id Infinity is not a feature number"),
    (_reader(CARDS_FILE), json.dumps({"features": [{"id": 3, "contexts": [{"tokens": 1}]}]}).encode(), "feature 3"),
    (_reader(CARDS_FILE), json.dumps({"cards": []}).encode(), "has no list of features"),
    (_reader("--labels"), json.dumps([{"index": "one", "description": "x"}]).encode(), '"one" is not a feature number'),
    (_reader("--labels"), b'[{"index": Infinity, "description": "x"}]', "index Infinity is not a feature number"),
    (_reader("--labels"), b'[{"index": true, "description": "x"}]', "index true is not a feature number"),
    (_reader("--labels"), b'[{"index": 2.5, "description": "x"}]', "index 2.5 is not a feature number"),
    (_reader("--session"), json.dumps({**Session().to_json(), "prompt": 3}).encode(), "prompt is 3, not a string"),
    (
        _reader("--session"),
        json.dumps({**Session().to_json(), "selection": {"layer": "x"}}).encode(),
        "selection.layer",
    ),
    (
        _reader("--session"),
        json.dumps({**Session().to_json(), "interventions": [{"kind": "ablate", "layer": 1.5, "feature": 2}]}).encode(),
        "an intervention's layer is 1.5, not a whole number",
    ),
    (
        _reader("--session"),
        json.dumps({**Session().to_json(), "interventions": [{"kind": "melt", "layer": 1}]}).encode(),
        "unknown intervention kind 'melt'",
    ),
]


@pytest.mark.parametrize(
    ("reader", "content", "why"), SHAPES, ids=[f"{r.name}-{i}" for i, (r, _, _) in enumerate(SHAPES)]
)
def test_files_of_the_wrong_shape_are_one_line(
    reader: Reader, content: bytes, why: str, tmp_path: Path, tiny_model: Path, resid_saes: Path
) -> None:
    result = _run(reader, tmp_path, tiny_model, resid_saes, content)
    one_line(result, ExitCode.BAD_FILE, reader.words, why)


def test_a_truncated_gzip_of_cards_is_one_line(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> None:
    path = _sae_file(CARDS_FILE)(tmp_path, tiny_model, resid_saes)
    whole = gzip.compress(json.dumps({"features": [{"id": i, "label": "x" * 50} for i in range(64)]}).encode())
    path.write_bytes(whole[: len(whole) // 2])
    result = CliRunner().invoke(app, _card_sae(path, tiny_model, resid_saes))
    one_line(result, ExitCode.BAD_FILE, CARDS_FILE, "is truncated or not gzip")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (NESTED, "nested too deeply"),
        (b'{"a":' * 60_000, "nested too deeply"),  # unterminated too: the nesting is met first
        (NOT_UTF8, "not UTF-8 text (byte 0xff at offset 7)"),
        (b'{"ablate": "A",', "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not JSON lenstop can read"),
    ],
    ids=["nested-lists", "nested-objects", "not-utf8", "truncated", "a-5000-digit-number"],
)
def test_read_json_is_one_bad_file_line_for_any_bad_json(tmp_path: Path, content: bytes, why: str) -> None:
    """What the keys file (~/.config/lenstop/keys.json) and every other reader get from `read_json`."""
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(BadFileError) as failed:
        read_json(path, "keys file")
    message = str(failed.value)
    assert why in message and str(path) in message and "\n" not in message and len(message) < 300


def test_read_json_refuses_a_huge_file_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with path.open("wb") as fh:
        fh.truncate(JSON_LIMIT + 1)
    with pytest.raises(BadFileError, match="is over 64 MiB"):
        read_json(path, "keys file")


# ---------------------------------------------------------------- the head-roles cache
@pytest.mark.parametrize(
    "content",
    [
        NESTED,
        b"[1, 2, 3]",
        b'{"version": 1, "model": "x", "sequences": 8, "span": 30, "layers": "all of them"}',
        b'{"version": 1, "model": "x", "sequences": 8, "span": 30, "layers": [[[0.1, 0.2]]]}',
        b'{"version": 1, "model": "x", "sequences": 8, "span": 30, "layers": [[[0.1, 0.2, 0.3]]]}',
        b'{"version": 1, "model": "x", "sequences": 8, "span": 30, "layers": [[[1' + b"0" * 400 + b", 0.2, 0.3]]]}",
        NOT_UTF8,
        b'{"version": 1, "model": "x",',
    ],
    ids=[
        "nested",
        "a-list",
        "layers-a-string",
        "two-scores",
        "too-few-heads",
        "beyond-a-float",
        "not-utf8",
        "truncated",
    ],
)
def test_a_bad_head_roles_cache_is_computed_again(content: bytes, tiny_model: Path, engine) -> None:
    from lenstop.models.circuits import roles

    fresh = roles.compute(engine)
    path = roles.cache_dir() / "head-roles" / f"{roles.fingerprint(engine)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["heads", str(tiny_model), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(fresh.to_json()))
    assert roles.read(path) == fresh  # and the bad file was replaced by a good one


# ---------------------------------------------------------------- what is not a regular file
def test_a_model_file_that_is_not_a_regular_file_is_refused_before_anything_reads_it(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A tokenizer.json linked to /dev/zero has no size to bound, and transformers would read it for ever."""
    import os

    from lenstop.models.checkpoint import check_small_files

    for make in (lambda p: p.symlink_to("/dev/zero"), lambda p: os.mkfifo(p), lambda p: p.mkdir()):
        model = Path(shutil.copytree(tiny_model, tmp_path / f"model-{len(list(tmp_path.iterdir()))}"))
        (model / "tokenizer.json").unlink()
        make(model / "tokenizer.json")
        with pytest.raises(BadFileError, match="its tokenizer.json is not a regular file"):
            check_small_files(model, f"model {str(model)!r}")


@pytest.mark.parametrize(  # a folder passed as --labels is a folder of exports: test_neuronpedia_labels.py
    "reader", [_reader("--session"), _reader(LABELS_FILE)], ids=lambda r: r.name
)
def test_a_folder_where_a_json_file_should_be_is_one_line(
    reader: Reader, tmp_path: Path, tiny_model: Path, resid_saes: Path
) -> None:
    path = reader.place(tmp_path, tiny_model, resid_saes)
    path.mkdir()
    result = CliRunner().invoke(app, reader.command(path, tiny_model, resid_saes))
    one_line(result, ExitCode.BAD_FILE, reader.words, "is not a regular file")
