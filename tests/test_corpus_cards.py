"""`lenstop cards`: a corpus pass's cards against brute force (every activation by SAELens's own `encode` on the
Hugging Face model's residual stream, then sorted), the same cards after ctrl+c and a rerun, a planted Hugging
Face datasets cache read with no network, and the cards shown by every later session."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models import demo
from lenstop.models.errors import CancelledError, ExitCode

from helpers import one_line

LAYER = 1
CONTEXT = 64
LENSTOP = str(Path(sys.executable).parent / "lenstop")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two text files in a folder: a slice of the demo's held-out sample each."""
    folder = tmp_path_factory.mktemp("corpus")
    text = demo.HOLDOUT_SAMPLE.read_text()
    (folder / "a.py").write_text(text[:12_000])
    (folder / "b.py").write_text(text[12_000:24_000])
    (folder / "skip.bin").write_bytes(b"\x00\x01binary")
    return folder


def _cards(path: Path) -> dict:
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    doc.pop("built")
    return doc


def _build(cache: Path, bare_sae: Path, corpus: Path, *extra: str) -> dict:
    env_cache = os.environ.get("LENSTOP_CACHE")
    os.environ["LENSTOP_CACHE"] = str(cache)
    try:
        args = ["cards", "--sae", str(bare_sae), "--corpus", str(corpus), "--context", str(CONTEXT), "--json", *extra]
        result = CliRunner().invoke(app, args)
    finally:
        if env_cache is None:
            os.environ.pop("LENSTOP_CACHE")
        else:
            os.environ["LENSTOP_CACHE"] = env_cache
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, bare_sae: Path, corpus: Path) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    summary = _build(cache, bare_sae, corpus, "--batch-size", "8")
    (path,) = summary["cards"].values()
    return {"cache": cache, "summary": summary, "doc": _cards(Path(path))}


def _brute_force(
    bare_sae: Path, corpus: Path | list[str], context: int = CONTEXT, tokens: int | None = None
) -> tuple[np.ndarray, torch.Tensor, list[str]]:
    """The windows written by hand (the texts' tokens, each text followed by <|endoftext|>, cut into windows
    of `context` - 1 after BOS, `tokens` of them at most) and every activation there, by SAELens on the
    Hugging Face model."""
    from sae_lens import SAE
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(demo.MODEL_DIR)
    texts = corpus if isinstance(corpus, list) else [(corpus / name).read_text() for name in ("a.py", "b.py")]
    stream: list[int] = []
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if tokens is not None and len(stream) >= tokens:
            break
    body = context - 1
    n = min(len(stream), tokens or len(stream)) // body
    windows = np.concatenate([np.full((n, 1), tok.bos_token_id), np.array(stream[: n * body]).reshape(n, body)], 1)
    model = GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR).eval()
    sae = SAE.load_from_disk(str(bare_sae), device="cpu")
    with torch.no_grad():
        batches = torch.tensor(windows).split(32)
        resid = torch.cat([model(b, output_hidden_states=True).hidden_states[LAYER + 1] for b in batches])
        acts = sae.encode(resid)  # resid_post of layer 1
    acts[:, 0] = 0  # BOS is in no card
    strings = [tok.decode([i]) for i in range(len(tok))]
    return windows, acts, strings


def test_the_top_contexts_equal_brute_force(built: dict, bare_sae: Path, corpus: Path) -> None:
    windows, acts, strings = _brute_force(bare_sae, corpus)
    _check_against(built["doc"], windows, acts, strings, CONTEXT)
    doc = built["doc"]
    assert doc["n_tokens"] == windows.shape[0] * (CONTEXT - 1) == built["summary"]["tokens"]
    assert "a.py" not in doc["corpus"] and "2 files" in doc["corpus"]  # the binary file left out


