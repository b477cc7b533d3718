"""Finding features on the demo: by a word of a label (and a misspelt one), by id, by a span of a prompt they fire
on (against every activation by SAELens on the Hugging Face model), and by a token they promote (against the
hand-written logit effects); through the Python API and `lenstop features`."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models import demo
from lenstop.models.engine import Engine
from lenstop.models.errors import ExitCode

from helpers import one_line

PROMPT = "def add(first, second):\n    return first + second\n"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load("demo", device="cpu")


def test_a_word_of_a_label_finds_the_features_labelled_with_it(engine: Engine) -> None:
    hits = engine.find_features(search="docstring", limit=500)
    labelled = {
        (d.layer, f) for d in engine.dictionaries for f, label in d.cards.all_labels().items() if "docstring" in label
    }
    exact = [h for h in hits if h.score == 1.0]
    assert len(labelled) > 20 and {(h.layer, h.feature) for h in exact} == labelled
    assert hits[: len(exact)] == exact  # the labels holding the words first, then the close ones
    fuzzy = engine.find_features(search="docstrng", limit=500)  # a typo still finds them
    assert labelled <= {(h.layer, h.feature) for h in fuzzy}
    assert all(h.score < 1.0 for h in fuzzy)
    (by_id,) = engine.find_features(search="L1:446")
    assert (by_id.layer, by_id.feature, by_id.label) == (1, 446, engine.label(1, 446))


def test_a_span_finds_what_fires_there_most(engine: Engine) -> None:
    from sae_lens import SAE
    from transformers import GPT2LMHeadModel

    tokens = engine.tokenize(PROMPT)
    start, stop = 8, 10  # '\n   ' and ' return'
    hf = GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR).eval()
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    best: list[tuple[float, int, int]] = []
    last: list[torch.Tensor] = []  # HF's last hidden state is after ln_f: the block's own output, by a hook
    handle = hf.transformer.h[2].register_forward_hook(
        lambda m, a, out: last.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        hf(tokens)
    handle.remove()
    for layer in range(3):
        sae = SAE.load_from_disk(str(demo.SAE_ROOT / f"L{layer}"), device="cpu")
        resid = hidden[layer + 1] if layer < 2 else last[0]
        with torch.no_grad():
            mean = sae.encode(resid)[0, start:stop].mean(0)
        maxima = engine.dictionary_at(layer).cards.max_acts()
        for f, m in enumerate(mean.tolist()):
            if m > 0 and maxima.get(f):
                best.append((m / maxima[f], layer, f))
    best.sort(reverse=True)
    hits = engine.find_features(prompt=PROMPT, span=(start, stop), limit=5)
    assert [(h.layer, h.feature) for h in hits] == [(layer, f) for _, layer, f in best[:5]]
    assert [h.score for h in hits] == pytest.approx([s for s, _, _ in best[:5]], rel=1e-3)


def test_a_token_finds_the_features_that_promote_it(engine: Engine) -> None:
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(demo.MODEL_DIR).eval()
    w_u = hf.lm_head.weight.detach().T
    column = (w_u[:, 1] - w_u.mean(1)) * hf.transformer.ln_f.weight.detach()  # token #1
    effects = []
    for layer in range(3):
        w_dec = load_file(demo.SAE_ROOT / f"L{layer}" / "sae_weights.safetensors")["W_dec"]
        e = (w_dec - w_dec.mean(1, keepdim=True)) @ column
        effects += [(float(v), layer, f) for f, v in enumerate(e.tolist())]
    effects.sort(reverse=True)
    hits = engine.find_features(promotes="#1", limit=4)
    assert [(h.layer, h.feature) for h in hits] == [(layer, f) for _, layer, f in effects[:4]]
    assert [h.score for h in hits] == pytest.approx([v for v, _, _ in effects[:4]], abs=1e-4)
    card = engine.card(hits[0].layer, hits[0].feature)  # the card opens from the result, and agrees
    assert card.promoted[0][0] == engine.token_strings([1])[0] or hits[0].score <= card.promoted[0][1] + 1e-4


def test_the_cli_finds_and_refuses_in_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["features", "--search", "docstring", "--limit", "3", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["features"]
    assert len(found) == 3 and all("docstring" in f["label"] for f in found)
    result = runner.invoke(app, ["features", "--span", "8:10", "-p", PROMPT, "--limit", "2"])
    assert result.exit_code == 0 and "its max" in result.output and "here" in result.output
    one_line(runner.invoke(app, ["features"]), ExitCode.USAGE, "--search", "--span", "--promotes")
    one_line(runner.invoke(app, ["features", "--span", "9:3", "-p", PROMPT]), ExitCode.USAGE, "A:B")
    one_line(runner.invoke(app, ["features", "--span", "0:99", "-p", PROMPT]), ExitCode.USAGE, "outside the prompt")
    one_line(runner.invoke(app, ["features", "--span", "1:2"]), ExitCode.USAGE, "needs the --prompt")
    one_line(runner.invoke(app, ["features", "--search", "L9:1"]), ExitCode.USAGE, "no dictionary at layer 9")


def test_a_span_at_bos_is_not_ruled_by_features_that_never_fired_on_the_corpus(engine: Engine) -> None:
    """A feature that fires only at BOS has no corpus maximum (the pass leaves BOS out): it is not scaled up."""
    hits = engine.find_features(prompt=PROMPT, span=(0, 3), limit=10)
    assert hits and all(h.score <= 1.5 for h in hits), [(h.layer, h.feature, h.score) for h in hits]


def test_two_dictionaries_at_one_layer_are_both_searched() -> None:
    engine = Engine.load("demo", [str(demo.SAE_ROOT / "L0"), "demo:transcoders"], device="cpu")
    hits = engine.find_features(search="docstring", limit=2000)
    assert {h.dictionary for h in hits if h.layer == 0} >= {"L0", engine.dictionaries.at(0, first=True).key} and len(
        {h.dictionary for h in hits}
    ) >= 3
    assert engine.find_features(promotes=" return", limit=5)
    assert engine.find_features(prompt=PROMPT, span=(3, 5), limit=5)
