"""The demo pipeline end to end in its reduced configuration, and its pieces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lenstop.models.demo import metrics
from lenstop.models.demo.build import Build, BuildConfig
from lenstop.models.demo.corpus import char_tags
from lenstop.models.demo.feature_cards import TopContexts, label_for
from lenstop.models.engine import Engine
from lenstop.models.feature_cards import LABELS_FILE, Cards


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    root = tmp_path_factory.mktemp("demo-build")
    build = Build(BuildConfig.tiny(), root / "work", root / "out")
    build.run()
    return build


def test_pipeline_writes_a_model_and_dictionaries_lenstop_loads(tiny_build: Build) -> None:
    out = tiny_build.out
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    layers = sorted(p.name for p in (out / "saes").iterdir())
    assert layers == ["L0", "L1"]
    engine = Engine.load(str(out / "model"), [str(out / "saes")], device="cpu")
    analysis = engine.analyse("def f(x):\n    return x")
    assert [lf.hook for lf in analysis.layers] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    # Every live feature has a card with contexts read from held-out text.
    feature = analysis.layers[1].features(3)[0].id
    card = engine.card(1, feature)
    assert card is not None and card.frequency > 0 and card.contexts
    assert all(c.acts[c.focus] == pytest.approx(c.act, abs=1e-3) for c in card.contexts)
    assert card.weights is not None and len(card.promoted) == 10 and card.promoted[0][1] >= card.promoted[-1][1]
    labels = json.loads((out / "saes" / "L1" / LABELS_FILE).read_text())  # written with the cards, the same labels
    assert labels == {str(c.id): c.label for c in Cards.beside(out / "saes" / "L1").all() if c.label}


def test_pipeline_is_resumable_and_records_its_figures(tiny_build: Build) -> None:
    for stage in ("corpus", "tokenizer", "model", "saes", "transcoders", "cards", "card"):
        assert tiny_build.done(stage)
    before = (tiny_build.out / "model" / "model.safetensors").stat().st_mtime_ns
    tiny_build.run()  # everything done: nothing is redone
    assert (tiny_build.out / "model" / "model.safetensors").stat().st_mtime_ns == before
    card = (tiny_build.out / "MODEL_CARD.md").read_text()
    saes = json.loads((tiny_build.work / "saes.done").read_text())["layers"]
    assert f"| 0 | {saes[0]['fvu']:.3f} |" in card
    assert "Induction circuit" in card and "loss recovered" in card
    transcoders = json.loads((tiny_build.work / "transcoders.done").read_text())
    row = transcoders["clt"]["layers"][1]
    assert f"| CLT | 1 | {row['fvu']:.3f} | {row['mean_l0']:.1f} | {row['dead_fraction']:.1%} |" in card


def test_pipeline_writes_transcoders_in_circuit_tracers_format(tiny_build: Build) -> None:
    from lenstop.models.demo import transcoders

    per_layer = transcoders.load_transcoder_set(tiny_build.transcoder_root)
    clt = transcoders.load_clt(tiny_build.clt_root)
    d_model = tiny_build.config.model.d_model
    assert tuple(per_layer.W_enc.shape) == (2, tiny_build.config.transcoder.d_transcoder, d_model)
    assert [tuple(w.shape) for w in clt.W_dec] == [(32, 2, d_model), (32, 1, d_model)]
    assert transcoders.read_config(tiny_build.clt_root)["model_kind"] == "cross_layer_transcoder"


def test_model_training_resumes_from_its_checkpoint(tmp_path: Path, tiny_build: Build) -> None:
    from dataclasses import replace

    from lenstop.models.demo.train_model import train

    recipe = replace(BuildConfig.tiny().model, steps=20, eval_every=10)
    ids = tiny_build.ids("train")
    holdout = tiny_build.ids("holdout")
    tok = tiny_build.tokenizer()
    straight, _ = train(recipe, ids, holdout, tok.bos_token_id, len(tok), tmp_path / "a.ckpt")
    train(replace(recipe, steps=10), ids, holdout, tok.bos_token_id, len(tok), tmp_path / "b.ckpt")
    resumed, history = train(recipe, ids, holdout, tok.bos_token_id, len(tok), tmp_path / "b.ckpt")
    assert [h["step"] for h in history] == [10.0, 20.0]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_char_tags_follow_pythons_tokenizer() -> None:
    source = 'def f(x):\n    """Doc."""\n    return x + 1  # note\n'
    tags = char_tags(source)

    def at(text: str) -> str:
        return tags[source.index(text)]

    assert at("def") == "keyword" and at("f(") == "name" and at("Doc") == "docstring"
    assert at("return") == "keyword" and at("1") == "number" and at("# note") == "comment" and at("+") == "operator"
    assert tags[source.index("    return")] == "indentation"


def test_labels_say_what_top_contexts_share() -> None:
    assert label_for([" return"] * 8 + [" yield"] * 2, ["\n"] * 10, ["keyword"] * 10) == '"·return"'
    assert label_for(["a", "b", "c", "d"], ["x", "y", "z", "w"], ["docstring"] * 4) == "in a docstring"
    assert (
        label_for(["a", "b", "c", "d"], ["self", "self", "self", "x"], ["name", "code", "operator", "number"])
        == 'after "self"'
    )
    assert label_for(["a", "b", "c", "d"], ["x", "y", "z", "w"], ["name", "code", "operator", "number"]) is None
    assert (
        label_for(["a", "b", "c"], ["", "", "x"], ["name"] * 3, positions=[1, 1, 2])
        == "start of the context (position)"
    )


def test_top_contexts_keep_the_largest_activations_across_batches() -> None:
    torch.manual_seed(0)
    acts = torch.rand(6, 20, 3)
    top = TopContexts(d_sae=3, n=4)
    top.add(acts[:3], 0)
    top.add(acts[3:], 3)
    expected = acts.permute(2, 0, 1).reshape(3, -1).topk(4, dim=1)
    assert torch.allclose(top.values, expected.values)
    for f in range(3):
        for value, (w, p) in zip(top.values[f], top.where[f], strict=True):
            assert acts[w, p, f] == value
            assert top.neighbourhood[f][list(top.values[f]).index(value)][12] == value  # peak sits at BEFORE


def test_induction_metric_finds_a_hand_built_induction_pattern() -> None:
    """A fake model whose layer-1 head 0 attends exactly to the induction target."""
    from types import SimpleNamespace

    class Fake(torch.nn.Module):
        config = SimpleNamespace(n_positions=128, _attn_implementation="eager")

        def forward(self, tokens, output_attentions=False):
            n, t = tokens.shape
            half = (t - 1) // 2
            att = torch.zeros(n, 2, t, t)
            for q in range(t):
                att[:, :, q, max(q - 1, 0)] = 1.0
            for q in range(half + 1, t):
                att[:, 0, q] = 0
                att[:, 0, q, q - half + 1] = 1.0
            logits = torch.zeros(n, t, 600)  # uniform predictions: the loss ratio is 1
            return SimpleNamespace(logits=logits, attentions=[att[:, 1:], att])

    result = metrics.induction(Fake(), vocab=600, bos=0, n=4, half=10)
    assert result.best_induction_head == (1, 0) and result.induction_score == pytest.approx(1.0)
    assert result.previous_score == pytest.approx(1.0)