def test_cards_on_the_demos_corpus_are_the_demos_cards(
    tmp_path: Path, bare_sae: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lenstop cards --corpus demo` reads the demo's held-out text in the windows its build reads (the build's
    cards stage is this pass, with labels added): on the first hundred windows its top contexts equal brute
    force."""
    from lenstop.models.cards.texts import from_demo

    monkeypatch.setenv("LENSTOP_CACHE", str(tmp_path))
    tokens = 12_700  # a hundred windows of the 128 the demo's cards read
    args = ["cards", "--sae", str(bare_sae), "--corpus", "demo", "--tokens", str(tokens), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (path,) = json.loads(result.stdout)["cards"].values()
    doc = _cards(Path(path))
    windows, acts, strings = _brute_force(bare_sae, list(from_demo().texts()), 128, tokens)
    _check_against(doc, windows, acts, strings, 128)


def _check_against(doc: dict, windows: np.ndarray, acts: torch.Tensor, strings: list[str], context: int) -> None:
    assert doc["n_tokens"] == windows.shape[0] * (context - 1)
    flat = acts.reshape(-1, acts.shape[-1])
    fired = (flat > 0).sum(0)
    live = [f for f in range(flat.shape[1]) if fired[f] > 0]
    assert len(live) > 200
    for f in live[:: max(1, len(live) // 60)]:
        card = doc["features"][f]
        values = flat[:, f]
        order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))[:16]
        order = [i for i in order if values[i] > 0]
        assert [c["act"] for c in card["contexts"]] == pytest.approx([float(values[i]) for i in order], abs=1e-3), f
        for c, where in zip(card["contexts"], order, strict=True):
            w, p = divmod(where, context)
            assert c["tokens"][c["focus"]] == strings[windows[w, p]] and c["at"] == [w, p]
            assert c["acts"][c["focus"]] == pytest.approx(float(values[where]), abs=2e-2)
        assert card["frequency"] == pytest.approx(int(fired[f]) / doc["n_tokens"])
        assert card["mean_act"] == pytest.approx(float(values.sum()) / int(fired[f]), rel=1e-4)
        assert sum(card["histogram"]["counts"]) == int(fired[f])
        sampled = [c["act"] for q in card["quantiles"] for c in q["contexts"]]
        assert sampled and all(0 < a <= card["max_act"] + 1e-6 for a in sampled)
        highs = [q["high"] for q in card["quantiles"]]
        assert highs == sorted(highs, reverse=True)


def test_resuming_after_ctrl_c_gives_the_same_cards(
    tmp_path: Path, built: dict, bare_sae: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lenstop.models.cards.spec import PassOptions
    from lenstop.models.cards.texts import from_paths
    from lenstop.models.engine import Engine

    monkeypatch.setenv("LENSTOP_CACHE", str(tmp_path))
    engine = Engine.load("demo", [str(bare_sae)], device="cpu")
    options = PassOptions(context=CONTEXT, batch_size=5)  # other batches than the uninterrupted run's
    seen: list[int] = []

    def interrupt_after_two(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # ctrl+c: the pass ends this batch, saves, and stops

    with pytest.raises(CancelledError, match="run the same command again"):
        engine.build_cards(from_paths([corpus]), options, interrupt_after_two)
    assert seen == [5, 10]
    result = engine.build_cards(from_paths([corpus]), options)
    assert result.resumed_from == 10
    (path,) = result.written.values()
    assert _cards(path) == built["doc"]


def test_a_later_session_shows_the_cards(built: dict, bare_sae: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENSTOP_CACHE", str(built["cache"]))
    feature = max(range(len(built["doc"]["features"])), key=lambda f: built["doc"]["features"][f]["max_act"])
    result = CliRunner().invoke(app, ["card", f"{LAYER}:{feature}", "--sae", str(bare_sae), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    expected = built["doc"]["features"][feature]
    assert card["contexts"] == expected["contexts"] and card["corpus"] == built["doc"]["corpus"]
    assert card["histogram"] == expected["histogram"] and card["weights"]["left_out"] > 0


def test_no_corpus_says_what_it_needs() -> None:
    one_line(CliRunner().invoke(app, ["cards"]), ExitCode.USAGE, "--corpus PATH", "--dataset NAME", "--corpus demo")


def _plant_dataset(home: Path) -> None:
    """What `datasets.load_dataset("lenstop/tiny-text")` leaves in the datasets cache after one online load: its
    parquet data prepared into `lenstop___tiny-text/default/0.0.0/<hash>/` (built here by datasets' own parquet
    builder from a local file, then put where a hub load puts it)."""
    code = f"""
import datasets, glob, json, os, shutil
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
home = Path({str(home)!r})
src = home / "src"; src.mkdir(parents=True)
text = open({str(demo.HOLDOUT_SAMPLE)!r}).read()
pq.write_table(pa.table({{"content": [text[i:i + 2000] for i in range(0, 40000, 2000)], "n": list(range(20))}}),
               src / "train-00000-of-00001.parquet")
datasets.load_dataset("parquet", data_files={{"train": str(src / "train-00000-of-00001.parquet")}},
                      cache_dir=str(home / "build"))
built = [p for p in glob.glob(str(home / "build" / "parquet" / "*" / "*" / "*")) if os.path.isdir(p)][0]
target = Path(datasets.config.HF_DATASETS_CACHE) / "lenstop___tiny-text" / "default" / "0.0.0" / Path(built).name
shutil.copytree(built, target)
for f in target.glob("parquet-*.arrow"):
    f.rename(target / f.name.replace("parquet-", "tiny-text-"))
"""
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_planted_datasets_cache_is_read_with_no_network(tmp_path: Path, bare_sae: Path) -> None:
    home = tmp_path / "hf"
    _plant_dataset(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9", LENSTOP_CACHE=str(tmp_path / "lc"))
    args = [LENSTOP, "cards", "--sae", str(bare_sae), "--dataset", "lenstop/tiny-text", "--tokens", "3000", "--json"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)  # HF_HUB_OFFLINE unset
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["corpus"] == "dataset lenstop/tiny-text:train (20 rows, column content)"
    assert 2900 < summary["tokens"] <= 3000
    (path,) = summary["cards"].values()
    assert any(f["contexts"] for f in _cards(Path(path))["features"])
    missing = subprocess.run(
        [*args[:5], "--dataset", "lenstop/absent", "--json"], env=env, capture_output=True, text=True
    )
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == ExitCode.USAGE and len(lines) == 1 and "not in the local datasets cache" in lines[0]


def test_labels_survive_corpus_cards_attached_twice(built: dict) -> None:
    """A dictionary's own labels stay when a pass's cards (which hold none) replace its cards, again and again."""
    from lenstop.models.feature_cards import Cards

    (path,) = built["summary"]["cards"].values()
    own = Cards.beside(demo.SAE_ROOT / "L1")
    labels = own.all_labels()
    assert len(labels) > 500
    twice = own.rebased(Path(path)).rebased(Path(path))
    assert twice.all_labels() == labels and twice.card(446).label == labels[446]
    assert twice.card(446).contexts == Cards(Path(path)).card(446).contexts  # the pass's contexts
