"""Labels from Neuronpedia's dataset exports, matched to a planted release by its Neuronpedia id.

The release is SAELens's own `gpt2-small-res-jb`, planted in a Hugging Face cache (tests/hub_cache.py) at the
demo model's width, so SAELens itself gives it the id of its pretrained_saes.yaml: `gpt2-small/1-res-jb`. The
exports are laid out as Neuronpedia's `utils/neuronpedia-utils/neuronpedia_utils/export-data.py` writes them
and its webapp's import reads them: `{modelId}/{sourceId}/explanations/batch-N.jsonl.gz`, gzip JSON lines of
the Explanation rows, with its field names.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_cache import plant_res_jb
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.engine import Engine
from lenstop.models.errors import ExitCode, UsageError
from lenstop.models.labels import labels_cache, read_explanations

from helpers import one_line

RELEASE = "gpt2-small-res-jb:blocks.1.hook_resid_pre"
SOURCE = "gpt2-small/1-res-jb"  # the release's `neuronpedia` id in SAELens's pretrained_saes.yaml
D_SAE = 64
PROMPT = "def add(first, second):"
FIELDS = (  # the columns export-data.py writes for each explanation, in its order
    "id",
    "modelId",
    "layer",
    "index",
    "authorId",
    "description",
    "embedding",
    "typeName",
    "explanationModelName",
    "umap_x",
    "umap_y",
    "umap_cluster",
    "umap_log_feature_sparsity",
)


def _record(index: int, description: str, source: str = SOURCE) -> dict[str, object]:
    model, _, layer = source.partition("/")
    record = {
        "id": f"cm{index:022d}",
        "modelId": model,
        "layer": layer,
        "index": str(index),  # a string: the Explanation table's index column is text
        "authorId": "clkht01d40000jv08hvalcvly",
        "description": description,
        "embedding": "[" + ",".join(f"{0.001 * (index + k):.6f}" for k in range(256)) + "]",  # pgvector's text
        "typeName": "oai_token-act-pair",
        "explanationModelName": "gpt-4o-mini",
        "umap_x": 1.5,
        "umap_y": -2.0,
        "umap_cluster": 3,
        "umap_log_feature_sparsity": -3.2,
    }
    assert tuple(record) == FIELDS
    return record


def _batch(folder: Path, number: int, records: list[dict[str, object]]) -> Path:
    """`batch-N.jsonl.gz` as export-data.py leaves it: rows joined by newlines, a final one, gzip level 5."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"batch-{number}.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in records) + "\n").encode(), compresslevel=5))
    return path


def _export(root: Path, source: str = SOURCE, word: str = "np") -> Path:
    """A source's export of explanations for all 64 features in two batches; feature 5 is explained twice, the
    second time in batch-1. Returns its `explanations/` folder."""
    folder = root / source / "explanations"
    _batch(folder, 0, [_record(i, f"{word} label {i}", source) for i in range(32)])
    _batch(
        folder, 1, [_record(i, f"{word} label {i}", source) for i in range(32, D_SAE)] + [_record(5, "later", source)]
    )
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release planted in a hub cache the hub loaders read in this process."""
    from huggingface_hub import constants

    cache = tmp_path_factory.mktemp("hf") / "hub"
    plant_res_jb(cache, layers=(1,), d_in=128, d_sae=D_SAE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(cache))
        yield cache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty lenstop cache of this test's own; `labels_cache()` is its `neuronpedia/` folder."""
    monkeypatch.setenv("LENSTOP_CACHE", str(tmp_path / "lenstop-cache"))
    return labels_cache()


