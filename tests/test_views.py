"""The inspector's text, built by pure functions: tested on results made by hand
or by the fake engine, with no app and no pilot."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lenstop.models.feature_cards import Context, FeatureCard
from lenstop.models.head_scores import head_scores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout
from lenstop.models.results import Continuation, Generation, LayerAttention, frozen_array
from lenstop.tui.card_text import card_text, sparkline
from lenstop.tui.session import Entry
from lenstop.tui.views import (
    analysed_text,
    feature_rows,
    header_text,
    intervention_mark,
    knocked_heads,
    pane_tabs,
    summary_text,
    token_shading,
)
from lenstop.tui.widgets.effects import shifts_text
from lenstop.tui.widgets.heads import heads_text
from lenstop.tui.widgets.predictions import predictions_text
from lenstop.tui.widgets.tokens import token_window

from fake_engine import FakeEngine

PROMPT = "def add(first, second): return first + second"


@pytest.fixture(scope="module")
def fake() -> FakeEngine:
    return FakeEngine()


def test_header_marks_the_layer_and_which_layers_have_dictionaries(fake: FakeEngine) -> None:
    info = fake.info()
    info = type(info)(**{**info.__dict__, "dictionaries": info.dictionaries[::2]})  # dictionaries at 0 and 2
    wide = header_text(info, "fake", 2, (5, " second"), True, compact=False)
    assert "layer 0 ·1 [2]" in wide and "pos 5 '·second'" in wide and "@ all positions" in wide
    assert "dict topk×2" in wide and "3 layers" in wide
    compact = header_text(info, "fake", 1, (5, "\n"), False, compact=True)
    assert compact == " lenstop fake · L1/2 · pos 5 '⏎' · @this token"
    assert header_text(None, "gpt2", 0, None, True, False) == " lenstop · gpt2 · loading…"


def test_an_ablated_feature_stays_listed_at_zero_with_its_mark(fake: FakeEngine) -> None:
    analysis = fake.analyse(PROMPT, [FeatureAblation(0, 13)])
    lf = analysis.layer(0)
    assert lf is not None
    last = len(analysis.tokens) - 1
    entries = (Entry(FeatureAblation(0, 13)), Entry(FeatureSteer(1, 7, 2.0)), Entry(FeatureClamp(0, 40, 1.0), False))
    rows = feature_rows(lf, last, entries)
    by_id = {r.feature: r for r in rows}
    assert by_id[13].act == 0.0 and by_id[13].mark == "✗" and by_id[13].label == "argument name, repeated"
    assert by_id[40].mark == " "  # switched off: listed, not marked
    assert 7 not in by_id or by_id[7].mark == " "  # the steer is at another layer
    top = [f.id for f in lf.features(last)]
    assert [r.feature for r in rows[: len(top)]] == top  # the token's own top features come first


def test_marks_and_knocked_heads(fake: FakeEngine) -> None:
    assert [intervention_mark(i) for i in (FeatureAblation(0, 1), FeatureSteer(0, 1, 1), FeatureClamp(0, 1, 1))] == [
        "✗",
        "⇢",
        "=",
    ]
    entries = (Entry(HeadKnockout(1, 2)), Entry(HeadKnockout(1, 3), False), Entry(HeadKnockout(0, 1)))
    assert knocked_heads(entries, 1) == frozenset({2})


def test_tokens_are_shaded_by_the_selected_feature_else_the_error(fake: FakeEngine) -> None:
    analysis = fake.analyse(PROMPT)
    lf = analysis.layer(0)
    values, title = token_shading(lf, 13, len(analysis.tokens))
    assert title == "tokens · shaded by L0 #13 'argument name, repeated'"
    assert values == pytest.approx(list(lf.activation_of(13)))
    values, title = token_shading(lf, 63, len(analysis.tokens))  # not active anywhere
    assert title.endswith("reconstruction error") and values == pytest.approx(list(lf.relative_error))
    assert token_shading(None, 13, 4) == ([0.0] * 4, "tokens")


def test_summary_and_tabs(fake: FakeEngine) -> None:
    analysis = fake.analyse(PROMPT, [FeatureSteer(0, 1, 3.0)], lens=True)
    last = len(analysis.tokens) - 1
    line = summary_text(analysis, last)
    first = analysis.predictions.at(last)[0]
    assert line.startswith(" next ") and first.token.replace(" ", "·") in line
    assert f"KL {float(analysis.kl[last]):.2f}" in line and "lens L0" in line
    assert pane_tabs("heads") == "1 features [2 heads] 3 predictions 4 effects"


def test_heads_show_every_source_binned_when_long_and_the_role() -> None:
    seq, tokens = 60, [f"t{i}" for i in range(60)]
    pattern = np.zeros((2, seq, seq), dtype=np.float32)
    for q in range(seq):
        pattern[0, q, max(0, q - 1)] = 1.0
        pattern[1, q, 0] = 1.0
    frozen = frozen_array(pattern, np.float32)
    attention = LayerAttention.from_pattern(0, frozen, head_scores(frozen, list(range(seq))))
    text = heads_text(attention, tokens, seq - 1, frozenset({1}), head=0, focused=False, width=60).plain
    lines = text.splitlines()
    assert "tokens a cell" in lines[0]  # 60 sources in 24 cells
    assert lines[1].startswith("▶H0") and "t58" in lines[1] and "prev-token 1.00" in lines[1]  # ▶: selected
    assert lines[2].startswith(" H1  ✗") and "t0" in lines[2]
    short = heads_text(attention, tokens, 3, frozenset(), 0, False, 60).plain.splitlines()
    assert "a cell" not in short[0] and short[1].count("█") == 2  # two cells a token when there is room


def test_predictions_mark_the_selected_layer(fake: FakeEngine) -> None:
    analysis = fake.analyse(PROMPT, lens=True)
    text = predictions_text(analysis, 3, 1, width=60, height=20).plain
    assert "▶L1" in text and " L0" in text and "lens" in text


def test_shifts_show_kl_and_both_continuations(fake: FakeEngine) -> None:
    analysis = fake.analyse(PROMPT, [FeatureSteer(0, 1, 3.0)])
    generation = Generation(
        "fake", PROMPT, Continuation((1,), (" a",), " a"), Continuation((2,), (" b",), " b"), (), 0.0, 0
    )
    text = shifts_text(analysis, 2, generation, "", width=60, height=20).plain
    assert text.startswith(f"KL(clean‖intervened) {float(analysis.kl[2]):.3f} nats at pos 2")
    assert "→" in text and "clean      ·a" in text and "intervened ·b" in text
    assert "no interventions active" in shifts_text(fake.analyse(PROMPT), 2, None, "", 60, 20).plain


def test_card_text_brackets_the_peak_and_shows_the_prompt_only_when_given() -> None:
    card = FeatureCard(5, "a name", 0.0123, 1.0, 4.0, (Context(("a", " b"), (0.5, 4.0), 1, 4.0),), (("x", 1.5),), ())
    text = card_text(2, 5, card).plain
    assert text.startswith("L2 #5  a name") and "fires on 1.2% of tokens" in text and "(from held-out text)" in text
    assert "a⟦·b⟧" in text and "promotes   x +1.50" in text and "this prompt" not in text
    with_prompt = card_text(2, 5, card, ("p", " q"), [0.0, 3.0], width=40).plain
    assert "this prompt\np ·q \n" in with_prompt and "█" in with_prompt
    assert "no feature cards" in card_text(2, 5, None).plain


def test_the_token_window_follows_the_cursor() -> None:
    cells = [f"tok{i}" for i in range(40)]
    rows = token_window(cells, width=30, max_rows=2, cursor=39)
    assert len(rows) == 2 and 39 in rows[-1]
    assert token_window(cells[:3], width=30, max_rows=2, cursor=0) == [[0, 1, 2]]


def test_counts_say_one_in_the_singular(fake: FakeEngine) -> None:
    """'1 interventions' and '1 tokens' were on the status line; a one-layer, one-head model said '1 layers'."""
    assert analysed_text(1, None, 1) == "1 token · analysed · 1 intervention"
    assert analysed_text(9, 0.012, 2) == "9 tokens · analysed in 12 ms · 2 interventions"
    one = replace(fake.info(), n_layers=1, n_heads=1, dictionaries=fake.info().dictionaries[:1])
    header = header_text(one, "fake", 0, None, True, compact=False)
    assert "· 1 layer ·" in header and "· 1 head ·" in header


def test_continuations_use_the_rows_they_have(fake: FakeEngine) -> None:
    """Zoomed, the effects pane has rows to spare: the continuations wrap over them instead of one clipped line."""
    analysis = fake.analyse(PROMPT, [FeatureSteer(0, 1, 3.0)])
    long_clean, long_steered = "c" * 150, "s" * 150
    generation = Generation(
        "fake", PROMPT, Continuation((1,), ("c",), long_clean), Continuation((2,), ("s",), long_steered), (), 0.0, 0
    )
    zoomed = shifts_text(analysis, 2, generation, "", width=61, height=30).plain
    assert zoomed.count("c") >= 150 and zoomed.count("s") >= 150 and "…" not in zoomed
    small = shifts_text(analysis, 2, generation, "", width=61, height=8).plain.splitlines()
    clean = [line for line in small if line.startswith("clean")]
    assert len(small) <= 8 and clean and clean[0].endswith("…")


def test_the_histogram_reads_in_blocks_and_a_card_says_where_each_part_comes_from() -> None:
    from lenstop.models.feature_cards import FeatureCard, FromWeights, Histogram, Quantile

    assert sparkline([0, 1, 8, 4]) == " ▁█▄"
    ctx = Context(("a", "b"), (0.5, 2.0), 1, 2.0)
    card = FeatureCard(
        3,
        "a label",
        0.25,
        1.0,
        2.0,
        (ctx,),
        (("x", 0.5),),
        (("y", -0.5),),
        weights=FromWeights(1.0, 7, ()),
        quantiles=(Quantile(0.4, 0.6, (ctx,)),),
        histogram=Histogram(4.0, (0, 2, 4, 0)),
        corpus="my files (2 files)",
        label_source="neuronpedia gpt2-small/1-res-jb",
    )
    text = card_text(1, 3, card).plain
    assert "label from neuronpedia gpt2-small/1-res-jb" in text
    assert "from the corpus: my files (2 files)" in text and "fires on 25" in text
    assert "activations 0  ▄█ 3" in text  # the empty top bin left off, so the edge is 3 of 4
    assert "activations 0.40 to 0.60" in text and "⟦b⟧" in text
    assert "7 tokens the model never produces left out" in text and "promotes   x +0.50" in text
