"""The engine's numbers against independent references.

Features against SAELens's own `encode`; captures against TransformerLens's
`run_with_cache` and the Hugging Face model; interventions against hand-written
hooks that make the same edit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from lenstop.models.attention import AttentionCache
from lenstop.models.engine import Engine
from lenstop.models.errors import NumericError, UsageError
from lenstop.models.head_scores import head_scores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout, Intervention
from lenstop.models.results import LayerFeatures

from reference import bridge, hf_logits_with_resid_edit, hf_model, hf_residuals, hf_with_resid_edit, load_sae

PROMPT = "def add(first, second):\n    return first + second"
ATOL = 1e-5


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    return hf_model(tiny_model)


@pytest.fixture(scope="module")
def tokens(engine: Engine) -> torch.Tensor:
    return engine.tokenize(PROMPT)


# ------------------------------------------------------------------ clean run
def test_empty_intervention_list_reproduces_clean_logits(engine: Engine, hf, tokens) -> None:
    ours = engine.logits(PROMPT, ())
    with torch.no_grad():
        theirs = hf(tokens).logits[0]
    assert (ours - theirs).abs().max().item() < ATOL
    ref = bridge(engine.model.cfg.model_name)
    with torch.no_grad():
        plain = ref(tokens)[0]
    assert (ours - plain).abs().max().item() < ATOL


def test_tokens_include_bos_when_the_dictionaries_were_trained_with_it(engine: Engine, tokens) -> None:
    analysis = engine.analyse(PROMPT)
    assert analysis.token_ids[0] == engine.model.tokenizer.bos_token_id
    assert list(analysis.token_ids) == tokens[0].tolist()
    assert "".join(analysis.tokens[1:]) == PROMPT


def test_features_equal_saelens_encode_on_run_with_cache(engine: Engine, resid_saes: Path, tokens) -> None:
    analysis = engine.analyse(PROMPT, top_k=6)
    ref = bridge(engine.model.cfg.model_name)
    with torch.no_grad():
        _, cache = ref.run_with_cache(tokens)
    assert [lf.layer for lf in analysis.layers] == [0, 1]
    for lf in analysis.layers:
        sae = load_sae(resid_saes / f"L{lf.layer}")
        with torch.no_grad():
            x = cache[f"blocks.{lf.layer}.hook_resid_pre"][0]
            acts = sae.encode(x)
            recon = sae.decode(acts)
        expected = acts.topk(6, dim=-1)
        np.testing.assert_allclose(lf.top_acts, expected.values.clamp_min(0).numpy(), atol=ATOL)
        for pos in range(len(analysis.tokens)):
            active = expected.values[pos] > 0
            assert [f.id for f in lf.features(pos)] == expected.indices[pos][active].tolist()
            acts_here = [f.act for f in lf.features(pos)]
            assert acts_here == sorted(acts_here, reverse=True) and all(a > 0 for a in acts_here)
        for feature in lf.union_ids[:5]:
            np.testing.assert_allclose(lf.activation_of(int(feature)), acts[:, feature].numpy(), atol=ATOL)
        np.testing.assert_allclose(lf.error_norm, (x - recon).norm(dim=-1).numpy(), atol=1e-4)
        np.testing.assert_array_equal(lf.l0, (acts > 0).sum(-1).numpy())


def test_attention_patterns_equal_hf_and_run_with_cache(engine: Engine, hf, tokens) -> None:
    analysis = engine.analyse(PROMPT, full_attention=True)
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    _, cache = bridge(engine.model.cfg.model_name).run_with_cache(tokens)
    assert len(analysis.attention) == engine.n_layers
    for att in analysis.attention:
        np.testing.assert_allclose(att.pattern, out.attentions[att.layer][0].numpy(), atol=ATOL)
        np.testing.assert_allclose(att.pattern, cache[f"blocks.{att.layer}.attn.hook_pattern"][0].numpy(), atol=ATOL)
        assert att.pattern is not None
        for head in range(att.n_heads):  # the strongest keys kept are the pattern's own largest weights
            q = len(analysis.tokens) - 1
            order = np.argsort(-att.pattern[head, q], kind="stable")[: att.keys.shape[-1]]
            np.testing.assert_allclose(att.weights[head, q], att.pattern[head, q][order], atol=1e-6)


def test_one_layers_attention_read_on_demand_equals_hf_and_the_cut_pass_leaves_nothing_behind(
    engine: Engine, hf, tokens
) -> None:
    """`Engine.attention` stops its pass once the layer's pattern exists: the pattern and head scores must be
    the model's own, and the pass cut short must leave the model as it was."""
    engine.reader.cache.attention = AttentionCache()  # each layer read by a pass of its own
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    for layer in range(engine.n_layers):
        att = engine.attention(PROMPT, layer, full=True)
        assert att.pattern is not None and att.layer == layer
        np.testing.assert_allclose(att.pattern, out.attentions[layer][0].numpy(), atol=ATOL)
        expected = head_scores(out.attentions[layer][0].numpy(), tokens[0].tolist())
        assert [s.previous for s in att.scores] == pytest.approx([s.previous for s in expected], abs=1e-5)
        assert [s.induction for s in att.scores] == pytest.approx([s.induction for s in expected], abs=1e-5)
        bare = engine.attention(PROMPT, layer)  # from the cache, without the square it was not asked for
        assert bare.pattern is None
        np.testing.assert_array_equal(bare.keys, att.keys)
    assert (engine.logits(PROMPT) - out.logits[0]).abs().max().item() < ATOL


