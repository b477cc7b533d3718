"""Cards from the weights alone, for a dictionary with no card files: the tokens its decoder promotes and
suppresses against a hand-written reference from the Hugging Face weights, the tokens left out and why, its
nearest features by brute force, and one card for the app, `lenstop card --json` and the graph viewer."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models import demo
from lenstop.models.engine import Engine

LAYER = 1
FEATURES = (446, 5, 1000)


@pytest.fixture(scope="module")
def engine(bare_sae: Path) -> Engine:
    return Engine.load("demo", [str(bare_sae)], device="cpu")


@pytest.fixture(scope="module")
def reference(bare_sae: Path) -> dict[str, torch.Tensor]:
    """Every feature's logit effects by hand: the decoder rows from the file, centred (the demo's norms are
    LayerNorms), times the final norm's weight, through the unembedding less its mean column."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR).eval()
    w_dec = load_file(bare_sae / "sae_weights.safetensors")["W_dec"]  # (d_sae, d_model)
    w_u = hf.lm_head.weight.detach().T  # (d_model, vocab)
    d = (w_dec - w_dec.mean(1, keepdim=True)) * hf.transformer.ln_f.weight.detach()
    return {"effects": d @ (w_u - w_u.mean(1, keepdim=True)), "w_dec": w_dec, "w_u": w_u}


def _is_left_out(tokenizer, w_u: torch.Tensor, token_id: int) -> bool:
    """Why a token may be missing from the lists: special, not its own text again, or never trained (its
    unembedding column, less the mean column, points where that of byte 0xFF, which no UTF-8 text has, does)."""
    if token_id in tokenizer.all_special_ids:
        return True
    text = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    if tokenizer(text, add_special_tokens=False)["input_ids"] != [token_id]:
        return True
    cols = w_u - w_u.mean(1, keepdim=True)
    byte_ff = tokenizer.convert_tokens_to_ids("ÿ")  # GPT-2's byte alphabet: U+00FF stands for byte 0xFF
    return bool(torch.nn.functional.cosine_similarity(cols[:, token_id], cols[:, byte_ff], dim=0) > 0.95)


@pytest.mark.parametrize("feature", FEATURES)
def test_promoted_and_suppressed_equal_the_hand_written_reference(engine, reference, feature: int) -> None:
    card = engine.card(LAYER, feature)
    assert card is not None and card.weights is not None and not card.contexts and card.label is None
    tokenizer = engine.handle.model.tokenizer
    effects = reference["effects"][feature]
    for listed, sign in ((card.promoted, 1.0), (card.suppressed, -1.0)):
        assert len(listed) == 10
        order = torch.argsort(sign * effects, descending=True).tolist()
        names = engine.handle.token_strings(order)
        shown = [token for token, _ in listed]
        # walking down the reference: each token is listed, in order with its value, or is one left out
        walked = 0
        for token_id, name in zip(order, names, strict=True):
            if walked == len(listed):
                break
            if name == shown[walked]:
                assert listed[walked][1] == pytest.approx(float(effects[token_id]), abs=1e-4), name
                walked += 1
            else:
                assert _is_left_out(tokenizer, reference["w_u"], token_id), f"{name!r} should be listed"
        assert walked == len(listed)


def test_the_left_out_tokens_are_the_junk_the_issue_shows(engine) -> None:
    """`lenstop card 1:446` listed `\\xde +0.45 \\xf9 +0.45 ...`: lone bytes whose columns never trained, all
    alike. None is listed now, no value repeats, and the card says how many tokens were left out."""
    card = engine.card(LAYER, 446)
    values = [v for _, v in card.promoted]
    assert len(set(round(v, 4) for v in values)) == len(values)
    junk = [t for t, _ in card.promoted + card.suppressed if t.startswith("\\x") or _control(t)]
    assert not junk
    # the demo's tokenizer: 128 lone bytes >= 0x80 do not decode alone, one special token, and the
    # ASCII control bytes Python's source never holds
    assert 129 < card.weights.left_out < 200


def _control(token: str) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in "\n\t\r" for c in token)


