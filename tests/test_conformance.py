"""One contract, two engines: the real `Engine` on the bundled demo and the
`FakeEngine` the app's tests use must both keep every promise of
`EngineProtocol`, so the fake cannot drift from what the app really gets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.errors import CancelledError, IncompatibleError, LengthMismatchError, LenstopError, UsageError
from lenstop.models.head_scores import head_scores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout
from lenstop.models.protocol import EngineProtocol
from lenstop.models.results import ATTENTION_TOP, Analysis

from fake_engine import FakeEngine

PROMPT = "def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first"


@pytest.fixture(scope="module", params=["demo", "fake"])
def engine(request: pytest.FixtureRequest) -> EngineProtocol:
    if request.param == "fake":
        return FakeEngine()
    from lenstop.models.engine import Engine

    return Engine.load("demo", device="cpu")


@pytest.fixture(scope="module")
def clean(engine: EngineProtocol) -> Analysis:
    return engine.analyse(PROMPT, top_k=8, n_predictions=5, attention=True, lens=True)


def _top_feature(analysis: Analysis, layer: int) -> int:
    lf = analysis.layer(layer)
    assert lf is not None
    return lf.features(len(analysis.tokens) - 1)[0].id


def test_is_an_engine_protocol(engine: EngineProtocol) -> None:
    assert isinstance(engine, EngineProtocol)


def test_info_describes_the_model_and_its_dictionaries(engine: EngineProtocol) -> None:
    info = engine.info()
    assert info.n_layers > 0 and info.n_heads > 0 and info.n_ctx > 0 and info.d_vocab > 0
    layers = [d.layer for d in info.dictionaries]
    assert layers == sorted(layers) and all(0 <= layer < info.n_layers for layer in layers)
    assert all(d.d_sae > 0 and d.hook.startswith(f"blocks.{d.layer}.") for d in info.dictionaries)


def test_analysis_shapes_agree(engine: EngineProtocol, clean: Analysis) -> None:
    info, seq = engine.info(), len(clean.tokens)
    assert len(clean.token_ids) == seq and clean.prompt == PROMPT
    assert [lf.layer for lf in clean.layers] == [d.layer for d in info.dictionaries]
    assert [att.layer for att in clean.attention] == list(range(info.n_layers))
    assert len(clean.lens) == info.n_layers
    assert clean.predictions.ids.shape == (seq, 5) and len(clean.predictions.strings) == seq
    assert clean.interventions == () and clean.clean_predictions is None and clean.kl is None and clean.shifts is None


def test_features_are_sorted_positive_and_within_the_dictionary(engine: EngineProtocol, clean: Analysis) -> None:
    sizes = {d.layer: d.d_sae for d in engine.info().dictionaries}
    for lf in clean.layers:
        assert lf.top_ids.shape == lf.top_acts.shape == (len(clean.tokens), 8)
        assert (np.diff(lf.top_acts, axis=1) <= 0).all() and (lf.top_acts >= 0).all()
        assert (lf.top_ids >= 0).all() and (lf.top_ids < sizes[lf.layer]).all()
        assert list(lf.union_ids) == sorted(set(lf.top_ids[lf.top_acts > 0].tolist()))
        for pos in range(len(clean.tokens)):
            shown = lf.features(pos)
            assert all(f.act > 0 for f in shown) and int(lf.l0[pos]) >= len(shown)
            for f in shown:
                across = lf.activation_of(f.id)
                assert across is not None and across[pos] == pytest.approx(f.act)
        assert set(lf.labels) <= set(lf.union_ids.tolist())
        assert (lf.relative_error >= 0).all() and (lf.error_norm >= 0).all()


def test_attention_is_causal_and_normalised_with_head_scores(engine: EngineProtocol, clean: Analysis) -> None:
    seq, heads = len(clean.tokens), engine.info().n_heads
    for att in clean.attention:  # rows are whole: the demo's prompt is short, and the fake keeps its pattern
        assert att.n_heads == heads and att.keys.shape == att.weights.shape == (heads, seq, min(seq, ATTENTION_TOP))
        assert (np.diff(att.weights, axis=-1) <= 1e-7).all()  # strongest first
        dense = np.stack(
            [np.stack([np.pad(att.row(h, q), (0, seq - q - 1)) for q in range(seq)]) for h in range(heads)]
        )
        np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-4)
        assert np.abs(np.triu(dense, k=1)).max() < 1e-6  # nothing attends to the future
        expected = head_scores(dense, clean.token_ids)
        for got, want in zip(att.scores, expected, strict=True):
            for a, b in (
                (got.previous, want.previous),
                (got.duplicate, want.duplicate),
                (got.induction, want.induction),
            ):
                assert (a is None) == (b is None) and (a is None or a == pytest.approx(b, abs=1e-5))


def test_attention_is_read_for_the_layers_asked_for_or_one_layer_on_demand(
    engine: EngineProtocol, clean: Analysis
) -> None:
    seq, last = len(clean.tokens), engine.info().n_layers - 1
    assert engine.analyse(PROMPT, top_k=8, n_predictions=5).attention == ()  # none unless asked for
    some = engine.analyse(PROMPT, top_k=8, n_predictions=5, attention=[last, 0, last])
    assert [att.layer for att in some.attention] == [0, last]
    for layer in (0, last):
        whole = clean.attention_at(layer)
        assert whole is not None
        for one in (some.attention_at(layer), engine.attention(PROMPT, layer)):
            assert one is not None and one.layer == layer and one.n_heads == whole.n_heads
            for head in range(whole.n_heads):
                for q in range(seq):
                    np.testing.assert_allclose(one.row(head, q), whole.row(head, q), atol=1e-6)
            assert [s.previous for s in one.scores] == pytest.approx([s.previous for s in whole.scores], abs=1e-6)
    for bad in (last + 1, -1):
        with pytest.raises(UsageError, match=f"layer {bad} does not exist"):
            engine.attention(PROMPT, bad)
        with pytest.raises(UsageError, match=f"layer {bad} does not exist"):
            engine.analyse(PROMPT, attention=[bad])


def test_features_are_read_for_the_layers_asked_for_or_one_layer_on_demand(
    engine: EngineProtocol, clean: Analysis
) -> None:
    """Every dictionary's by default; with `features`, those at the layers named; `features()` reads one alone.
    Each equals the whole analysis's, clean and under an intervention."""
    last = engine.info().n_layers - 1
    ablation = [FeatureAblation(0, _top_feature(clean, 0))]
    whole = engine.analyse(PROMPT, ablation, top_k=8, n_predictions=5)
    assert [lf.layer for lf in whole.layers] == [d.layer for d in engine.info().dictionaries]
    some = engine.analyse(PROMPT, ablation, top_k=8, n_predictions=5, features=[last, last])
    assert [lf.layer for lf in some.layers] == [last]
    assert engine.analyse(PROMPT, top_k=8, n_predictions=5, features=False).layers == ()
    np.testing.assert_allclose(some.predictions.probs, whole.predictions.probs, atol=1e-6)
    for interventions, reference in (((), clean), (ablation, whole)):
        for layer in (0, last):
            expected, one = reference.layer(layer), engine.features(PROMPT, layer, interventions, top_k=8)
            assert expected is not None and (one.layer, one.dictionary) == (expected.layer, expected.dictionary)
            np.testing.assert_array_equal(one.top_ids, expected.top_ids)
            np.testing.assert_allclose(one.top_acts, expected.top_acts, atol=1e-6)
            np.testing.assert_allclose(one.error_norm, expected.error_norm, atol=1e-5)
    np.testing.assert_array_equal(some.layers[0].top_ids, whole.layers[-1].top_ids)
    for bad in (last + 1, -1):
        with pytest.raises(UsageError, match=f"layer {bad} does not exist"):
            engine.features(PROMPT, bad)


