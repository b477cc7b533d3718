"""Every dictionary architecture SAELens loads for inference, the weight processing
they ask for, and the errors for dictionaries that do not fit the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import D_MODEL

from lenstop.models.engine import Engine
from lenstop.models.errors import IncompatibleError, NotFoundError, UsageError
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer
from lenstop.models.results import LayerFeatures

from helpers import build_sae
from reference import bridge, hf_logits_with_resid_edit, hf_model, hf_residuals, load_sae

PROMPT = "import os\nclass Point:\n    def __init__(self, x, y):"
ATOL = 1e-5


def _run_with_cache(model_dir: Path, tokens: torch.Tensor):
    with torch.no_grad():
        return bridge(model_dir).run_with_cache(tokens)


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_each_sae_architecture_matches_its_own_encode(tmp_path: Path, tiny_model: Path, architecture: str) -> None:
    sae_dir = build_sae(
        tmp_path / architecture, hook="blocks.1.hook_resid_mid", d_in=D_MODEL, architecture=architecture
    )
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    analysis = engine.analyse(PROMPT, top_k=64)
    tokens = engine.tokenize(PROMPT)
    _, cache = _run_with_cache(tiny_model, tokens)
    sae = load_sae(sae_dir)
    x = cache["blocks.1.hook_resid_mid"][0]
    with torch.no_grad():
        acts = sae.encode(x)
        error = (x - sae.decode(acts)).norm(dim=-1)
    lf = analysis.layer(1)
    assert lf.hook == "blocks.1.hook_resid_mid"
    assert (acts > 0).any(), "the random dictionary should fire somewhere"
    np.testing.assert_array_equal(lf.l0, (acts > 0).sum(-1).numpy())  # TopK's counted from its sparse form
    np.testing.assert_allclose(lf.error_norm, error.numpy(), atol=1e-4)
    for pos in range(acts.shape[0]):
        want = {int(i): float(acts[pos, i]) for i in torch.nonzero(acts[pos] > 0).flatten()}
        got = {f.id: f.act for f in lf.features(pos)}
        assert got.keys() == want.keys()
        assert all(abs(got[i] - want[i]) < ATOL for i in got)
    _read_alone_as_in_the_analysis(engine, lf, top_k=64)


def _read_alone_as_in_the_analysis(engine: Engine, lf: LayerFeatures | None, top_k: int) -> None:
    """`Engine.features`, by a pass that stops at the dictionary's hook (a transcoder's output hook), reads
    what the whole analysis read."""
    assert lf is not None
    engine.forget()
    alone = engine.features(PROMPT, lf.layer, top_k=top_k)
    np.testing.assert_array_equal(alone.top_ids, lf.top_ids)
    np.testing.assert_allclose(alone.top_acts, lf.top_acts, atol=1e-6)
    np.testing.assert_allclose(alone.error_norm, lf.error_norm, atol=1e-6)
    np.testing.assert_array_equal(alone.l0, lf.l0)


def test_ablation_through_a_stateful_normalisation(tmp_path: Path, tiny_model: Path) -> None:
    """constant_norm_rescale scales x by sqrt(d_in)/|x| before encoding, so a feature's
    contribution in model space is its decoder row times |x|/sqrt(d_in)."""
    sae_dir = build_sae(
        tmp_path / "cnr", hook="blocks.1.hook_resid_pre", d_in=D_MODEL, normalize_activations="constant_norm_rescale"
    )
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    tokens = engine.tokenize(PROMPT)
    hf = hf_model(tiny_model)
    x = hf_residuals(hf, tokens)[1]
    sae = load_sae(sae_dir)
    with torch.no_grad():
        acts = sae.encode(x)
    feature = int(acts[-1].argmax())
    scale = x.norm(dim=-1, keepdim=True) / D_MODEL**0.5
    expected = hf_logits_with_resid_edit(
        hf, tokens, 1, lambda r: r - acts[:, feature, None] * sae.W_dec[feature] * scale
    )
    ours = engine.logits(PROMPT, [FeatureAblation(1, feature)])
    assert (ours - expected).abs().max().item() < 1e-4
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-4


@pytest.mark.parametrize("architecture", ["transcoder", "skip_transcoder"])
def test_transcoder_reads_mlp_input_and_edits_mlp_output(tmp_path: Path, tiny_model: Path, architecture: str) -> None:
    hook_in, hook_out = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
    tc_dir = build_sae(
        tmp_path / architecture, hook=hook_in, hook_out=hook_out, d_in=D_MODEL, architecture=architecture
    )
    engine = Engine.load(str(tiny_model), [str(tc_dir)], device="cpu")
    tokens = engine.tokenize(PROMPT)
    _, cache = _run_with_cache(tiny_model, tokens)
    tc = load_sae(tc_dir)
    with torch.no_grad():
        acts = tc.encode(cache[hook_in][0])
        prediction = tc(cache[hook_in][0])
    analysis = engine.analyse(PROMPT, top_k=8)
    lf = analysis.layer(0)
    np.testing.assert_allclose(lf.top_acts, acts.topk(8, dim=-1).values.clamp_min(0).numpy(), atol=ATOL)
    # The error of a transcoder is against the MLP's real output.
    np.testing.assert_allclose(lf.error_norm, (cache[hook_out][0] - prediction).norm(dim=-1).numpy(), atol=1e-4)
    _read_alone_as_in_the_analysis(engine, lf, top_k=8)
    # Ablating a feature removes its decoder row from the MLP output.
    feature = int(acts[-1].argmax())
    ref = bridge(tiny_model)

    def edit(out: torch.Tensor, hook) -> torch.Tensor:
        return out - acts[:, feature, None] * tc.W_dec[feature]

    with torch.no_grad():
        expected = ref.run_with_hooks(tokens, fwd_hooks=[(hook_out, edit)])[0]
    ours = engine.logits(PROMPT, [FeatureAblation(0, feature)])
    assert (ours - expected).abs().max().item() < ATOL
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-5


def test_hook_z_dictionary_flattens_heads(tmp_path: Path, tiny_model: Path) -> None:
    sae_dir = build_sae(tmp_path / "z", hook="blocks.1.attn.hook_z", d_in=D_MODEL)
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    tokens = engine.tokenize(PROMPT)
    _, cache = _run_with_cache(tiny_model, tokens)
    sae = load_sae(sae_dir)
    z = cache["blocks.1.attn.hook_z"][0]
    with torch.no_grad():
        acts = sae.encode(z)
    analysis = engine.analyse(PROMPT, top_k=5)
    np.testing.assert_allclose(analysis.layer(1).top_acts, acts.topk(5, dim=-1).values.clamp_min(0).numpy(), atol=ATOL)
    _read_alone_as_in_the_analysis(engine, analysis.layer(1), top_k=5)
    ref = bridge(tiny_model)
    n_heads, d_head = z.shape[-2:]

    def steer(zz: torch.Tensor, hook) -> torch.Tensor:
        return zz + 5.0 * sae.W_dec[3].reshape(n_heads, d_head)

    with torch.no_grad():
        expected = ref.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", steer)])[0]
    ours = engine.logits(PROMPT, [FeatureSteer(1, 3, 5.0)])
    assert (ours - expected).abs().max().item() < ATOL


# ------------------------------------------------------------------ weight processing
def test_dictionary_trained_on_centred_weights_sees_centred_residuals(tmp_path: Path, tiny_model: Path) -> None:
    """gpt2-small-res-jb style: model_from_pretrained_kwargs={'center_writing_weights': True}.
    With HookedTransformer's centring every write to the residual has zero mean, so its
    residual is the raw one minus its mean over d_model."""
    sae_dir = build_sae(
        tmp_path / "centred",
        hook="blocks.1.hook_resid_pre",
        d_in=D_MODEL,
        model_from_pretrained_kwargs={"center_writing_weights": True, "fold_ln": True},
    )
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    assert engine.processing.center_writing_weights and engine.processing.fold_ln
    assert not engine.processing.center_unembed
    tokens = engine.tokenize(PROMPT)
    hf = hf_model(tiny_model)
    raw = hf_residuals(hf, tokens)[1]
    centred = raw - raw.mean(-1, keepdim=True)
    sae = load_sae(sae_dir)
    with torch.no_grad():
        acts_centred, acts_raw = sae.encode(centred), sae.encode(raw)
    assert (acts_centred - acts_raw).abs().max() > 1e-3, "centring must matter for this test to mean anything"
    analysis = engine.analyse(PROMPT, top_k=6)
    np.testing.assert_allclose(
        analysis.layer(1).top_acts, acts_centred.topk(6, dim=-1).values.clamp_min(0).numpy(), atol=1e-4
    )
    # Processing the weights leaves the model's predictions as they were.
    with torch.no_grad():
        hf_lp = hf(tokens).logits[0].log_softmax(-1)
    assert (engine.logits(PROMPT).log_softmax(-1) - hf_lp).abs().max().item() < 1e-4


def test_dictionary_trained_on_raw_weights_sees_raw_residuals(tmp_path: Path, tiny_model: Path) -> None:
    sae_dir = build_sae(tmp_path / "raw", hook="blocks.1.hook_resid_pre", d_in=D_MODEL, model_from_pretrained_kwargs={})
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    assert engine.processing.is_raw
    tokens = engine.tokenize(PROMPT)
    raw = hf_residuals(hf_model(tiny_model), tokens)[1]
    with torch.no_grad():
        acts = load_sae(sae_dir).encode(raw)
    np.testing.assert_allclose(
        engine.analyse(PROMPT, top_k=6).layer(1).top_acts, acts.topk(6, dim=-1).values.clamp_min(0).numpy(), atol=ATOL
    )


def test_dictionaries_that_disagree_on_processing_are_refused(tmp_path: Path, tiny_model: Path) -> None:
    build_sae(tmp_path / "both" / "a", hook="blocks.0.hook_resid_pre", d_in=D_MODEL)
    build_sae(
        tmp_path / "both" / "b",
        hook="blocks.1.hook_resid_pre",
        d_in=D_MODEL,
        model_from_pretrained_kwargs={"center_writing_weights": True},
    )
    with pytest.raises(IncompatibleError, match="differently processed"):
        Engine.load(str(tiny_model), [str(tmp_path / "both")], device="cpu")


def test_dictionary_without_bos_gets_no_bos(tmp_path: Path, tiny_model: Path) -> None:
    sae_dir = build_sae(tmp_path / "nobos", hook="blocks.0.hook_resid_pre", d_in=D_MODEL, prepend_bos=False)
    engine = Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    analysis = engine.analyse("import os")
    assert analysis.token_ids[0] != engine.model.tokenizer.bos_token_id
    assert "".join(analysis.tokens) == "import os"


# ------------------------------------------------------------------ errors
def test_width_mismatch_names_the_dictionary_the_hook_and_both_widths(tmp_path: Path, tiny_model: Path) -> None:
    sae_dir = build_sae(tmp_path / "wide", hook="blocks.0.hook_resid_pre", d_in=48)
    with pytest.raises(IncompatibleError) as info:
        Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")
    message = str(info.value)
    assert all(s in message for s in ("wide", "blocks.0.hook_resid_pre", "48", str(D_MODEL)))
    assert "\n" not in message


def test_missing_hook_is_named(tmp_path: Path, tiny_model: Path) -> None:
    sae_dir = build_sae(tmp_path / "deep", hook="blocks.7.hook_resid_pre", d_in=D_MODEL)
    with pytest.raises(IncompatibleError, match=r"hook 'blocks\.7\.hook_resid_pre' does not exist"):
        Engine.load(str(tiny_model), [str(sae_dir)], device="cpu")


def test_unknown_spec_and_release_are_not_found(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(NotFoundError, match="did you mean gpt2-small-res-jb"):
        Engine.load(str(tiny_model), ["gpt2-small-res-jbb"], device="cpu")
    with pytest.raises(NotFoundError, match="has no SAE"):
        Engine.load(str(tiny_model), ["gpt2-small-res-jb:blocks.99.hook_resid_pre"], device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="no cfg.json"):
        Engine.load(str(tiny_model), [str(empty)], device="cpu")


def test_hub_dictionary_without_network_fails_fast_with_one_line(tiny_model: Path) -> None:
    import time

    start = time.monotonic()
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache and the hub cannot be reached"):
        Engine.load(str(tiny_model), ["gpt2-small-res-jb:blocks.0.hook_resid_pre"], device="cpu")
    assert time.monotonic() - start < 15  # no half-minute of retries


def test_bad_interventions_are_usage_errors(engine: Engine) -> None:
    cases = [
        (FeatureAblation(5, 1), "no dictionary at layer 5"),
        (FeatureAblation(0, 10_000), "does not exist"),
        (FeatureClamp(0, 1, 2.0, position=99), "outside the prompt"),
    ]
    for intervention, message in cases:
        with pytest.raises(UsageError, match=message):
            engine.analyse("import os", [intervention])


def test_prompt_longer_than_the_context_is_refused(engine: Engine) -> None:
    with pytest.raises(IncompatibleError, match=f"context is {engine.n_ctx}"):
        engine.analyse("x " * (engine.n_ctx + 5))


def test_a_steer_that_overflows_is_a_numeric_error(engine: Engine) -> None:
    from lenstop.models.errors import NumericError

    with pytest.raises(NumericError, match="NaN or infinite"):
        engine.analyse("import os", [FeatureSteer(0, 1, 1e39)])
    # The engine is still usable afterwards.
    assert engine.analyse("import os").predictions.probs[0, 0] > 0
