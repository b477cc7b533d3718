"""Transcoders as dictionaries: SAELens-format per-layer transcoders, circuit-tracer's per-layer files and its
cross-layer transcoder, all from files planted here, checked against circuit-tracer's arithmetic written out
by hand (relu/jumprelu(x @ W_enc.T + b_enc), acts @ W_dec + b_dec (+ x @ W_skip.T))."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import D_MODEL, N_LAYERS
from safetensors.torch import save_file

from lenstop.models import demo
from lenstop.models.dictionaries import (
    CrossLayerTranscoder,
    Dictionaries,
    TranscoderStack,
    load_spec,
    replacement_of,
)
from lenstop.models.engine import Engine
from lenstop.models.errors import BadFileError, ExitCode, IncompatibleError, NotFoundError, UsageError
from lenstop.models.interventions import FeatureAblation

from helpers import build_sae
from reference import bridge

PROMPT = "import os\nclass Point:\n    def __init__(self, x, y):"
THRESHOLD = "activation_function.threshold"
D_FEATURES = 48
Weights = dict[str, torch.Tensor]


@pytest.fixture(autouse=True)
def _no_grad() -> Any:
    """Dictionaries straight from load_spec still require gradients (the handle turns them off)."""
    with torch.no_grad():
        yield


# ------------------------------------------------------------------ planting circuit-tracer's files
def _randn(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=generator)


def plant_layer(
    file: Path, *, jump: bool = False, skip: bool = False, d_model: int = D_MODEL, seed: int = 0
) -> Weights:
    """One circuit-tracer per-layer file: W_enc (d_transcoder, d_model), as its to_safetensors writes it."""
    g = torch.Generator().manual_seed(seed)
    weights = {
        "W_enc": _randn(g, D_FEATURES, d_model, scale=d_model**-0.5),
        "b_enc": _randn(g, D_FEATURES, scale=0.1),
        "W_dec": _randn(g, D_FEATURES, d_model, scale=D_FEATURES**-0.5),
        "b_dec": _randn(g, d_model, scale=0.1),
    }
    if jump:
        weights[THRESHOLD] = 0.2 + 0.3 * torch.rand(D_FEATURES, generator=g)
    if skip:
        weights["W_skip"] = _randn(g, d_model, d_model, scale=0.1)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(file))
    return weights


def write_config(root: Path, kind: str, **fields: Any) -> None:
    config = {"model_kind": kind, "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}
    config.update(fields)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))


def plant_set(root: Path, *, n_layers: int = N_LAYERS, listed: bool = True, **kw: Any) -> list[Weights]:
    weights = [plant_layer(root / f"layer_{i}.safetensors", seed=10 + i, **kw) for i in range(n_layers)]
    listing = {"transcoders": [f"layer_{i}.safetensors" for i in range(n_layers)]} if listed else {}
    write_config(root, "transcoder_set", scan="planted/scan", **listing)
    return weights


def plant_clt(
    root: Path, *, n_layers: int = N_LAYERS, d_model: int = D_MODEL, jump: bool = False, skip: bool = False
) -> list[Weights]:
    """circuit-tracer's CLT layout: W_enc_i.safetensors (W_enc_i, b_enc_i, b_dec_i, threshold_i) and
    W_dec_i.safetensors (W_dec_i: (d_transcoder, n_layers - i, d_model)); W_skip_i is lenstop's own."""
    g = torch.Generator().manual_seed(99)
    root.mkdir(parents=True, exist_ok=True)
    layers = []
    for i in range(n_layers):
        enc = {
            f"W_enc_{i}": _randn(g, D_FEATURES, d_model, scale=d_model**-0.5),
            f"b_enc_{i}": _randn(g, D_FEATURES, scale=0.1),
            f"b_dec_{i}": _randn(g, d_model, scale=0.1),
        }
        if jump:
            enc[f"threshold_{i}"] = 0.2 + 0.3 * torch.rand(D_FEATURES, generator=g)
        if skip:
            enc[f"W_skip_{i}"] = _randn(g, d_model, d_model, scale=0.1)
        dec = {f"W_dec_{i}": _randn(g, D_FEATURES, n_layers - i, d_model, scale=D_FEATURES**-0.5)}
        save_file(enc, str(root / f"W_enc_{i}.safetensors"))
        save_file(dec, str(root / f"W_dec_{i}.safetensors"))
        layers.append({k.rsplit("_", 1)[0]: v for k, v in {**enc, **dec}.items()})
    write_config(root, "cross_layer_transcoder", scan="planted/clt")
    return layers