def test_attention_under_an_intervention_is_the_edited_models_and_downstream_ones_share_the_clean(
    engine: Engine, resid_saes: Path, hf, tokens
) -> None:
    """A steer at layer 0's resid_pre changes every layer's attention as the same edit made by hand in the
    Hugging Face model does; one at layer 1 cannot reach layer 0, whose reading is then the clean one, reused."""
    direction = load_sae(resid_saes / "L0").W_dec[11].detach()
    steer = FeatureSteer(0, 11, 6.0)
    engine.reader.cache.attention = AttentionCache()
    out = hf_with_resid_edit(hf, tokens, 0, lambda resid: resid + 6.0 * direction, output_attentions=True)
    with torch.no_grad():
        clean = hf(tokens, output_attentions=True)
    for layer in range(engine.n_layers):
        att = engine.attention(PROMPT, layer, [steer], full=True)
        assert att.pattern is not None
        np.testing.assert_allclose(att.pattern, out.attentions[layer][0].numpy(), atol=ATOL)
        assert np.abs(att.pattern - clean.attentions[layer][0].numpy()).max() > 1e-3  # the steer reached it
    layer0 = engine.attention(PROMPT, 0)
    assert engine.attention(PROMPT, 0, [FeatureSteer(1, 2, 4.0), HeadKnockout(1, 0)]) is layer0
    analysed = engine.analyse(PROMPT, [FeatureSteer(1, 2, 4.0)], attention=[0, 1])
    assert analysed.attention[0] is layer0  # read before: no pass spent on it
    assert engine.attention(PROMPT, 1, [FeatureSteer(1, 2, 4.0)]) is analysed.attention[1]  # read by the analysis
    with pytest.raises(NumericError, match="NaN or infinite"):
        engine.attention(PROMPT, 1, [FeatureSteer(0, 11, float("inf"))])


def test_the_attention_cache_lets_the_least_recently_used_go_past_its_budget() -> None:
    from lenstop.models.results import LayerAttention

    def reading(layer: int) -> LayerAttention:  # 2 heads, 4 queries, 4 keys
        return LayerAttention.from_pattern(layer, np.full((2, 4, 4), 0.25, dtype=np.float32))

    size = reading(0).nbytes
    assert size == 2 * 4 * 4 * (8 + 4)  # int64 keys, float32 weights
    cache = AttentionCache(budget=3 * size)
    keys = [((1, 2, 3, 4), (), layer, "attention") for layer in range(4)]
    for key in keys[:3]:
        cache.put(key, reading(key[2]))
    assert cache.get(keys[0]) is not None  # used: now the most recent
    cache.put(keys[3], reading(3))
    assert len(cache) == 3 and cache.get(keys[1]) is None
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.get(keys[0], full=True) is None  # read without its square: a full reading is not there
    whole = LayerAttention.from_pattern(9, np.full((2, 4, 4), 0.25, dtype=np.float32), keep=True)
    assert whole.nbytes == size + 2 * 4 * 4 * 4
    cache.put(((9,), (), 9, "attention"), whole)  # two others make room
    assert cache.get(((9,), (), 9, "attention"), full=True) is whole and len(cache) == 2
    AttentionCache(budget=100).put(keys[0], whole)  # larger than the whole budget: not kept, no error