def test_the_nearest_features_are_the_brute_force_cosines(engine, reference) -> None:
    from lenstop.models.cards.weights import N_NEIGHBOURS

    w_dec = reference["w_dec"]
    unit = w_dec / w_dec.norm(dim=1, keepdim=True)
    for feature in FEATURES:
        card = engine.card(LAYER, feature)
        cos = unit @ unit[feature]
        cos[feature] = -2
        top = torch.topk(cos, N_NEIGHBOURS)
        ours = [(n.layer, n.feature) for n in card.weights.neighbours]
        assert ours == [(LAYER, int(i)) for i in top.indices]  # one dictionary loaded: no neighbouring layer
        assert [n.cosine for n in card.weights.neighbours] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert card.weights.decoder_norm == pytest.approx(float(w_dec[feature].norm()), rel=1e-5)


def test_neighbouring_layers_are_searched_too() -> None:
    engine = Engine.load("demo", device="cpu")  # a dictionary at each of layers 0, 1, 2
    card = engine.card(1, 446)
    assert {n.layer for n in card.weights.neighbours} <= {0, 1, 2}
    assert len(card.weights.neighbours) == 3 * 5
    cosines = [n.cosine for n in card.weights.neighbours]
    assert cosines == sorted(cosines, reverse=True)
    assert (1, 446) not in {(n.layer, n.feature) for n in card.weights.neighbours}


def test_the_cli_prints_the_same_card_at_once(engine, bare_sae: Path) -> None:
    result = CliRunner().invoke(app, ["card", f"{LAYER}:446", "--sae", str(bare_sae), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == json.loads(json.dumps({"layer": LAYER, **engine.card(LAYER, 446).to_json()}))
    text = CliRunner().invoke(app, ["card", f"{LAYER}:446", "--sae", str(bare_sae)])
    words = " ".join(text.output.split())  # as wrapped at the terminal's width
    assert text.exit_code == 0 and "promotes" in words and "the model never produces left out" in words


def test_a_transcoders_and_a_clts_cards_come_from_their_decoders() -> None:
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR).eval()
    w_u = hf.lm_head.weight.detach().T
    ln = hf.transformer.ln_f.weight.detach()
    clt_dec = load_file(demo.CLT_ROOT / "W_dec_1.safetensors")["W_dec_1"]  # (d, 2, d_model): layers 1 and 2
    per_layer = load_file(demo.TRANSCODER_ROOT / "layer_1.safetensors")["W_dec"]
    for spec, direction in (("demo:clt", clt_dec[7].sum(0)), ("demo:transcoders", per_layer[7])):
        card = Engine.load("demo", [spec], device="cpu").card(1, 7)
        d = (direction - direction.mean()) * ln
        effect = d @ (w_u - w_u.mean(1, keepdim=True))
        assert card.promoted[0][1] == pytest.approx(float(effect.max()), abs=1e-4), spec
        assert card.label, spec  # the demo's transcoders and CLT have cards: their labels stay


def test_one_card_feeds_the_app_the_cli_and_the_graph_viewers_feature_files(tmp_path: Path) -> None:
    """The card `lenstop card --json` prints (the app's card draws the same object) is the one a graph export
    writes into circuit-tracer's feature file: the same examples, logits, density and histogram."""
    from lenstop.models.graphs.export import cantor
    from lenstop.models.safe_text import printable

    engine = Engine.load("demo", ["demo:transcoders"], device="cpu")
    graph = engine.graph("def add(first, second):\n    return first +")
    engine.export_graph(graph, tmp_path / "g.json")
    files = sorted((tmp_path / "g-features").glob("*.json"))
    assert files
    for path in files[:5]:
        written = json.loads(path.read_text())
        layer, feature = next(
            (n.layer, n.feature)
            for n in graph.nodes
            if n.kind == "feature" and cantor(n.layer, n.feature) == written["index"]
        )
        card = engine.card(layer, feature)
        cli = CliRunner().invoke(app, ["card", f"{layer}:{feature}", "--sae", "demo:transcoders", "--json"])
        assert json.loads(cli.stdout) == json.loads(json.dumps({"layer": layer, **card.to_json()}))
        assert written["top_logits"] == [printable(t) for t, _ in card.promoted]
        assert written["bottom_logits"] == [printable(t) for t, _ in card.suppressed]
        top = written["examples_quantiles"][0]
        assert top["quantile_name"] == "Top activations"
        # the tokens as the viewer is given every text from files: made printable (a newline shows as ⏎)
        assert [e["tokens"] for e in top["examples"]] == [[printable(t) for t in c.tokens] for c in card.contexts]
        assert written["activation_frequency"] == pytest.approx(card.frequency)
        assert written["act_max"] == pytest.approx(card.max_act)