# ------------------------------------------------------------------ circuit-tracer's arithmetic, by hand
def ct_encode(w: Weights, x: torch.Tensor, threshold: str = THRESHOLD) -> torch.Tensor:
    pre = x @ w["W_enc"].T + w["b_enc"]
    return pre * (pre > w[threshold]) if threshold in w else torch.relu(pre)


def ct_decode(w: Weights, acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = acts @ w["W_dec"] + w["b_dec"]
    return out + x @ w["W_skip"].T if "W_skip" in w else out


def clt_by_hand(layers: list[Weights], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    outs = []
    for target in range(len(layers)):
        out = layers[target]["b_dec"].expand_as(xs[target]).clone()
        for source in range(target + 1):
            acts = ct_encode(layers[source], xs[source], threshold="threshold")
            out = out + acts @ layers[source]["W_dec"][:, target - source, :]
        if "W_skip" in layers[target]:
            out = out + xs[target] @ layers[target]["W_skip"]  # circuit-tracer's CLT: x @ W_skip
        outs.append(out)
    return outs


def mlp_activations(model_dir: Path, engine: Engine) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every layer's MLP input and output on PROMPT, from a fresh reference bridge."""
    with torch.no_grad():
        _, cache = bridge(model_dir).run_with_cache(engine.tokenize(PROMPT))
    ins = [cache[f"blocks.{layer}.mlp.hook_in"][0] for layer in range(N_LAYERS)]
    outs = [cache[f"blocks.{layer}.mlp.hook_out"][0] for layer in range(N_LAYERS)]
    return ins, outs


def _one_line(err: pytest.ExceptionInfo[Exception], *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    assert all(w in message for w in words), message


# ------------------------------------------------------------------ SAELens-format per-layer transcoders
@pytest.mark.parametrize(
    ("architecture", "hook_in", "hook_out"),
    [
        ("transcoder", "mlp.hook_in", "mlp.hook_out"),
        ("skip_transcoder", "ln2.hook_out", "hook_mlp_out"),
        ("jumprelu_transcoder", "mlp.hook_in", "hook_mlp_out"),
    ],
)
def test_saelens_transcoders_one_per_layer_read_the_mlp(
    tmp_path: Path, tiny_model: Path, architecture: str, hook_in: str, hook_out: str
) -> None:
    """A folder of SAELens transcoders, one per layer, loads as dictionaries on the MLP's hooks; what the
    analysis reads equals SAELens's own encode of the MLP input, its error is against the MLP's output."""
    root = tmp_path / "set"
    for layer in range(N_LAYERS):
        build_sae(
            root / f"L{layer}",
            hook=f"blocks.{layer}.{hook_in}",
            hook_out=f"blocks.{layer}.{hook_out}",
            d_in=D_MODEL,
            architecture=architecture,
            seed=layer,
        )
    engine = Engine.load(str(tiny_model), [str(root)], device="cpu")
    got = engine.handle.dictionaries
    assert [(d.hook_in, d.hook_out) for d in got] == [
        (f"blocks.{i}.{hook_in}", f"blocks.{i}.{hook_out}") for i in range(N_LAYERS)
    ]
    ins, outs = mlp_activations(tiny_model, engine)
    analysis = engine.analyse(PROMPT, top_k=D_FEATURES)
    for layer, d in enumerate(got):
        with torch.no_grad():
            acts = d.sae.encode(ins[layer])
            prediction = d.reconstruct(ins[layer], acts)
        assert (acts > 0).any() and (acts == 0).any()
        lf = analysis.layer(layer)
        np.testing.assert_allclose(lf.top_acts, acts.topk(D_FEATURES, dim=-1).values.clamp_min(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(lf.error_norm, (outs[layer] - prediction).norm(dim=-1).numpy(), atol=1e-4)
    # The stack asks SAELens's skip the same question as circuit-tracer's: skip = x @ M.
    stack = TranscoderStack(got)
    skip = stack.skip_weight(0)
    assert (skip is not None) == (architecture == "skip_transcoder")
    if skip is not None:
        want = ins[0] @ got[0].sae.W_skip.T
        assert (ins[0] @ skip - want).abs().max() < 1e-6 and want.abs().max() > 1e-3


def test_hand_written_jumprelu_transcoder_cfg_needs_the_saelens_version(tmp_path: Path, tiny_model: Path) -> None:
    """A cfg.json written by hand, as FACTS describes: with metadata.sae_lens_version the hooks are read; without
    it SAELens reads the file as pre-6.0, drops the hook name, and the load says so in one line. It must also
    say apply_b_dec_to_input: false, which SAELens refuses for transcoders otherwise."""
    weights = plant_layer(tmp_path / "ct.safetensors", jump=True)
    folder = tmp_path / "jr"
    folder.mkdir()
    saelens = {
        "W_enc": weights["W_enc"].T.contiguous(),
        "b_enc": weights["b_enc"],
        "W_dec": weights["W_dec"],
        "b_dec": weights["b_dec"],
        "threshold": weights[THRESHOLD],
    }
    save_file(saelens, str(folder / "sae_weights.safetensors"))
    meta = {"hook_name": "blocks.1.mlp.hook_in", "hook_name_out": "blocks.1.mlp.hook_out", "sae_lens_version": "6.5.1"}
    cfg = {"architecture": "jumprelu_transcoder", "d_in": D_MODEL, "d_sae": D_FEATURES, "d_out": D_MODEL}
    cfg["apply_b_dec_to_input"] = False  # SAELens's default, true, is refused for transcoders
    (folder / "cfg.json").write_text(json.dumps({**cfg, "dtype": "float32", "metadata": meta}))
    [d] = load_spec(str(folder))
    assert (d.hook_in, d.hook_out, d.layer) == ("blocks.1.mlp.hook_in", "blocks.1.mlp.hook_out", 1)
    x = torch.randn(7, D_MODEL, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(d.encode(x).numpy(), ct_encode(weights, x).numpy(), atol=1e-6)
    del meta["sae_lens_version"]
    (folder / "cfg.json").write_text(json.dumps({**cfg, "dtype": "float32", "metadata": meta}))
    with pytest.raises(IncompatibleError) as err:
        load_spec(str(folder))
    _one_line(err, "names no hook")


def test_a_topk_transcoder_which_saelens_lacks_is_named(tmp_path: Path) -> None:
    """SAELens 6 has no TopK transcoder (and circuit-tracer's files cannot hold one): the architecture is named."""
    folder = build_sae(tmp_path / "topk", hook="blocks.0.mlp.hook_in", d_in=D_MODEL, architecture="topk")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "topk_transcoder"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleError) as err:
        load_spec(str(folder))
    _one_line(err, "'topk_transcoder'", "jumprelu_transcoder")


def test_a_transcoder_on_hook_mlp_in_is_refused_with_the_hook_that_works(tmp_path: Path, tiny_model: Path) -> None:
    """The bridge fires hook_mlp_in only with use_hook_mlp_in set: the error names mlp.hook_in instead."""
    folder = build_sae(
        tmp_path / "mlp_in",
        hook="blocks.0.hook_mlp_in",
        hook_out="blocks.0.hook_mlp_out",
        d_in=D_MODEL,
        architecture="transcoder",
    )
    with pytest.raises(IncompatibleError) as err:
        Engine.load(str(tiny_model), [str(folder)], device="cpu")
    _one_line(err, "blocks.0.hook_mlp_in", "mlp.hook_in")


# ------------------------------------------------------------------ circuit-tracer's per-layer files
@pytest.mark.parametrize(("jump", "skip"), [(False, False), (True, False), (False, True), (True, True)])
def test_circuit_tracer_layer_files_encode_and_reconstruct_as_circuit_tracer_does(
    tmp_path: Path, jump: bool, skip: bool
) -> None:
    weights = plant_set(tmp_path / "tc", jump=jump, skip=skip)
    loaded = load_spec(str(tmp_path / "tc"))
    assert loaded.cross_layer is None and len(loaded) == N_LAYERS
    want_arch = ("jumprelu_" if jump else "") + ("skip_" if skip else "") + "transcoder"
    g = torch.Generator().manual_seed(5)
    for layer, d in enumerate(loaded):
        assert (d.hook_in, d.hook_out, d.layer) == (
            f"blocks.{layer}.mlp.hook_in",
            f"blocks.{layer}.mlp.hook_out",
            layer,
        )
        assert d.architecture == want_arch and d.key == f"tc/layer_{layer}"
        x = 2 * torch.randn(3, 9, D_MODEL, generator=g)
        with torch.no_grad():
            acts = d.encode(d.input_of(x))
            out = d.reconstruct(x, acts)
        want = ct_encode(weights[layer], x)
        np.testing.assert_allclose(acts.numpy(), want.numpy(), atol=1e-5)
        np.testing.assert_allclose(out.numpy(), ct_decode(weights[layer], want, x).numpy(), atol=1e-5)
        if jump:  # the threshold matters: plain ReLU would keep some of what it zeroes
            assert (torch.relu(x @ weights[layer]["W_enc"].T + weights[layer]["b_enc"]) > acts).any()
    assert TranscoderStack(loaded).scan == "planted/scan"


def test_circuit_tracer_transcoders_read_and_ablate_in_the_model(tmp_path: Path, tiny_model: Path) -> None:
    """Loaded through --sae: the analysis reads circuit-tracer's features of the MLP input, its error is against
    the MLP output, and ablating a feature removes act * W_dec[f] from mlp.hook_out."""
    weights = plant_set(tmp_path / "tc", jump=True, skip=True)
    engine = Engine.load(str(tiny_model), [str(tmp_path / "tc")], device="cpu")
    ins, outs = mlp_activations(tiny_model, engine)
    analysis = engine.analyse(PROMPT, top_k=D_FEATURES)
    for layer in range(N_LAYERS):
        acts = ct_encode(weights[layer], ins[layer])
        lf = analysis.layer(layer)
        np.testing.assert_allclose(lf.top_acts, acts.topk(D_FEATURES, dim=-1).values.clamp_min(0).numpy(), atol=1e-5)
        error = outs[layer] - ct_decode(weights[layer], acts, ins[layer])
        np.testing.assert_allclose(lf.error_norm, error.norm(dim=-1).numpy(), atol=1e-4)
    acts = ct_encode(weights[1], ins[1])
    feature = int(acts[-1].argmax())

    def ablate(out: torch.Tensor, hook: Any) -> torch.Tensor:
        return out - acts[:, feature, None] * weights[1]["W_dec"][feature]

    with torch.no_grad():
        expected = bridge(tiny_model).run_with_hooks(
            engine.tokenize(PROMPT), fwd_hooks=[("blocks.1.mlp.hook_out", ablate)]
        )
    ours = engine.logits(PROMPT, [FeatureAblation(1, feature)])
    assert (ours - expected[0]).abs().max().item() < 1e-4
    assert (ours - engine.logits(PROMPT)).abs().max().item() > 1e-4


def test_layer_files_are_found_as_listed_relative_absolute_or_by_name(tmp_path: Path) -> None:
    root = tmp_path / "listed"
    first = plant_layer(root / "sub" / "first.safetensors", seed=1)
    second = plant_layer(tmp_path / "elsewhere" / "second.safetensors", seed=2)
    write_config(
        root, "transcoder_set", transcoders=["sub/first.safetensors", str(tmp_path / "elsewhere/second.safetensors")]
    )
    x = torch.randn(4, D_MODEL, generator=torch.Generator().manual_seed(0))
    for d, w in zip(load_spec(str(root)), (first, second), strict=True):
        np.testing.assert_allclose(d.encode(x).numpy(), ct_encode(w, x).numpy(), atol=1e-6)
    unlisted = plant_set(tmp_path / "unlisted", listed=False)
    loaded = load_spec(str(tmp_path / "unlisted"))
    assert [d.layer for d in loaded] == list(range(N_LAYERS))
    np.testing.assert_allclose(loaded[1].encode(x).numpy(), ct_encode(unlisted[1], x).numpy(), atol=1e-6)


def test_circuit_tracer_files_that_do_not_fit_are_one_line_errors(tmp_path: Path, tiny_model: Path) -> None:
    plant_set(tmp_path / "wide", d_model=48)
    with pytest.raises(IncompatibleError) as err:
        Engine.load(str(tiny_model), [str(tmp_path / "wide")], device="cpu")
    _one_line(err, "48", str(D_MODEL), "blocks.0.mlp.hook_in")
    plant_set(tmp_path / "nohook")
    write_config(tmp_path / "nohook", "transcoder_set", feature_input_hook="mlp.hook_nowhere")
    with pytest.raises(IncompatibleError) as err:
        Engine.load(str(tiny_model), [str(tmp_path / "nohook")], device="cpu")
    _one_line(err, "blocks.0.mlp.hook_nowhere", "does not exist")
    plant_set(tmp_path / "negative", jump=True)
    w = plant_layer(tmp_path / "negative" / "layer_1.safetensors", jump=True)
    save_file({**w, THRESHOLD: w[THRESHOLD] - 1.0}, str(tmp_path / "negative" / "layer_1.safetensors"))
    with pytest.raises(IncompatibleError) as err:
        load_spec(str(tmp_path / "negative"))
    _one_line(err, "layer_1.safetensors", "below 0")


def test_broken_layer_files_are_named(tmp_path: Path) -> None:
    plant_set(tmp_path / "gone")
    (tmp_path / "gone" / "layer_1.safetensors").unlink()
    with pytest.raises(NotFoundError) as nf:
        load_spec(str(tmp_path / "gone"))
    _one_line(nf, "layer 1", "layer_1.safetensors")
    assert nf.value.code == ExitCode.NOT_FOUND
    root = tmp_path / "bad"
    w = plant_set(root)[0]
    save_file({k: v for k, v in w.items() if k != "b_dec"}, str(root / "layer_0.safetensors"))
    with pytest.raises(BadFileError) as bad:
        load_spec(str(root))
    _one_line(bad, "layer_0.safetensors", "b_dec")
    save_file({**w, "W_dec": w["W_dec"][:, :5].contiguous()}, str(root / "layer_0.safetensors"))
    with pytest.raises(BadFileError) as bad:
        load_spec(str(root))
    _one_line(bad, "b_dec")
    save_file({**w, "W_enc": w["W_enc"].T.contiguous()}, str(root / "layer_0.safetensors"))  # SAELens's layout
    with pytest.raises(BadFileError) as bad:
        load_spec(str(root))
    _one_line(bad, "W_enc", "(d_transcoder, d_model)")
    assert bad.value.code == ExitCode.BAD_FILE


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("model_kind: [unclosed", ("not valid YAML", "line 1")),
        ("- just\n- a list\n", ("not a mapping",)),
        (
            "model_kind: sae\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n",
            ("model_kind", "'sae'"),
        ),
        ("model_kind: transcoder_set\nfeature_output_hook: mlp.hook_out\n", ("feature_input_hook",)),
        (
            "model_kind: transcoder_set\nfeature_input_hook: blocks.0.mlp.hook_in\nfeature_output_hook: mlp.hook_out\n",
            ("relative to blocks.L",),
        ),
        ("!!python/object/apply:os.system [echo pwned]\n", ("builds objects",)),  # safe_load builds none
        (
            "model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"
            "transcoders: [hf://someone/tc/layer_0.safetensors]\n",
            ("hf://someone", "not in the local Hugging Face cache"),
        ),
        (
            "model_kind: cross_layer_transcoder\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"
            "transcoders: [a.safetensors]\n",
            ("not supported",),
        ),
    ],
)
def test_malformed_config_yaml_is_one_line(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises((BadFileError, UsageError, IncompatibleError, NotFoundError)) as err:
        load_spec(str(tmp_path))
    _one_line(err, "config.yaml" if "hf://" not in text else "hf://", *words)


# ------------------------------------------------------------------ the cross-layer transcoder
@pytest.mark.parametrize(("jump", "skip"), [(False, False), (True, True)])
def test_clt_encodes_and_reconstructs_as_circuit_tracer_does(tmp_path: Path, jump: bool, skip: bool) -> None:
    layers = plant_clt(tmp_path / "clt", jump=jump, skip=skip)
    loaded = load_spec(str(tmp_path / "clt"))
    clt = loaded.cross_layer
    assert len(loaded) == 0 and isinstance(clt, CrossLayerTranscoder)
    assert (clt.n_layers, clt.d_model, clt.d_features) == (N_LAYERS, D_MODEL, D_FEATURES)
    assert [clt.input_hook(i) for i in range(N_LAYERS)] == [f"blocks.{i}.mlp.hook_in" for i in range(N_LAYERS)]
    assert clt.output_hook(1) == "blocks.1.mlp.hook_out" and clt.scan == "planted/clt"
    g = torch.Generator().manual_seed(3)
    xs = [2 * torch.randn(2, 6, D_MODEL, generator=g) for _ in range(N_LAYERS)]
    for layer in range(N_LAYERS):
        acts = clt.encode(layer, xs[layer])
        np.testing.assert_allclose(acts.numpy(), ct_encode(layers[layer], xs[layer], "threshold").numpy(), atol=1e-5)
        assert (acts > 0).any() and (acts == 0).any()
        assert torch.equal(clt.decoder(layer), layers[layer]["W_dec"])
    for got, want in zip(clt.reconstruct(xs), clt_by_hand(layers, xs), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    # Layer 1's output takes layer 0's features through W_dec_0[:, 1]: without them it would differ.
    alone = layers[1]["b_dec"] + ct_encode(layers[1], xs[1], "threshold") @ layers[1]["W_dec"][:, 0]
    assert (clt.reconstruct(xs)[1] - alone).abs().max() > 1e-3


def test_clt_rides_on_the_handle_checked_and_moved(tmp_path: Path, tiny_model: Path, resid_saes: Path) -> None:
    """Beside per-layer SAEs or alone; cast to the model's dtype; its prediction of the real MLP outputs is
    circuit-tracer's."""
    layers = plant_clt(tmp_path / "clt")
    engine = Engine.load(str(tiny_model), [str(resid_saes), str(tmp_path / "clt")], device="cpu", dtype="bfloat16")
    clt = engine.handle.dictionaries.cross_layer
    assert clt is not None and clt.dtype == torch.bfloat16 and len(engine.handle.dictionaries) == N_LAYERS
    engine = Engine.load(str(tiny_model), [str(tmp_path / "clt")], device="cpu")
    clt = engine.handle.dictionaries.cross_layer
    assert clt is not None and clt.dtype == torch.float32
    clt_bytes = sum(4 * D_FEATURES * D_MODEL * (1 + N_LAYERS - i) + 4 * (D_FEATURES + D_MODEL) for i in range(N_LAYERS))
    assert engine.info().memory_bytes == Engine.load(str(tiny_model), device="cpu").info().memory_bytes + clt_bytes
    ins, outs = mlp_activations(tiny_model, engine)
    predicted = clt.reconstruct(ins)
    for got, want in zip(predicted, clt_by_hand(layers, ins), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_clt_that_does_not_fit_the_model_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    plant_clt(tmp_path / "deep", n_layers=N_LAYERS + 1)
    with pytest.raises(IncompatibleError) as err:
        Engine.load(str(tiny_model), [str(tmp_path / "deep")], device="cpu")
    _one_line(err, f"{N_LAYERS + 1} layers", f"has {N_LAYERS}")
    plant_clt(tmp_path / "wide", d_model=48)
    with pytest.raises(IncompatibleError) as err:
        Engine.load(str(tiny_model), [str(tmp_path / "wide")], device="cpu")
    _one_line(err, "48", str(D_MODEL))
    assert err.value.code == ExitCode.INCOMPATIBLE


def test_broken_clt_files_are_named(tmp_path: Path) -> None:
    root = tmp_path / "clt"
    layers = plant_clt(root)
    (root / "W_dec_1.safetensors").unlink()
    with pytest.raises(NotFoundError) as nf:
        load_spec(str(root))
    _one_line(nf, "W_dec_1.safetensors")
    save_file({"W_dec_1": layers[1]["W_dec"][:, :, :5].contiguous()}, str(root / "W_dec_1.safetensors"))
    with pytest.raises(BadFileError) as bad:
        load_spec(str(root))
    _one_line(bad, "W_dec_1", f"(48, 1, {D_MODEL})")
    (root / "W_enc_0.safetensors").rename(root / "W_enc_7.safetensors")
    with pytest.raises(NotFoundError) as nf:
        load_spec(str(root))
    _one_line(nf, "W_enc_0.safetensors")


def test_two_clts_are_refused() -> None:
    one = Dictionaries(cross_layer=_tiny_clt(key="a"))
    with pytest.raises(UsageError) as err:
        Dictionaries.joined([one, Dictionaries(cross_layer=_tiny_clt(key="b"))])
    _one_line(err, "a", "b")
    assert Dictionaries.joined([one, Dictionaries()]).cross_layer is one.cross_layer


def _tiny_clt(key: str = "clt", n_layers: int = 2, d: int = 4, f: int = 3) -> CrossLayerTranscoder:
    g = torch.Generator().manual_seed(0)
    return CrossLayerTranscoder(
        w_enc=[torch.randn(f, d, generator=g) for _ in range(n_layers)],
        b_enc=[torch.randn(f, generator=g) for _ in range(n_layers)],
        w_dec=[torch.randn(f, n_layers - i, d, generator=g) for i in range(n_layers)],
        b_dec=[torch.randn(d, generator=g) for _ in range(n_layers)],
        key=key,
    )


# ------------------------------------------------------------------ one surface over both
def test_replacement_answers_alike_for_per_layer_and_cross_layer(tmp_path: Path) -> None:
    """A CLT that writes only to its own layer is a set of per-layer transcoders: both replacements give the same
    encodings, directions, decoders, biases and skips, and each direction gives the pre-activation."""
    per_layer = plant_set(tmp_path / "tc", jump=True)
    layers = plant_clt(tmp_path / "clt", jump=True)
    for i, w in enumerate(per_layer):  # the CLT made the per-layer set's twin
        zeros = torch.zeros(D_FEATURES, N_LAYERS - i, D_MODEL)
        zeros[:, 0] = w["W_dec"]
        enc = {
            f"W_enc_{i}": w["W_enc"],
            f"b_enc_{i}": w["b_enc"],
            f"b_dec_{i}": w["b_dec"],
            f"threshold_{i}": w[THRESHOLD],
        }
        save_file(enc, str(tmp_path / "clt" / f"W_enc_{i}.safetensors"))
        save_file({f"W_dec_{i}": zeros}, str(tmp_path / "clt" / f"W_dec_{i}.safetensors"))
    assert layers  # planted, then overwritten
    stack = replacement_of(load_spec(str(tmp_path / "tc")), N_LAYERS)
    clt = replacement_of(load_spec(str(tmp_path / "clt")), N_LAYERS)
    assert (stack.kind, clt.kind) == ("transcoder_set", "cross_layer_transcoder")
    assert (stack.scan, clt.scan) == ("planted/scan", "planted/clt")
    idx = [3, 0, 17]
    x = 2 * torch.randn(5, D_MODEL, generator=torch.Generator().manual_seed(8))
    for layer in range(N_LAYERS):
        assert stack.input_hook(layer) == clt.input_hook(layer) and stack.d_features(layer) == clt.d_features(layer)
        np.testing.assert_allclose(stack.encode(layer, x).numpy(), clt.encode(layer, x).numpy(), atol=1e-5)
        enc = stack.encoder_vectors(layer, idx)
        assert torch.allclose(enc, clt.encoder_vectors(layer, idx))
        pre = x @ enc.T + per_layer[layer]["b_enc"][idx]
        np.testing.assert_allclose(
            pre.numpy(), (x @ per_layer[layer]["W_enc"].T + per_layer[layer]["b_enc"])[:, idx].numpy(), atol=1e-5
        )
        assert stack.decoder_vectors(layer, idx).shape == (3, 1, D_MODEL)
        assert clt.decoder_vectors(layer, idx).shape == (3, N_LAYERS - layer, D_MODEL)
        assert torch.allclose(stack.decoder_vectors(layer, idx)[:, 0], clt.decoder_vectors(layer, idx)[:, 0])
        assert torch.equal(stack.decoder_vectors(layer, idx)[:, 0], per_layer[layer]["W_dec"][idx])
        assert torch.allclose(stack.b_dec(layer), clt.b_dec(layer))
        assert stack.skip_weight(layer) is None and clt.skip_weight(layer) is None
    recon = load_spec(str(tmp_path / "clt")).cross_layer
    assert recon is not None
    xs = [x, x + 1]
    for layer, out in enumerate(recon.reconstruct(xs)):
        want = ct_decode(per_layer[layer], ct_encode(per_layer[layer], xs[layer]), xs[layer])
        np.testing.assert_allclose(out.numpy(), want.numpy(), atol=1e-5)


def test_replacement_refuses_gaps_saes_and_per_call_normalisation(tmp_path: Path) -> None:
    plant_set(tmp_path / "tc")
    with pytest.raises(UsageError) as err:
        TranscoderStack(Dictionaries([load_spec(str(tmp_path / "tc"))[1]]))
    _one_line(err, "layers 0 have none")
    with pytest.raises(UsageError) as err:
        TranscoderStack(load_spec(str(tmp_path / "tc")), n_layers=4)
    _one_line(err, "layers 2, 3")
    sae = build_sae(tmp_path / "sae" / "L0", hook="blocks.0.hook_resid_pre", d_in=D_MODEL)
    build_sae(
        tmp_path / "sae" / "L1",
        hook="blocks.1.mlp.hook_in",
        hook_out="blocks.1.mlp.hook_out",
        d_in=D_MODEL,
        architecture="transcoder",
    )
    with pytest.raises(UsageError) as err:
        TranscoderStack(load_spec(str(sae.parent)))
    _one_line(err, "L0", "is an SAE")
    for layer in range(N_LAYERS):
        build_sae(
            tmp_path / "cnr" / f"L{layer}",
            hook=f"blocks.{layer}.mlp.hook_in",
            hook_out=f"blocks.{layer}.mlp.hook_out",
            d_in=D_MODEL,
            architecture="transcoder",
            normalize_activations="constant_norm_rescale",
        )
    stack = TranscoderStack(load_spec(str(tmp_path / "cnr")))
    with pytest.raises(IncompatibleError) as inc:
        stack.encoder_vectors(0, [1])
    _one_line(inc, "constant_norm_rescale", "no fixed")


# ------------------------------------------------------------------ the demo's specs
def test_demo_transcoder_specs_name_the_demo_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "TRANSCODER_ROOT", tmp_path / "transcoders")
    monkeypatch.setattr(demo, "CLT_ROOT", tmp_path / "clt")
    for spec, words in (("demo:transcoders", "per-layer transcoders"), ("demo:clt", "cross-layer transcoder")):
        with pytest.raises(NotFoundError) as err:
            load_spec(spec)
        _one_line(err, words, str(tmp_path), "python -m lenstop.models.demo.build")
    weights = plant_set(tmp_path / "transcoders")
    plant_clt(tmp_path / "clt")
    loaded = load_spec("demo:transcoders")
    x = torch.randn(3, D_MODEL, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(loaded[0].encode(x).numpy(), ct_encode(weights[0], x).numpy(), atol=1e-6)
    clt = load_spec("demo:clt").cross_layer
    assert clt is not None and clt.source == str(tmp_path / "clt")


# ------------------------------------------------------------------ hub repositories, from a planted cache
def _plant_hub(hub: Path, repo_id: str, folder: Path, subfolder: str = "") -> None:
    from hub_cache import _add, _repo

    snapshot = _repo(hub, repo_id, "1" * 40)
    for path in sorted(folder.iterdir()):
        _add(snapshot, f"{subfolder}{path.name}", path.read_bytes())


def test_circuit_tracer_hub_repositories_load_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`owner/name` as circuit-tracer names a transcoder repo (its config listing hf:// files), and
    `owner/name/subfolder` for a CLT: read from the local cache with the hub unreachable, scanned by name."""
    from huggingface_hub import constants

    weights = plant_set(tmp_path / "tc")
    listing = [f"hf://someone/tc/layer_{i}.safetensors" for i in range(N_LAYERS)]
    write_config(tmp_path / "tc", "transcoder_set", scan="ignored", transcoders=listing)
    layers = plant_clt(tmp_path / "clt")
    hub = tmp_path / "hub"
    _plant_hub(hub, "someone/tc", tmp_path / "tc")
    _plant_hub(hub, "someone/clts", tmp_path / "clt", subfolder="small/")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    loaded = load_spec("someone/tc")
    assert [d.key for d in loaded] == [f"someone/tc/layer_{i}" for i in range(N_LAYERS)]
    assert TranscoderStack(loaded).scan == "someone/tc"
    x = torch.randn(3, D_MODEL, generator=torch.Generator().manual_seed(4))
    for d, w in zip(loaded, weights, strict=True):
        np.testing.assert_allclose(d.encode(x).numpy(), ct_encode(w, x).numpy(), atol=1e-6)
    clt = load_spec("someone/clts/small").cross_layer
    assert clt is not None and clt.scan == "someone/clts/small"
    for got, want in zip(clt.reconstruct([x, x]), clt_by_hand(layers, [x, x]), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    with pytest.raises(NotFoundError) as err:
        load_spec("someone/elsewhere")
    _one_line(err, "someone/elsewhere", "not in the local Hugging Face cache")
    with pytest.raises(NotFoundError) as err:
        load_spec("./no/such/folder")
    _one_line(err, "no SAELens release or directory")