@pytest.fixture(scope="module")
def release(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The demo model with the planted release and no labels in its cache, for `add_labels`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LENSTOP_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
        engine = Engine.load("demo", [RELEASE], device="cpu")
    yield engine


def _card(args: list[str]) -> dict[str, object]:
    result = CliRunner().invoke(app, ["card", *args, "--sae", RELEASE, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_export_in_the_cache_labels_the_planted_release(hub: Path, cache: Path) -> None:
    _export(cache)
    engine = Engine.load("demo", [RELEASE], device="cpu")
    (dictionary,) = engine.dictionaries
    assert (dictionary.key, dictionary.metadata.neuronpedia_id) == (RELEASE, SOURCE)
    source = f"neuronpedia {SOURCE} (explanations, 2 files, in the cache)"
    assert [engine.label(1, i) for i in (0, 5, 31, 32, 63)] == [f"np label {i}" for i in (0, 5, 31, 32, 63)]
    card = engine.card(1, 40)
    assert card is not None and (card.label, card.label_source) == ("np label 40", source)
    top = engine.analyse(PROMPT).layer(1).features(3)[0].id
    assert engine.analyse(PROMPT).layer(1).labels[top] == f"np label {top}"

    shown = _card(["1:40"])
    assert (shown["layer"], shown["id"], shown["label"], shown["label_source"]) == (1, 40, "np label 40", source)


def test_an_export_folder_passed_with_labels_labels_it_ahead_of_the_cache(
    hub: Path, cache: Path, tmp_path: Path
) -> None:
    _export(cache)
    root = tmp_path / "neuronpedia-datasets"
    _export(root / "v1", word="passed")  # as `aws s3 sync s3://neuronpedia-datasets/v1 ...` leaves it
    shown = _card(["1:7", "--labels", str(root)])
    assert (shown["label"], shown["label_source"]) == (
        "passed label 7",
        f"neuronpedia {SOURCE} (explanations, 2 files, --labels {root})",
    )
    result = CliRunner().invoke(
        app, ["card", "1:7", "--sae", RELEASE, "--device", "cpu", "--labels", str(root)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "L1 #7  passed label 7"
    assert lines[1].strip() == f"label from neuronpedia {SOURCE} (explanations, 2 files, --labels {root})"


def test_a_batch_file_a_source_folder_and_the_old_list_label_it(release: Engine, tmp_path: Path) -> None:
    folder = _export(tmp_path / "one", word="file")
    release.add_labels(str(folder / "batch-1.jsonl.gz"))  # its records' layer, 1-res-jb, is the release's source
    assert (release.label(1, 40), release.label(1, 5)) == ("file label 40", "later")
    card = release.card(1, 40)
    assert card is not None and card.label_source == f"neuronpedia {SOURCE} (--labels {folder / 'batch-1.jsonl.gz'})"

    release.add_labels(f"1={_export(tmp_path / 'two', word='folder').parent}")  # a source's folder, its layer named
    assert release.label(1, 5) == "folder label 5"
    card = release.card(1, 5)
    assert card is not None and card.label_source == (
        f"neuronpedia {SOURCE} (explanations, 2 files, --labels {tmp_path / 'two' / SOURCE})"
    )

    old = tmp_path / "export.json"  # what /api/explanation/export gave
    old.write_text(json.dumps([{"modelId": "gpt2-small", "layer": "1-res-jb", "index": "9", "description": "old"}]))
    release.add_labels(str(old))
    card = release.card(1, 9)
    assert card is not None and (card.label, card.label_source) == ("old", f"neuronpedia {SOURCE} (--labels {old})")
    assert release.label(1, 8) == "folder label 8"


def test_an_export_of_another_source_is_refused_in_one_line(release: Engine, hub: Path, tmp_path: Path) -> None:
    other = _export(tmp_path / "exports", source="gpt2-small/6-res-jb")
    result = CliRunner().invoke(
        app, ["card", "1:3", "--sae", RELEASE, "--device", "cpu", "--labels", str(tmp_path / "exports")]
    )
    line = one_line(result, ExitCode.USAGE, str(tmp_path / "exports"), "gpt2-small/6-res-jb")
    assert f"L1 {RELEASE}: {SOURCE}" in line
    with pytest.raises(UsageError, match=r"explanations are of Neuronpedia's gpt2-small/6-res-jb, which is none"):
        release.add_labels(str(other / "batch-0.jsonl.gz"))


def _bomb(path: Path) -> None:
    """Some 96 MB of blank lines in a file of about 100 KB: past the 64 MiB a file this small may hold."""
    with gzip.open(path, "wb", compresslevel=9) as fh:
        for _ in range(1536):
            fh.write(b" " * 65535 + b"\n")


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (
            lambda p: p.write_bytes(gzip.compress(b'{"index": "1", "description": "x"}\n')[:30]),
            ("truncated or not gzip",),
        ),
        (lambda p: p.write_bytes(b'{"index": "1", "description": "x"}\n'), ("truncated or not gzip",)),
        (lambda p: p.write_bytes(gzip.compress(b'{"index": "1", "descr\n')), ("line 1 is not valid JSON",)),
        (_bomb, ("decompresses to more than 64 MiB", "gzip bomb")),
        (
            lambda p: p.write_bytes(
                gzip.compress(b'{"index": "1", "description": "x"}\n{"index": "-3", "description": "y"}\n')
            ),
            ('line 2: index "-3" is not a feature number',),
        ),
    ],
    ids=["truncated", "not-gzip", "malformed", "bomb", "bad-index"],
)
def test_a_bad_export_is_one_line(spoil, words, tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    path = tmp_path / "explanations" / "batch-0.jsonl.gz"
    path.parent.mkdir()
    spoil(path)
    args = ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--labels", f"1={path.parent}", "--json"]
    line = one_line(CliRunner().invoke(app, args), ExitCode.BAD_FILE, str(path), *words, "re-download the export")
    assert len(line) < 400


@pytest.mark.parametrize(
    ("place", "code", "words"),
    [
        (lambda root: root, ExitCode.BAD_FILE, ("a folder with no Neuronpedia explanations in it",)),
        (lambda root: root / "explanations", ExitCode.NOT_FOUND, ("no Neuronpedia batch files in it",)),
    ],
    ids=["empty-folder", "empty-explanations"],
)
def test_a_folder_without_explanations_is_one_line(
    place, code, words, tiny_model: Path, resid_saes: Path, tmp_path: Path
) -> None:
    folder = place(tmp_path / "exports")
    folder.mkdir(parents=True)
    args = ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--labels", str(folder), "--json"]
    one_line(CliRunner().invoke(app, args), code, str(folder), *words)


def test_what_an_export_says_of_itself_is_shown_not_obeyed(tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    """The source line names the records' modelId, text from the file like the label itself."""
    attack = "\x1b]52;c;aGk=\x07"
    path = _batch(tmp_path / "explanations", 0, [_record(3, f"label {attack}", f"{attack}/1-res-tiny")])
    args = ["card", "1:3", str(tiny_model), "--sae", str(resid_saes), "--labels", f"1={path}", "--device", "cpu"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "label ␛]52;c;aGk=" in result.stdout and "label from neuronpedia ␛]52;c;aGk=" in result.stdout
    shown = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(shown.stdout)["label_source"] == f"neuronpedia {attack}/1-res-tiny (--labels {path})"


def test_batches_are_read_in_the_order_of_their_numbers(tmp_path: Path) -> None:
    folder = tmp_path / "explanations"
    _batch(folder, 10, [_record(3, "from batch 10"), _record(4, "four")])
    _batch(folder, 2, [_record(3, "from batch 2"), _record(5, "")])  # an empty description labels nothing
    labels = read_explanations(folder, "here")
    assert labels.by_feature == {3: "from batch 2", 4: "four"}
    assert (labels.model, labels.layer, labels.source) == (
        "gpt2-small",
        "1-res-jb",
        f"neuronpedia {SOURCE} (explanations, 2 files, here)",
    )


def test_the_cache_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LENSTOP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert labels_cache() == tmp_path / "xdg" / "lenstop" / "neuronpedia"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert labels_cache() == Path.home() / ".cache" / "lenstop" / "neuronpedia"