def test_the_logit_lens_of_one_position_is_that_of_every_position(engine: EngineProtocol, clean: Analysis) -> None:
    last = len(clean.tokens) - 1
    for position in (last, 2, -1):
        lens = engine.logit_lens(PROMPT, position, n=5)
        at = position % len(clean.tokens)
        assert lens.position == at and len(lens.layers) == len(clean.lens)
        for layer, top in enumerate(clean.lens):
            assert [p.id for p in lens.layers[layer]] == [int(i) for i in top.ids[at]]
            np.testing.assert_allclose([p.prob for p in lens.layers[layer]], top.probs[at], atol=1e-5)
    assert engine.analyse(PROMPT, lens=False).lens == ()


def test_predictions_are_a_sorted_distribution(clean: Analysis) -> None:
    for top in (clean.predictions, *clean.lens):
        assert (np.diff(top.probs, axis=1) <= 1e-7).all()
        assert (top.probs > 0).all() and (top.probs.sum(axis=1) <= 1 + 1e-5).all()


def test_a_lens_at_some_positions_is_those_rows_of_every_positions(engine: EngineProtocol, clean: Analysis) -> None:
    last = len(clean.tokens) - 1
    some = engine.analyse(PROMPT, top_k=8, n_predictions=5, lens=[-1, 0])
    assert some.lens_positions == (0, last) and len(some.lens) == len(clean.lens)
    for part, full in zip(some.lens, clean.lens, strict=True):
        np.testing.assert_array_equal(part.ids, full.ids[[0, last]])
        np.testing.assert_allclose(part.probs, full.probs[[0, last]], atol=1e-5)


def test_the_last_layers_lens_is_the_prediction(clean: Analysis) -> None:
    np.testing.assert_array_equal(clean.lens[-1].ids[:, 0], clean.predictions.ids[:, 0])


