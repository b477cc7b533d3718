"""The demo's transcoders' feature cards: built from plain torch activations that equal lenstop's own encode,
found by `Cards` beside circuit-tracer's files without changing what circuit-tracer reads, and shown where
lenstop shows labels and cards (`label`, the graph's nodes, the viewer's feature files)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lenstop.models import demo
from lenstop.models.demo import metrics
from lenstop.models.demo.feature_cards import (
    BEFORE,
    build_transcoder_cards,
    held_out,
    tracer_card_name,
    tracer_layers,
)
from lenstop.models.feature_cards import CARDS_FILE, LABELS_FILE, Cards

N_LAYERS = 3
BUDGET = 6000  # tokens: 47 windows, two of the build's batches of 32
FOLDERS = {"transcoders": demo.TRANSCODER_ROOT, "clt": demo.CLT_ROOT}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: on a busy 2-core machine a second thread made this 3-10x slower
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(demo.MODEL_DIR)


@pytest.fixture(scope="module")
def mlp_inputs(model, tokenizer) -> list[torch.Tensor]:
    """Each layer's MLP input (ln_2's output) on 8 windows of the shipped held-out sample."""
    from lenstop.models.demo.transcoders import mlp_activations

    ids = np.asarray(tokenizer(demo.HOLDOUT_SAMPLE.read_text(), add_special_tokens=False)["input_ids"])
    tokens = torch.cat(metrics.windows(ids, tokenizer.bos_token_id, model.config.n_positions, n=8, seed=3))
    return mlp_activations(model, tokens)[0]


@pytest.fixture(scope="module")
def engines():
    from lenstop.models.engine import Engine

    return {kind: Engine.load("demo", [f"demo:{kind}"], device="cpu") for kind in FOLDERS}


def _doc(folder: Path, layer: int) -> dict:
    with gzip.open(folder / f"{tracer_card_name(layer)}.{CARDS_FILE}", "rt", encoding="utf-8") as fh:
        return json.load(fh)


def test_card_activations_equal_lenstops_encode(mlp_inputs, engines) -> None:
    """What the cards were built from is what lenstop computes for the same features."""
    _, per_layer = tracer_layers(demo.TRANSCODER_ROOT)
    _, clt_layers = tracer_layers(demo.CLT_ROOT)
    clt = engines["clt"].handle.dictionaries.cross_layer
    assert clt is not None
    for layer in range(N_LAYERS):
        x = mlp_inputs[layer]
        ours = per_layer[layer].encode(x)
        theirs = engines["transcoders"].handle.dictionaries.at(layer).encode(x)
        assert (ours > 0).float().mean() > 0.01  # features fire: the comparison compares something
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        ours_clt = clt_layers[layer].encode(x)
        assert (ours_clt > 0).float().mean() > 0.02
        torch.testing.assert_close(ours_clt, clt.encode(layer, x), rtol=1e-5, atol=1e-5)


def test_a_feature_writes_its_decoder_rows_summed_through_the_unembedding(model) -> None:
    _, clt_layers = tracer_layers(demo.CLT_ROOT)
    from safetensors.torch import load_file

    w_dec = load_file(demo.CLT_ROOT / "W_dec_0.safetensors")["W_dec_0"]  # (d, 3, d_model)
    feature = 7
    direction = w_dec[feature, 0] + w_dec[feature, 1] + w_dec[feature, 2]
    torch.testing.assert_close(clt_layers[0].direction[feature], direction)
    card = _doc(demo.CLT_ROOT, 0)["features"][feature]
    effect = model.lm_head.weight.detach() @ direction
    assert card["promoted"][0][1] == pytest.approx(effect.max().item(), abs=1e-3)
    assert card["suppressed"][0][1] == pytest.approx(effect.min().item(), abs=1e-3)


@pytest.fixture(scope="module")
def built_here(tmp_path_factory, tokenizer, model) -> tuple[Path, list[str]]:
    """Cards built again, on a little held-out text, into copies of both folders."""
    root = tmp_path_factory.mktemp("cards")
    for kind, folder in FOLDERS.items():
        shutil.copytree(folder, root / kind, ignore=shutil.ignore_patterns(f"*{CARDS_FILE}", f"*{LABELS_FILE}"))
    text = demo.HOLDOUT_SAMPLE.read_text()
    texts = [text[i : i + 4000] for i in range(0, 40000, 4000)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_transcoder_cards(demo.MODEL_DIR, [root / k for k in FOLDERS], texts, budget=BUDGET)
    finally:
        torch.set_num_threads(threads)
    return root, texts


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_a_cards_top_context_is_where_the_feature_peaks_on_that_text(kind, built_here, tokenizer, model) -> None:
    """Recompute every activation on the text the cards read: a card's first context is the feature's peak."""
    from lenstop.models.demo.transcoders import mlp_activations

    root, texts = built_here
    text = held_out(tokenizer, texts, BUDGET, model.config.n_positions)
    assert len(text.windows) > 32  # the peak may be in the second batch
    ins = mlp_activations(model, text.windows)[0]
    _, layers = tracer_layers(root / kind)
    checked = 0
    for t in layers:
        acts = t.encode(ins[t.layer])[:, 1:]  # (windows, seq - 1, d): BOS left out, as the cards leave it
        doc = _doc(root / kind, t.layer)
        assert doc["n_tokens"] == acts.shape[0] * acts.shape[1]
        for feature in acts.amax((0, 1)).topk(5).indices.tolist():
            card = doc["features"][feature]
            peak = acts[..., feature].argmax().item()
            w, p = divmod(peak, acts.shape[1])
            p += 1
            context = card["contexts"][0]
            assert context["act"] == pytest.approx(acts[..., feature].max().item(), abs=1e-3)
            assert context["tokens"][context["focus"]] == text.strings[int(text.windows[w, p])]
            assert context["focus"] == min(BEFORE, p - 1)
            assert card["frequency"] == pytest.approx((acts[..., feature] > 0).float().mean().item())
            checked += 1
    assert checked == 5 * N_LAYERS


def test_shipped_cards_are_whole_and_from_the_sae_cards_budget() -> None:
    sae_tokens = json.loads(gzip.open(demo.SAE_ROOT / "L0" / CARDS_FILE, "rt").read())["n_tokens"]
    for kind, folder in FOLDERS.items():
        for layer in range(N_LAYERS):
            doc = _doc(folder, layer)
            assert doc["layer"] == layer and doc["n_tokens"] == sae_tokens, (kind, layer)
            live = [c for c in doc["features"] if c["frequency"] > 0]
            assert len(live) > 0.5 * len(doc["features"]), (kind, layer)
            for card in live:
                assert card["contexts"] and card["max_act"] == card["contexts"][0]["act"]
                assert all(c["acts"][c["focus"]] == pytest.approx(c["act"], abs=1e-3) for c in card["contexts"])


def test_labels_load_through_the_engine_from_the_labels_file(engines) -> None:
    engine = engines["transcoders"]
    for layer in range(N_LAYERS):
        shipped = json.loads((demo.TRANSCODER_ROOT / f"{tracer_card_name(layer)}.{LABELS_FILE}").read_text())
        assert len(shipped) > 100
        cards = engine.handle.dictionaries.at(layer).cards
        assert {int(f): engine.label(layer, int(f)) for f in shipped} == {int(f): v for f, v in shipped.items()}
        assert cards._raw is None  # read from the labels file, not from the megabytes of cards
        feature = int(next(iter(shipped)))
        card = engine.card(layer, feature)
        assert card is not None and card.label == shipped[str(feature)] and card.contexts


def test_the_graphs_feature_nodes_carry_the_clts_labels_and_the_export_its_examples(engines, tmp_path) -> None:
    engine = engines["clt"]
    graph = engine.graph(
        "def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self", max_feature_nodes=64
    )
    features = [n for n in graph.nodes if n.kind == "feature"]
    assert features
    shipped = [
        json.loads((demo.CLT_ROOT / f"{tracer_card_name(layer)}.{LABELS_FILE}").read_text()) for layer in range(3)
    ]
    assert [n.label for n in features] == [shipped[n.layer].get(str(n.feature), "") for n in features]
    assert sum(bool(n.label) for n in features) > len(features) / 2
    written = engine.export_graph(graph, tmp_path / "g.json")
    files = [json.loads(p.read_text()) for p in written if p.parent.name == "g-features"]
    assert files and all(f["examples_quantiles"][0]["examples"] for f in files)


def test_circuit_tracer_folders_hold_its_files_and_the_cards_alone() -> None:
    """circuit-tracer's loaders read the listed layer_i.safetensors, and W_enc_i/W_dec_i; the card files match
    neither those names nor the `layer_*.safetensors` glob."""
    cards = {f"layer_{i}.{name}" for i in range(N_LAYERS) for name in (CARDS_FILE, LABELS_FILE)}
    tracer = {"config.yaml", *(f"layer_{i}.safetensors" for i in range(N_LAYERS))}
    assert {p.name for p in demo.TRANSCODER_ROOT.iterdir()} == tracer | cards
    assert sorted(p.name for p in demo.TRANSCODER_ROOT.glob("layer_*.safetensors")) == sorted(tracer - {"config.yaml"})
    weights = {f"W_{w}_{i}.safetensors" for w in ("enc", "dec") for i in range(N_LAYERS)}
    assert {p.name for p in demo.CLT_ROOT.iterdir()} == {"config.yaml"} | weights | cards
    assert {p.name for p in demo.CLT_ROOT.glob("*.safetensors")} == weights


def test_cards_named_read_their_own_labels_file(tmp_path: Path) -> None:
    (tmp_path / f"layer_1.{LABELS_FILE}").write_text('{"3": "one"}')
    (tmp_path / LABELS_FILE).write_text('{"3": "the folder\'s"}')
    with gzip.open(tmp_path / f"layer_1.{CARDS_FILE}", "wt") as fh:
        json.dump({"features": [{"id": 3, "label": "in the card"}]}, fh)
    assert Cards.named(tmp_path, "layer_1").label(3) == "one"
    assert Cards.beside(tmp_path).label(3) is None  # no feature_cards.json.gz there
    assert Cards.named(tmp_path, "layer_2").label(3) is None
