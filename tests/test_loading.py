"""Loading: devices and device maps, local directories with no network, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lenstop.models.engine import Engine
from lenstop.models.errors import NotFoundError, UsageError
from lenstop.models.loading import Processing, parse_device_map, resolve_device

from reference import hf_model

PROMPT = "for i in range(10):\n    print(i)"


def test_auto_device_is_cpu_without_an_accelerator() -> None:
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") in ("cpu", "mps")
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(UsageError, match="expected auto, cpu"):
        resolve_device("tpu")


def test_device_map_forms() -> None:
    assert parse_device_map("auto") == "auto"
    assert parse_device_map('{"transformer.h.0": 0, "lm_head": "cpu"}') == {"transformer.h.0": 0, "lm_head": "cpu"}
    assert parse_device_map("transformer.h.0=0,lm_head=cpu") == {"transformer.h.0": 0, "lm_head": "cpu"}
    with pytest.raises(UsageError, match="--device-map"):
        parse_device_map("transformer.h.0")


def test_explicit_cpu_device_map_gives_the_same_numbers(tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    """The multi-device path (accelerate dispatch), exercised on CPU with a per-module map."""
    mapping = parse_device_map(
        "transformer.wte=cpu,transformer.wpe=cpu,transformer.h.0=cpu,transformer.h.1=cpu,transformer.ln_f=cpu,lm_head=cpu"
    )
    mapped = Engine.load(str(tiny_model), [str(resid_saes)], device_map=mapping)
    assert mapped.model.cfg.device is not None
    a, b = mapped.analyse(PROMPT), engine.analyse(PROMPT)
    assert (mapped.logits(PROMPT) - engine.logits(PROMPT)).abs().max().item() < 1e-5
    assert [f.id for f in a.layer(1).features(-1)] == [f.id for f in b.layer(1).features(-1)]


def test_half_precision_runs_and_agrees_roughly(tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    half = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu", dtype="bfloat16")
    assert half.dictionaries[0].sae.dtype == torch.bfloat16
    diff = (half.logits(PROMPT).float() - engine.logits(PROMPT)).abs().max().item()
    assert 0 < diff < 0.1


def test_half_precision_works_end_to_end_like_float32(tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    """Everything the app does, in bfloat16: an analysis, a toggle (its KL from the clean distribution), a
    layer's features and attention read on demand after it, a steered generation; each near float32's."""
    import numpy as np

    from lenstop.models.interventions import FeatureAblation, FeatureSteer

    half = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu", dtype="bfloat16")
    ablation = [FeatureAblation(1, engine.analyse(PROMPT).layer(1).features(-1)[0].id)]
    for e in (half, engine):
        e.forget()
        e.analyse(PROMPT, attention=[1], lens=False)
    ours, theirs = (e.analyse(PROMPT, ablation, features=[1], attention=[1], lens=False) for e in (half, engine))
    assert ours.kl is not None and theirs.kl is not None and np.isfinite(ours.kl).all()
    assert theirs.kl.max() > 1e-3 and np.abs(ours.kl - theirs.kl).max() < 0.05 + 0.1 * theirs.kl.max()
    np.testing.assert_allclose(ours.predictions.probs[:, 0], theirs.predictions.probs[:, 0], atol=0.05)
    steer = [FeatureSteer(0, 7, 4.0)]
    a, b = (e.features(PROMPT, 1, steer) for e in (half, engine))
    agree = np.mean([set(a.top_ids[p, :3]) == set(b.top_ids[p, :3]) for p in range(len(a.top_ids))])
    assert agree >= 0.7 and np.abs(a.top_acts - b.top_acts).max() < 0.1 * b.top_acts.max()
    x, y = (e.attention(PROMPT, 1, steer) for e in (half, engine))
    assert np.abs(x.weights - y.weights).max() < 0.05
    g, h = (e.generate(PROMPT, steer, max_new_tokens=6) for e in (half, engine))
    assert g.intervened is not None and h.intervened is not None
    assert g.intervened.token_ids[:2] == h.intervened.token_ids[:2] and g.clean.token_ids[:2] == h.clean.token_ids[:2]


def test_missing_local_directory_and_unknown_model(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(NotFoundError, match="no config.json"):
        Engine.load(str(tmp_path / "not-a-model"))
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache"):
        Engine.load("someone/no-such-model-anywhere", device="cpu")


def test_processing_follows_saelens_convention() -> None:
    """SAELens loads with from_pretrained_no_processing(**kwargs): off unless asked for."""
    assert Processing.from_kwargs(None).is_raw
    assert Processing.from_kwargs({"center_writing_weights": True}) == Processing(center_writing_weights=True)
    assert Processing.from_kwargs({"fold_ln": False, "n_devices": 2}).is_raw


def test_local_files_load_and_run_with_the_network_cut_off(tiny_model: Path, resid_saes: Path) -> None:
    """Nothing may reach the network when the files are local: every socket connect raises."""
    script = textwrap.dedent(
        f"""
        import os, socket
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted: " + repr(args))
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from lenstop.models.engine import Engine
        engine = Engine.load({str(tiny_model)!r}, [{str(resid_saes)!r}], device="cpu")
        analysis = engine.analyse("import os")
        print("OK", len(analysis.tokens))
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("OK")


def test_bridge_numerics_match_hugging_face(tiny_model: Path, engine: Engine) -> None:
    tokens = engine.tokenize(PROMPT)
    with torch.no_grad():
        expected = hf_model(tiny_model)(tokens).logits[0]
    assert (engine.logits(PROMPT) - expected).abs().max().item() < 1e-5