def test_an_empty_intervention_list_is_the_clean_analysis(engine: EngineProtocol, clean: Analysis) -> None:
    again = engine.analyse(PROMPT, (), top_k=8, n_predictions=5)
    np.testing.assert_array_equal(again.predictions.ids, clean.predictions.ids)
    np.testing.assert_allclose(again.predictions.probs, clean.predictions.probs, atol=1e-6)


def test_an_ablated_feature_reads_zero_keeps_its_label_and_moves_the_predictions(
    engine: EngineProtocol, clean: Analysis
) -> None:
    layer = clean.layers[-1].layer
    feature = _top_feature(clean, layer)
    ablated = engine.analyse(PROMPT, [FeatureAblation(layer, feature)], top_k=8, n_predictions=5)
    lf = ablated.layer(layer)
    assert lf is not None and feature not in lf.top_ids[lf.top_acts > 0]
    across = lf.activation_of(feature)
    assert across is None or not across.any()
    card = engine.card(layer, feature)
    if card is not None and card.label:  # its label still arrives, so the app can list it to restore it
        assert lf.labels[feature] == card.label
    assert ablated.clean_predictions is not None and ablated.kl is not None and ablated.shifts is not None
    np.testing.assert_array_equal(ablated.clean_predictions.ids, clean.predictions.ids)
    assert ablated.kl.shape == (len(clean.tokens),) and (ablated.kl >= 0).all() and ablated.kl.max() > 1e-4
    last = ablated.shifts[-1]
    assert {s.id for s in last} >= set(clean.predictions.ids[-1].tolist())


def test_a_clamped_feature_reads_its_value_everywhere(engine: EngineProtocol, clean: Analysis) -> None:
    layer = clean.layers[0].layer
    feature = _top_feature(clean, layer)
    clamped = engine.analyse(PROMPT, [FeatureClamp(layer, feature, 7.5)], top_k=8)
    lf = clamped.layer(layer)
    assert lf is not None
    np.testing.assert_allclose(lf.activation_of(feature), 7.5)


def test_an_intervention_at_a_position_leaves_earlier_positions_alone(engine: EngineProtocol, clean: Analysis) -> None:
    at = len(clean.tokens) - 4
    steered = engine.analyse(PROMPT, [FeatureSteer(clean.layers[0].layer, 1, 12.0, position=at)], n_predictions=5)
    assert steered.kl is not None
    assert steered.kl[:at].max() < 1e-5 and steered.kl[at:].max() > 1e-4
    assert steered.interventions == (FeatureSteer(clean.layers[0].layer, 1, 12.0, position=at),)


@pytest.mark.parametrize(
    "bad",
    [
        FeatureAblation(0, 10**7),
        FeatureSteer(99, 1, 1.0),
        HeadKnockout(0, 99),
        FeatureAblation(0, 1, position=10**4),
    ],
    ids=["feature", "layer", "head", "position"],
)
def test_out_of_range_interventions_are_usage_errors(engine: EngineProtocol, bad: object) -> None:
    with pytest.raises(UsageError):
        engine.analyse(PROMPT, [bad])  # type: ignore[list-item]


def test_a_prompt_longer_than_the_context_is_incompatible(engine: EngineProtocol) -> None:
    with pytest.raises(IncompatibleError, match="context"):
        engine.analyse(" x" * (engine.info().n_ctx + 5))


def test_generation_is_seeded_and_intervened_only_when_asked(engine: EngineProtocol) -> None:
    plain = engine.generate(PROMPT, max_new_tokens=4)
    assert plain.intervened is None and 1 <= len(plain.clean.token_ids) <= 4
    assert len(plain.clean.tokens) == len(plain.clean.token_ids)
    assert engine.generate(PROMPT, max_new_tokens=4) == plain
    steered = engine.generate(PROMPT, [HeadKnockout(0, 0)], max_new_tokens=4, seed=1)
    assert steered.intervened is not None and steered.interventions == (HeadKnockout(0, 0),)
    with pytest.raises(UsageError):
        engine.generate(PROMPT, max_new_tokens=0)


def test_cards_are_for_real_features_only(engine: EngineProtocol, clean: Analysis) -> None:
    layer = clean.layers[0].layer
    feature = _top_feature(clean, layer)
    card = engine.card(layer, feature)
    assert card is None or card.id == feature
    with pytest.raises(LenstopError):
        engine.card(layer, 10**7)