def test_logit_lens_equals_final_norm_and_unembedding_of_each_residual(engine: Engine, hf, tokens) -> None:
    analysis = engine.analyse(PROMPT, n_predictions=5, lens=True)
    resids = hf_residuals(hf, tokens)  # resid_pre of each block, then the final resid_post
    for layer, top in enumerate(analysis.lens):
        resid_post = resids[layer + 1]
        with torch.no_grad():
            probs = hf.lm_head(hf.transformer.ln_f(resid_post)).softmax(-1)
        expected = probs.topk(5, dim=-1)
        np.testing.assert_array_equal(top.ids, expected.indices.numpy())
        np.testing.assert_allclose(top.probs, expected.values.numpy(), atol=ATOL)
    # The last layer's lens is the model's own prediction.
    np.testing.assert_array_equal(analysis.lens[-1].ids, analysis.predictions.ids)


def test_predictions_are_the_softmax_of_the_logits(engine: Engine, hf, tokens) -> None:
    analysis = engine.analyse(PROMPT, n_predictions=3)
    with torch.no_grad():
        probs = hf(tokens).logits[0].softmax(-1)
    expected = probs.topk(3, dim=-1)
    np.testing.assert_array_equal(analysis.predictions.ids, expected.indices.numpy())
    np.testing.assert_allclose(analysis.predictions.probs, expected.values.numpy(), atol=ATOL)
    assert analysis.predictions.at(0)[0].token == engine.model.tokenizer.decode([int(expected.indices[0, 0])])


# ------------------------------------------------------------------ interventions
def _feature(engine: Engine, layer: int, position: int = -1) -> tuple[int, float]:
    lf = engine.analyse(PROMPT).layer(layer)
    top = lf.features(position)[0]
    return top.id, top.act


def _sae_and_acts(engine: Engine, resid_saes: Path, hf, tokens, layer: int):
    sae = load_sae(resid_saes / f"L{layer}")
    x = hf_residuals(hf, tokens)[layer]
    with torch.no_grad():
        return sae, sae.encode(x)