# ---------------------------------------------------------------- circuits
def test_attribution_ranks_nodes_and_resolves_the_metric(engine: EngineProtocol, clean: Analysis) -> None:
    found = engine.attribute(PROMPT, Metric(), top=12)
    last = len(clean.tokens) - 1
    assert found.metric.position == last and found.metric.target_id == int(clean.predictions.ids[last, 0])
    np.testing.assert_allclose(found.metric.clean, np.log(clean.predictions.probs[last, 0]), atol=1e-4)
    sizes = [abs(s.attribution) for s in found.nodes]
    assert 0 < len(found.nodes) <= 12 and sizes == sorted(sizes, reverse=True)
    assert all(s.node.position is None or s.node.position <= last for s in found.nodes)
    assert found.head_totals.shape == (engine.info().n_layers, engine.info().n_heads)
    assert found.target is None and found.corrupt_prompt is None and found.method == "gradient"
    assert json.loads(json.dumps(found.to_json()))["nodes"][0]["kind"] in ("feature", "error", "head", "mlp", "embed")


def test_a_wrong_token_makes_a_logit_difference(engine: EngineProtocol, clean: Analysis) -> None:
    second = clean.predictions.strings[-1][1]
    found = engine.attribute(PROMPT, Metric(wrong=second), top=3)
    assert found.metric.wrong == second and found.metric.is_logit_diff and found.metric.clean > 0
    with pytest.raises(UsageError):
        engine.attribute(PROMPT, Metric(target=second, wrong=second))


def test_following_a_node_explains_it_and_leaves_it_out(engine: EngineProtocol) -> None:
    top = engine.attribute(PROMPT, Metric(), top=None)
    head = next(s.node for s in top.nodes if s.node.kind == "head" and s.node.layer == 1)
    up = engine.attribute(PROMPT, Metric(), path=(head,), top=None)
    assert up.target == head and head not in {s.node for s in up.nodes}
    assert all(s.node.layer is None or s.node.layer <= 1 for s in up.nodes)
    with pytest.raises(UsageError):
        engine.attribute(PROMPT, Metric(), path=(Node("embed", None, 1),))
    with pytest.raises(UsageError):
        engine.attribute(PROMPT, Metric(), path=(head,), real=2)


def test_real_effects_come_with_the_top_nodes(engine: EngineProtocol) -> None:
    found = engine.attribute(PROMPT, Metric(), top=6, real=4)
    assert [s.real is not None for s in found.nodes] == [True] * 4 + [False] * 2
    again = engine.effects(PROMPT, Metric(), [s.node for s in found.nodes[:4]])
    np.testing.assert_allclose(again, [s.real for s in found.nodes[:4]], atol=1e-4)


def test_a_corrupted_prompt_must_line_up(engine: EngineProtocol) -> None:
    with pytest.raises(LengthMismatchError):
        engine.attribute(PROMPT, Metric(), corrupt=PROMPT + " x y")
    with pytest.raises(LengthMismatchError):
        engine.patch(PROMPT, PROMPT + " x y", Metric())


def test_direct_attribution_adds_up(engine: EngineProtocol) -> None:
    found = engine.direct(PROMPT, Metric(), sources=True)
    parts = found.embed + float(found.heads.sum()) + float(found.mlps.sum()) + found.bias + found.normaliser
    assert parts == pytest.approx(found.total, abs=1e-3)
    assert found.head_sources is not None and found.head_sources.shape[:2] == found.heads.shape


def test_patching_grids_progress_and_cancellation(engine: EngineProtocol, clean: Analysis) -> None:
    corrupt = PROMPT.replace("first", "other")
    seen: list[float] = []
    found = engine.patch(PROMPT, corrupt, Metric(), direction="corrupt->clean", features=3, progress=seen.append)
    info, seq = engine.info(), len(clean.tokens)
    assert found.resid.shape == (info.n_layers, seq) and found.heads.shape == (info.n_layers, info.n_heads)
    assert found.head_positions is not None and found.head_positions.shape == (info.n_layers, info.n_heads, seq)
    assert found.direction == "corrupt->clean" and len(found.features) <= 3
    assert seen and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(CancelledError):
        engine.patch(PROMPT, corrupt, Metric(), cancelled=lambda: True)
    with pytest.raises(UsageError):
        engine.patch(PROMPT, PROMPT, Metric())


def test_head_roles_cover_every_head(engine: EngineProtocol) -> None:
    roles = engine.head_roles()
    info = engine.info()
    assert len(roles.layers) == info.n_layers and all(len(layer) == info.n_heads for layer in roles.layers)
    assert all(0 <= (s.previous or 0) <= 1 for layer in roles.layers for s in layer)


def test_a_circuits_edges_join_its_nodes(engine: EngineProtocol) -> None:
    found = engine.circuit(PROMPT, Metric(), max_nodes=10)
    chosen = {s.node for s in found.nodes}
    assert 0 < len(chosen) <= 10 and all(s.node.kind in ("feature", "error", "head", "embed") for s in found.nodes)
    assert found.edges and all(e.source in chosen and (e.target is None or e.target in chosen) for e in found.edges)
    assert any(e.target is None for e in found.edges)