def test_ablation_equals_subtracting_the_features_decoder_row(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    feature, _ = _feature(engine, 1)
    sae, acts = _sae_and_acts(engine, resid_saes, hf, tokens, 1)
    expected = hf_logits_with_resid_edit(hf, tokens, 1, lambda x: x - acts[:, feature, None] * sae.W_dec[feature])
    ours = engine.logits(PROMPT, [FeatureAblation(1, feature)])
    assert (ours - expected).abs().max().item() < ATOL
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-4  # the edit did something


def test_steer_adds_strength_times_the_raw_decoder_row(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    sae = load_sae(resid_saes / "L0")
    expected = hf_logits_with_resid_edit(hf, tokens, 0, lambda x: x + 6.0 * sae.W_dec[11])
    ours = engine.logits(PROMPT, [FeatureSteer(0, 11, 6.0)])
    assert (ours - expected).abs().max().item() < ATOL
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-3


def test_clamp_sets_the_feature_keeping_the_error(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    sae, acts = _sae_and_acts(engine, resid_saes, hf, tokens, 1)
    feature = 7
    expected = hf_logits_with_resid_edit(
        hf, tokens, 1, lambda x: x + (3.0 - acts[:, feature, None]) * sae.W_dec[feature]
    )
    ours = engine.logits(PROMPT, [FeatureClamp(1, feature, 3.0)])
    assert (ours - expected).abs().max().item() < ATOL
    # Clamping a feature to its own value changes nothing.
    analysis = engine.analyse(PROMPT, [FeatureClamp(1, feature, 3.0)], top_k=64)
    assert np.allclose(analysis.layer(1).activation_of(feature), 3.0)


def test_intervention_at_one_position_edits_only_that_position(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    sae = load_sae(resid_saes / "L1")
    pos = 5

    def edit(x: torch.Tensor) -> torch.Tensor:
        x[pos] += 4.0 * sae.W_dec[2]
        return x

    expected = hf_logits_with_resid_edit(hf, tokens, 1, edit)
    ours = engine.logits(PROMPT, [FeatureSteer(1, 2, 4.0, position=pos)])
    clean = engine.logits(PROMPT)
    assert (ours - expected).abs().max().item() < ATOL
    assert (ours[:pos] - clean[:pos]).abs().max().item() < ATOL  # causal: earlier positions untouched
    assert (ours[pos] - clean[pos]).abs().max().item() > 1e-3
    # Negative positions count from the end of the prompt.
    last = len(tokens[0]) - 1
    assert torch.allclose(
        engine.logits(PROMPT, [FeatureSteer(1, 2, 4.0, position=-1)]),
        engine.logits(PROMPT, [FeatureSteer(1, 2, 4.0, position=last)]),
    )


def test_head_knockout_equals_zeroing_the_heads_slice_in_hf(engine: Engine, hf, tokens) -> None:
    layer, head = 0, 2
    d_head = engine.model.cfg.d_head

    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * d_head : (head + 1) * d_head] = 0
        return (x,)

    handle = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero_head)
    with torch.no_grad():
        expected = hf(tokens).logits[0]
    handle.remove()
    ours = engine.logits(PROMPT, [HeadKnockout(layer, head)])
    assert (ours - expected).abs().max().item() < ATOL
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-4


def test_intervened_analysis_reports_clean_predictions_kl_and_shifts(engine: Engine) -> None:
    steer = FeatureSteer(1, 3, 8.0)
    analysis = engine.analyse(PROMPT, [steer], n_predictions=4)
    clean = engine.analyse(PROMPT, n_predictions=4)
    np.testing.assert_array_equal(analysis.clean_predictions.ids, clean.predictions.ids)
    clean_lp = engine.logits(PROMPT).log_softmax(-1)
    lp = engine.logits(PROMPT, [steer]).log_softmax(-1)
    kl = (clean_lp.exp() * (clean_lp - lp)).sum(-1)
    np.testing.assert_allclose(analysis.kl, kl.numpy(), atol=1e-5)
    last = analysis.shifts[-1]
    top_clean = clean.predictions.at(-1)[0]
    shift = next(s for s in last if s.id == top_clean.id)
    assert shift.clean_prob == pytest.approx(top_clean.prob, abs=1e-6)
    assert shift.prob == pytest.approx(float(lp[-1, top_clean.id].exp()), abs=1e-6)
    assert shift.delta_logprob == pytest.approx(float(lp[-1, top_clean.id] - clean_lp[-1, top_clean.id]), abs=1e-4)


def test_ablated_feature_reads_zero_in_the_analysis(engine: Engine) -> None:
    feature, act = _feature(engine, 0, position=3)
    assert act > 0
    analysis = engine.analyse(PROMPT, [FeatureAblation(0, feature)], top_k=64)
    assert feature not in [f.id for f in analysis.layer(0).features(3)]


# ------------------------------------------------------------------ generation
def test_clean_greedy_generation_equals_hf_generate(engine: Engine, hf, tokens) -> None:
    result = engine.generate(PROMPT, max_new_tokens=6)
    with torch.no_grad():
        out = hf.generate(tokens, max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = out[0, tokens.shape[-1] :].tolist()
    eos = engine.model.tokenizer.eos_token_id
    if eos in expected:
        expected = expected[: expected.index(eos) + 1]
    assert list(result.clean.token_ids) == expected
    assert result.intervened is None


def test_steering_applies_to_every_generated_token(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    sae = load_sae(resid_saes / "L1")
    strength, feature = 12.0, 4
    seq = tokens.clone()
    expected: list[int] = []
    for _ in range(5):
        logits = hf_logits_with_resid_edit(hf, seq, 1, lambda x: x + strength * sae.W_dec[feature])
        nxt = int(logits[-1].argmax())
        expected.append(nxt)
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=-1)
    result = engine.generate(PROMPT, [FeatureSteer(1, feature, strength)], max_new_tokens=5)
    assert list(result.intervened.token_ids[:5]) == expected[: len(result.intervened.token_ids)]


def test_sampling_is_seeded_and_shared_by_both_runs(engine: Engine) -> None:
    a = engine.generate(PROMPT, [HeadKnockout(1, 0)], max_new_tokens=8, temperature=1.0, seed=3)
    b = engine.generate(PROMPT, [HeadKnockout(1, 0)], max_new_tokens=8, temperature=1.0, seed=3)
    c = engine.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=4)
    assert a.clean == b.clean and a.intervened == b.intervened
    assert a.clean != c.clean


def test_cached_generation_equals_rerunning_the_whole_sequence(engine: Engine, resid_saes: Path, hf, tokens) -> None:
    """With a KV cache, an intervention at a prompt position acts once, on the prompt, and one at every
    position acts on each new token too: the same tokens as re-running everything at every step."""
    sae = load_sae(resid_saes / "L1")
    interventions = [FeatureSteer(1, 4, 9.0, position=3), FeatureSteer(1, 6, 5.0)]

    def edit(x: torch.Tensor) -> torch.Tensor:
        x = x + 5.0 * sae.W_dec[6]
        x[3] += 9.0 * sae.W_dec[4]
        return x

    seq = tokens.clone()
    expected: list[int] = []
    for _ in range(6):
        nxt = int(hf_logits_with_resid_edit(hf, seq, 1, edit)[-1].argmax())
        expected.append(nxt)
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=-1)
    result = engine.generate(PROMPT, interventions, max_new_tokens=6)
    assert result.intervened is not None
    assert list(result.intervened.token_ids) == expected[: len(result.intervened.token_ids)]
    assert len(result.intervened.token_ids) >= 3


def test_kept_attention_draws_what_the_whole_pattern_draws(engine: Engine) -> None:
    """Beyond ATTENTION_TOP keys, an analysis keeps each query's strongest: every weight the heads pane
    shades (0.05 and up) is among them, so its drawing is the same as from the whole square."""
    from lenstop.models.results import ATTENTION_TOP, LayerAttention
    from lenstop.tui.widgets.heads import heads_text

    prompt = "for i in range(10):\n    print(i, i * i)\n" * 2
    full = engine.analyse(prompt, full_attention=True)
    kept = engine.analyse(prompt, attention=True)
    seq = len(full.tokens)
    assert seq > ATTENTION_TOP and all(att.pattern is None for att in kept.attention)
    for whole, sparse in zip(full.attention, kept.attention, strict=True):
        assert whole.pattern is not None
        for head in range(whole.n_heads):
            for q in range(seq):
                strong = whole.pattern[head, q, : q + 1] >= 1 / ATTENTION_TOP
                np.testing.assert_allclose(
                    sparse.row(head, q)[strong], whole.pattern[head, q, : q + 1][strong], atol=1e-6
                )
        drawn = [heads_text(a, full.tokens, seq - 1, frozenset(), 0, False, 90).plain for a in (whole, sparse)]
        assert drawn[0] == drawn[1]
        bare = LayerAttention(whole.layer, whole.keys, whole.weights, whole.scores)
        assert bare.row(1, seq - 1).shape == (seq,)


@contextmanager
def blocks_run(engine: Engine) -> Iterator[list[int]]:
    """The layers whose attention started to run, in order."""
    ran: list[int] = []
    handles = [
        block.attn.register_forward_pre_hook(lambda module, args, layer=layer: ran.append(layer))
        for layer, block in enumerate(engine.model.blocks)
    ]
    try:
        yield ran
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("layer", [0, 1])
def test_an_intervened_analysis_reusing_the_clean_prompt_equals_one_computed_whole(engine: Engine, layer: int) -> None:
    """Layers before the first intervened one read as on the clean prompt: an analysis after a clean one
    reuses their readings and replays their blocks' outputs instead of running them, and must equal an
    analysis that runs and reads every layer again: features, attention, predictions, KL, logit lens."""
    interventions = [FeatureAblation(layer, 3), FeatureSteer(1, 5, 3.0)]
    engine.analyse(PROMPT, attention=True)
    with blocks_run(engine) as ran:
        reused = engine.analyse(PROMPT, interventions, attention=True, lens=True)
    assert ran == list(range(layer, engine.n_layers))  # the blocks before the intervention did not run
    engine.reader.cache.features.clear()  # forget the clean analysis
    engine.reader.cache.blocks = None
    engine.reader.cache.attention = AttentionCache()
    with blocks_run(engine) as ran:
        whole = engine.analyse(PROMPT, interventions, attention=True, lens=True)
    assert ran == list(range(engine.n_layers))
    for a, b in zip(reused.layers, whole.layers, strict=True):
        np.testing.assert_array_equal(a.top_ids, b.top_ids)
        np.testing.assert_allclose(a.top_acts, b.top_acts, atol=1e-6)
        np.testing.assert_allclose(a.union_values, b.union_values, atol=1e-6)
        np.testing.assert_allclose(a.error_norm, b.error_norm, atol=1e-5)
    for a, b in zip(reused.attention, whole.attention, strict=True):
        np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)
        assert [(s.previous, s.induction) for s in a.scores] == [(s.previous, s.induction) for s in b.scores]
    np.testing.assert_allclose(reused.predictions.probs, whole.predictions.probs, atol=1e-6)
    assert reused.kl is not None and whole.kl is not None and whole.kl.max() > 1e-4
    np.testing.assert_allclose(reused.kl, whole.kl, atol=1e-5)
    assert len(reused.lens) == len(whole.lens) == engine.n_layers
    for a, b in zip(reused.lens, whole.lens, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_one_layers_attention_after_a_clean_analysis_runs_that_layer_alone(engine: Engine, hf, tokens) -> None:
    """After a clean analysis of the prompt, reading a layer's attention replays the blocks before it: only
    the layer's own attention runs, and its pattern is still the model's."""
    engine.analyse(PROMPT)
    engine.reader.cache.attention = AttentionCache()
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    for layer in range(engine.n_layers):
        with blocks_run(engine) as ran:
            att = engine.attention(PROMPT, layer, full=True)
        assert ran == [layer] and att.pattern is not None
        np.testing.assert_allclose(att.pattern, out.attentions[layer][0].numpy(), atol=ATOL)
    assert all("forward" not in block.__dict__ for block in engine.model.blocks)  # every block runs again
    assert (engine.logits(PROMPT) - out.logits[0]).abs().max().item() < ATOL


def test_no_dictionarys_dense_activations_outlive_its_hook(engine: Engine) -> None:
    """Each dictionary's (seq, d_sae) activations are reduced in its hook and let go: by the last block, none
    is alive. Kept until the pass ended, they had doubled an analysis's peak memory on GPT-2 small."""
    import gc

    d_sae = engine.dictionaries[0].d_sae
    seq = engine.tokenize(PROMPT).shape[-1]
    alive: list[int] = []

    def count(resid: torch.Tensor, hook: object) -> None:
        gc.collect()
        dense = [o for o in gc.get_objects() if type(o) is torch.Tensor and tuple(o.shape) == (1, seq, d_sae)]
        alive.append(len(dense))

    with engine.hooks([(f"blocks.{engine.n_layers - 1}.hook_resid_post", count)]):
        analysis = engine.analyse(PROMPT, top_k=6)
    assert alive == [0] and len(analysis.layers) == len(engine.dictionaries) >= 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nan_or_infinite_output_is_told_from_a_large_finite_one_in_every_dtype(dtype: torch.dtype) -> None:
    """The check reads the logits' sum where it cannot overflow (float32) and every value where it can: a
    float16 sum of 10^6 logits of 100 overflows to inf although every logit is finite."""
    from lenstop.models.runtime.handle import check_finite_output as _finite

    knock = [HeadKnockout(0, 0)]
    large = torch.full((1000, 1000), 100.0, dtype=dtype)
    assert _finite(large, knock) is large
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = large.clone()
        broken[3, 7] = bad
        with pytest.raises(NumericError, match="NaN or infinite"):
            _finite(broken, knock)
    assert _finite(broken, ()) is broken  # without interventions the model's own output is what it is


def test_a_replay_that_fails_runs_every_block_and_replays_no_more(
    tiny_model: Path, resid_saes: Path, hf, tokens
) -> None:
    """A model whose blocks hand on state beside their outputs (keys and values shared across layers) fails
    when earlier blocks are replayed: the engine then runs every block, and replays no more."""
    interventions = [FeatureAblation(1, 3)]
    whole = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu").analyse(PROMPT, interventions)
    for read in ("analysis", "attention", "features"):
        engine = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu")
        engine.analyse(PROMPT)
        assert engine.reader.cache.blocks is not None
        ids, outputs = engine.reader.cache.blocks
        engine.reader.cache.blocks = (ids, {layer: "what block 0 did not hand on" for layer in outputs})
        if read == "analysis":
            got = engine.analyse(PROMPT, interventions)
            np.testing.assert_allclose(got.predictions.probs, whole.predictions.probs, atol=1e-6)
            assert got.kl is not None and whole.kl is not None
            np.testing.assert_allclose(got.kl, whole.kl, atol=1e-6)
        elif read == "features":
            _same_reading(engine.features(PROMPT, 1, interventions), whole.layer(1))
        else:
            att = engine.attention(PROMPT, 1, full=True)
            with torch.no_grad():
                expected = hf(tokens, output_attentions=True).attentions[1][0].numpy()
            np.testing.assert_allclose(att.pattern, expected, atol=ATOL)
        assert not engine.reader.passes.replay_ok and engine.reader.cache.blocks is None
        assert all("forward" not in block.__dict__ for block in engine.model.blocks)


def test_models_whose_layers_share_state_are_never_replayed(engine: Engine) -> None:
    from types import SimpleNamespace

    from lenstop.models.replay import supported

    def model(**fields: object) -> object:
        return SimpleNamespace(original_model=SimpleNamespace(config=SimpleNamespace(**fields)))

    assert supported(engine.model) and supported(model(num_kv_shared_layers=0))
    assert not supported(model(num_kv_shared_layers=2))  # Gemma 3n, Gemma 4: keys and values shared on
    assert not supported(model(text_config=SimpleNamespace(altup_num_inputs=4)))


def _same_reading(a: LayerFeatures | None, b: LayerFeatures | None) -> None:
    assert a is not None and b is not None and (a.layer, a.dictionary) == (b.layer, b.dictionary)
    np.testing.assert_array_equal(a.top_ids, b.top_ids)
    np.testing.assert_allclose(a.top_acts, b.top_acts, atol=1e-6)
    np.testing.assert_array_equal(a.union_ids, b.union_ids)
    np.testing.assert_allclose(a.union_values, b.union_values, atol=1e-6)
    np.testing.assert_allclose(a.error_norm, b.error_norm, atol=1e-5)
    np.testing.assert_array_equal(a.l0, b.l0)
    assert dict(a.labels) == dict(b.labels)


def _forget(engine: Engine) -> None:
    """No reading kept, no clean blocks to replay, no clean distribution: the next call starts afresh."""
    engine.forget()
    assert (
        len(engine.reader.cache.features) == len(engine.reader.cache.attention) == 0
        and engine.reader.cache.blocks is None
    )


def test_one_dictionarys_features_read_on_demand_equal_saelens_and_the_pass_stops_at_its_hook(
    engine: Engine, resid_saes: Path, tokens
) -> None:
    """`Engine.features` reads a dictionary by a pass that stops once its hook has fired: the blocks after
    it do not start, and the reading is SAELens's own encode of the model's activations."""
    _, cache = bridge(engine.model.cfg.model_name).run_with_cache(tokens)
    for d in engine.dictionaries:
        _forget(engine)
        with blocks_run(engine) as ran:
            got = engine.features(PROMPT, d.layer, top_k=6)
        assert ran == list(range(d.layer))  # its hook_resid_pre fires before its block's attention starts
        with torch.no_grad():
            acts = load_sae(resid_saes / f"L{d.layer}").encode(cache[d.hook_in][0])
        np.testing.assert_allclose(got.top_acts, acts.topk(6, dim=-1).values.clamp_min(0).numpy(), atol=ATOL)
        np.testing.assert_array_equal(got.l0, (acts > 0).sum(-1).numpy())
        assert engine.features(PROMPT, d.layer, top_k=6) is got  # kept: a second read costs no pass
    assert all("forward" not in block.__dict__ for block in engine.model.blocks)


@pytest.mark.parametrize(
    "interventions",
    [[FeatureAblation(0, 3)], [FeatureSteer(1, 5, 3.0)], [HeadKnockout(0, 1), FeatureClamp(1, 7, 2.0)]],
    ids=["ablate-0", "steer-1", "knock-0-clamp-1"],
)
def test_features_read_on_demand_under_interventions_equal_a_whole_analysis(
    engine: Engine, interventions: list[Intervention]
) -> None:
    """Each dictionary's features read alone, with and without the clean blocks to replay, equal those of an
    analysis that reads every layer at once; after a clean analysis only the blocks from the first
    intervention on run."""
    _forget(engine)
    whole = engine.analyse(PROMPT, interventions, top_k=6)
    first = min(iv.layer for iv in interventions)
    for replayed in (False, True):
        for d in engine.dictionaries:
            _forget(engine)
            if replayed:
                engine.analyse(PROMPT, top_k=6)
                engine.reader.cache.features.clear()  # the clean readings go, the clean blocks stay
            with blocks_run(engine) as ran:
                got = engine.features(PROMPT, d.layer, interventions, top_k=6)
            assert ran == list(range(min(first, d.layer) if replayed else 0, d.layer))
            _same_reading(got, whole.layer(d.layer))


def test_an_update_reads_only_the_dictionaries_asked_for_and_those_it_edits(engine: Engine) -> None:
    """An intervened analysis with `features=[layer]` encodes the edited dictionary (an ablation must know the
    feature's activation) and the one asked for, none other; a steer needs no encode at all."""
    encoded: list[int] = []
    originals = {d.key: d.sae.encode for d in engine.dictionaries}
    for d in engine.dictionaries:
        d.sae.encode = lambda x, d=d: encoded.append(d.layer) or originals[d.key](x)  # type: ignore[method-assign]
    try:
        _forget(engine)
        engine.analyse(PROMPT, top_k=6)
        encoded.clear()
        steered = engine.analyse(PROMPT, [FeatureSteer(0, 5, 3.0)], top_k=6, features=[1])
        assert encoded == [1] and [lf.layer for lf in steered.layers] == [1]
        engine.forget()
        engine.analyse(PROMPT, top_k=6)
        encoded.clear()
        unembedded: list[int] = []
        handle = engine.model.unembed.register_forward_hook(lambda *args: unembedded.append(1))
        try:
            with blocks_run(engine) as ran:  # the first intervention on the prompt: its clean distribution too
                ablated = engine.analyse(PROMPT, [FeatureAblation(1, 3)], top_k=6, features=[0], lens=False)
        finally:
            handle.remove()
        assert ran == [1] and unembedded == [1]  # the clean distribution is the clean analysis's logits'
        assert encoded == [1] and [lf.layer for lf in ablated.layers] == [0]  # layer 0's: the clean reading
        assert ablated.layers[0] is engine.analyse(PROMPT, top_k=6).layer(0)
    finally:
        for d in engine.dictionaries:
            del d.sae.encode
    _forget(engine)
    whole = engine.analyse(PROMPT, [FeatureSteer(0, 5, 3.0)], top_k=6)
    _same_reading(steered.layer(1), whole.layer(1))
    np.testing.assert_allclose(steered.predictions.probs, whole.predictions.probs, atol=1e-6)
    assert steered.kl is not None and whole.kl is not None
    np.testing.assert_allclose(steered.kl, whole.kl, atol=1e-6)


def test_coming_back_to_the_clean_prompt_runs_no_block(engine: Engine, hf, tokens) -> None:
    """Once every layer the clean analysis shows has been read, analysing the clean prompt again (an
    intervention toggled off) replays every block: only the unembedding runs, and the numbers are the model's."""
    _forget(engine)
    first = engine.analyse(PROMPT, attention=[1])
    engine.analyse(PROMPT, [FeatureAblation(0, 3)], attention=[1], features=[1])
    with blocks_run(engine) as ran:
        again = engine.analyse(PROMPT, attention=[1])
    assert ran == []
    assert all(a is b for a, b in zip(again.layers, first.layers, strict=True)) and len(again.layers) == 2
    assert again.attention[0] is first.attention[0]
    with torch.no_grad():
        expected = hf(tokens).logits[0].log_softmax(-1)
    top = expected.topk(again.predictions.ids.shape[1], dim=-1)
    np.testing.assert_array_equal(again.predictions.ids, top.indices.numpy())
    np.testing.assert_allclose(again.predictions.probs, top.values.exp().numpy(), atol=1e-5)
    for layer, lens in enumerate(again.lens):
        np.testing.assert_array_equal(lens.ids, first.lens[layer].ids)


def test_features_on_demand_say_what_was_wrong(engine: Engine) -> None:
    with pytest.raises(NumericError, match="NaN or infinite"):
        engine.features(PROMPT, 1, [FeatureSteer(0, 11, float("inf"))])
    with pytest.raises(UsageError, match="layer 5 does not exist"):
        engine.features(PROMPT, 5)
    with pytest.raises(UsageError, match="layer 5 does not exist"):
        engine.analyse(PROMPT, features=[5])


def test_nothing_of_a_pass_with_gradients_outlives_it(engine: Engine) -> None:
    """TransformerLens's fused-qkv attention keeps the last pattern on its module, and with it, after an
    attribution, the whole autograd graph behind it (every leaf, each (1, seq, d_sae) per dictionary) until
    the next pass. The handle lets go of it when the pass ends."""
    import gc

    from lenstop.models.circuits.spec import Metric

    engine.attribute(PROMPT, Metric(), top=5)
    gc.collect()
    graphed = [o for o in gc.get_objects() if type(o) is torch.Tensor and (o.grad_fn is not None or o.requires_grad)]
    assert graphed == []
