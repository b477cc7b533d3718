"""The reference tooling itself (tests/reference/): circuit-tracer 0.5.0 in its own venv,
ct_graph.py run on the demo model with planted transcoders, and circuit-tracer's viewer in
headless Chromium. Each check here could fail and none depends on lenstop's own
attribution: logit probabilities and feature activations are recomputed from the Hugging
Face model in this venv (transformers 5) with plain forward hooks.

The first run builds .reference/ (about 2-3 minutes: the venv, npm packages, chromium if
missing); a build that fails fails these tests, it does not skip them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))  # tests/reference.py owns the name

import circuit_tracer_env  # noqa: E402
import viewer  # noqa: E402

from reference import hf_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo" / "artifacts" / "model"
PROMPT = "def add(a, b):\n    return a + b\n"
KINDS = ("transcoder_set", "cross_layer_transcoder")

pytestmark = pytest.mark.skipif(not DEMO.exists(), reason="the demo model is not built")


def _tokens() -> list[int]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(DEMO / "tokenizer.json")).encode(PROMPT).ids
    return [0, *ids]  # BOS (id 0) prepended here: circuit-tracer's ensure_tokenized cannot


@pytest.fixture(scope="module")
def ct_python() -> Path:
    return circuit_tracer_env.ensure_venv()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("planted")
    return {
        kind: circuit_tracer_env.plant_transcoders(root / kind, DEMO, kind=kind, n_features=256, seed=i)
        for i, kind in enumerate(KINDS)
    }


@pytest.fixture(scope="module")
def graphs(ct_python: Path, planted: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ct-graphs")
    tokens = ",".join(map(str, _tokens()))
    return {
        kind: circuit_tracer_env.run_reference(
            "--model", DEMO, "--transcoders", planted[kind], "--tokens", tokens, "--out", out / f"{kind}.npz",
            "--export", out / f"{kind}-export", "--slug", kind,
        )
        for kind in KINDS
    }  # fmt: skip


@pytest.fixture(scope="module")
def hf_run() -> dict[str, Any]:
    """The demo model's last-position probabilities and each layer's MLP input (ln_2's
    output), from transformers 5 in this venv with plain forward hooks."""
    model = hf_model(DEMO)
    mlp_in: dict[int, torch.Tensor] = {}
    handles = [
        block.ln_2.register_forward_hook(lambda _m, _i, out, layer=layer: mlp_in.__setitem__(layer, out[0].detach()))
        for layer, block in enumerate(model.transformer.h)
    ]
    try:
        with torch.no_grad():
            logits = model(torch.tensor([_tokens()])).logits[0, -1].double()
    finally:
        for handle in handles:
            handle.remove()
    return {"probs": torch.softmax(logits, -1), "mlp_in": mlp_in, "n_layers": len(model.transformer.h)}


def _planted_acts(directory: Path, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The planted encoder's JumpReLU at `layer` applied to MLP inputs x (n_pos, d_model)."""
    from safetensors.torch import load_file

    if kind == "transcoder_set":
        w = load_file(str(directory / f"layer_{layer}.safetensors"))
        w_enc, b_enc, threshold = w["W_enc"], w["b_enc"], w["activation_function.threshold"]
    else:
        w = load_file(str(directory / f"W_enc_{layer}.safetensors"))
        w_enc, b_enc, threshold = w[f"W_enc_{layer}"], w[f"b_enc_{layer}"], w[f"threshold_{layer}"]
    pre = x.double() @ w_enc.double().T + b_enc.double()
    return pre * (pre > threshold.double())


def test_the_venv_is_built_once_with_the_pinned_versions(ct_python: Path) -> None:
    started = time.perf_counter()
    assert circuit_tracer_env.ensure_venv() == ct_python
    assert time.perf_counter() - started < 5, "a second ensure_venv() rebuilt the venv"
    freeze = subprocess.run([str(ct_python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    installed = dict(line.split("==", 1) for line in freeze.stdout.splitlines() if "==" in line)
    assert installed["circuit-tracer"] == "0.5.0"
    assert installed["nnsight"] == "0.7.0"
    assert installed["transformers"] == "4.57.3"
    assert installed["torch"] == "2.13.0+cpu", "the CPU build, not a CUDA build from PyPI"


def test_a_failing_build_raises_with_pips_last_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network needed: the requirement is a wheel file that is not there."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{tmp_path / 'missing' / 'nothing-0.0.0-py3-none-any.whl'}\n")
    monkeypatch.setattr(circuit_tracer_env, "REFERENCE_DIR", tmp_path)
    monkeypatch.setattr(circuit_tracer_env, "VENV", tmp_path / "venv")
    monkeypatch.setattr(circuit_tracer_env, "REQUIREMENTS", requirements)
    monkeypatch.setattr(circuit_tracer_env, "TORCH", "pip")  # already in any venv: instant
    with pytest.raises(circuit_tracer_env.CircuitTracerError, match="nothing-0.0.0") as failure:
        circuit_tracer_env.ensure_venv()
    assert "pip install -r requirements.txt failed" in str(failure.value)
    assert not (tmp_path / "venv" / circuit_tracer_env.STAMP_NAME).exists(), "a failed build is not stamped"


def test_the_build_lock_makes_a_second_worker_wait(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import circuit_tracer_env as c\n"
        "with c.locked(__import__('pathlib').Path(sys.argv[2])):\n    print('held', flush=True); time.sleep(1.5)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(circuit_tracer_env.HERE), str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    started = time.perf_counter()
    with circuit_tracer_env.locked(lock):
        waited = time.perf_counter() - started
    process.wait(timeout=10)
    assert waited > 0.5, waited


def test_a_failing_runner_raises_with_its_last_lines(ct_python: Path, tmp_path: Path) -> None:
    with pytest.raises(circuit_tracer_env.CircuitTracerError, match="config.yaml"):
        circuit_tracer_env.run_reference("--model", DEMO, "--transcoders", tmp_path, "--tokens", "0,5,9")


@pytest.mark.parametrize("kind", KINDS)
def test_planted_transcoders_fire_sparsely_on_the_demo(kind: str, planted: dict[str, Path], hf_run: dict) -> None:
    per_token = [
        (_planted_acts(planted[kind], kind, layer, x) > 0).sum(-1).double().mean().item()
        for layer, x in hf_run["mlp_in"].items()
    ]
    assert all(5 <= n <= 40 for n in per_token), per_token


@pytest.mark.parametrize("kind", KINDS)
def test_graph_layout_is_features_errors_tokens_logits(kind: str, graphs: dict) -> None:
    a, meta = graphs[kind]["arrays"], graphs[kind]["meta"]
    n_pos, n_layers, n_sel, n_logits = meta["n_pos"], meta["n_layers"], meta["n_selected"], meta["n_logits"]
    adjacency = a["adjacency_matrix"]
    n_nodes = n_sel + (n_layers + 1) * n_pos + n_logits
    assert adjacency.shape == (n_nodes, n_nodes)
    assert adjacency.dtype == np.float32
    assert n_pos == len(_tokens()) and list(a["input_tokens"]) == _tokens()
    assert n_logits == len(a["logit_token_ids"]) == len(a["logit_probabilities"]) >= 1
    assert n_sel == len(a["selected_features"]) and a["active_features"].shape == (meta["n_active"], 3)
    assert not np.any(adjacency[n_sel:-n_logits]), "error and token nodes have no inputs"
    assert not np.any(adjacency[:, -n_logits:]), "logits are never a source"
    assert np.any(adjacency[-n_logits:, :n_sel]), "the logits read some feature"
    assert not np.any(a["active_features"][:, 1] == 0), "position 0's features are zeroed"
    assert a["node_mask"].shape == (n_nodes,) and a["node_mask"][-n_logits - n_pos :].all()
    edges = a["edge_mask_indices"]
    assert edges.ndim == 2 and edges.shape[1] == 2 and len(edges) == meta["n_edges_kept"]
    assert a["node_influence"].shape == a["cumulative_scores"].shape == (n_nodes,)
    scores = ["replacement_score", "completeness_score", "pruned_replacement_score", "pruned_completeness_score"]
    assert all(0 <= a[name] <= 1 for name in scores)
    assert json.loads(str(a["meta_json"])) == meta


@pytest.mark.parametrize("kind", KINDS)
def test_logit_probabilities_match_the_hf_model(kind: str, graphs: dict, hf_run: dict) -> None:
    a = graphs[kind]["arrays"]
    expected = hf_run["probs"][torch.from_numpy(a["logit_token_ids"])].numpy()
    np.testing.assert_allclose(a["logit_probabilities"], expected, atol=1e-5, rtol=0)
    top = torch.argsort(hf_run["probs"], descending=True)[: len(expected)].numpy()
    assert list(a["logit_token_ids"]) == list(top), "default targets are the top logits"


@pytest.mark.parametrize("kind", KINDS)
def test_active_features_are_the_planted_jumprelu_of_the_mlp_inputs(
    kind: str, graphs: dict, hf_run: dict, planted: dict[str, Path]
) -> None:
    a = graphs[kind]["arrays"]
    got = {tuple(map(int, f)): float(v) for f, v in zip(a["active_features"], a["activation_values"], strict=True)}
    expected = {}
    for layer, x in hf_run["mlp_in"].items():
        acts = _planted_acts(planted[kind], kind, layer, x)
        acts[0] = 0  # circuit-tracer zeroes position 0 (BOS)
        for pos, feature in torch.nonzero(acts).tolist():
            expected[(layer, pos, feature)] = acts[pos, feature].item()
    assert set(got) == set(expected)
    worst = max(abs(got[key] - expected[key]) for key in expected)
    assert worst < 1e-5, worst


def test_repeat_reports_warm_timings_and_targets_are_kept(
    ct_python: Path, planted: dict[str, Path], tmp_path: Path
) -> None:
    tokens = ",".join(map(str, _tokens()[:6]))
    result = circuit_tracer_env.run_reference(
        "--model", DEMO, "--transcoders", planted["cross_layer_transcoder"], "--tokens", tokens, "--repeat", "2",
        "--max-feature-nodes", "20", "--targets", "309,12", "--out", tmp_path / "g.npz",
    )  # fmt: skip
    assert list(result["arrays"]["logit_token_ids"]) == [309, 12]
    timings = result["meta"]["timings"]
    assert len(timings["attribute_all_s"]) == 2
    assert 0 < timings["attribute_min_s"] <= timings["attribute_median_s"]
    assert timings["peak_rss_mb"] > 100
    assert result["meta"]["n_selected"] <= 20 < result["meta"]["n_active"]


def _feature_json(feature_index: int) -> dict[str, Any]:
    """One feature file in circuit-tracer's viewer format (frontend/feature_models.py)."""
    example = {"tokens_acts_list": [0.0, 1.5, 0.25], "train_token_ind": 1, "is_repeated_datapoint": False}
    return {
        "transcoder_id": "planted",
        "index": feature_index,
        "examples_quantiles": [
            {"quantile_name": "Top activations", "examples": [{**example, "tokens": ["def", " add", "("]}]}
        ],
        "top_logits": [" b", " a"],
        "bottom_logits": ["\n"],
        "act_min": 0.0,
        "act_max": 1.5,
        "quantile_values": [0.1, 0.5, 1.0],
        "histogram": [3.0, 2.0, 1.0],
        "activation_frequency": 0.05,
    }


def test_viewer_draws_every_node_of_circuit_tracers_own_export(graphs: dict) -> None:
    export = Path(graphs["transcoder_set"]["npz"]).parent / "transcoder_set-export"
    report = viewer.check_graph_in_viewer(export, "transcoder_set", click_feature=False)
    assert report.error is None, report.body_text
    assert not report.missing and not report.unexpected
    assert sorted(report.drawn_node_ids) == sorted(report.expected_node_ids)
    # all but prune_graph's boundary node: find_threshold keeps the first node whose cumulative
    # influence reaches node_threshold, and the viewer hides influence > node_threshold
    assert all(why.startswith("influence 0.80") for why in report.hidden_by_viewer.values())
    assert not report.console_errors and not report.page_errors
    assert not report.failed_requests and not report.blocked_requests
    urls = [r["url"].split("/", 3)[-1] for r in report.requests]
    assert "data/graph-metadata.json" in urls and "graph_data/transcoder_set.json" in urls


def test_a_feature_click_with_a_hub_scan_asks_the_hub(graphs: dict) -> None:
    """circuit-tracer's own export names the scan, and a click asks huggingface.co for the
    scan's feature index: offline that request is blocked and the panel has no examples."""
    export = Path(graphs["transcoder_set"]["npz"]).parent / "transcoder_set-export"
    scan = json.loads((export / "transcoder_set.json").read_text())["metadata"]["scan"]
    report = viewer.check_graph_in_viewer(export, "transcoder_set", click_feature=True)
    click = report.click
    assert click is not None and click["clicked_node_ids"] == [click["target"]]
    layer, index, _pos = click["target"].split("_")
    assert f"L{layer}/{index}" in click["panel_title"]
    hub = f"https://huggingface.co/{scan}/resolve/main/features/index.json.gz"
    assert {r["url"] for r in report.blocked_requests} == {hub}
    assert report.page_errors and all("Failed to fetch" in e for e in report.page_errors)


def test_a_feature_click_with_a_local_scan_reads_the_feature_file(
    ct_python: Path, planted: dict[str, Path], tmp_path: Path
) -> None:
    """With scan "./data/features" the viewer fetches /data/features/{feature}.json, which
    local_server reads from features/{feature}.json beside the graph; `feature` is the
    node's Cantor pair of (layer, index). That file is what lenstop must write."""
    export = tmp_path / "export"
    circuit_tracer_env.run_reference(
        "--model", DEMO, "--transcoders", planted["transcoder_set"], "--tokens", ",".join(map(str, _tokens())),
        "--out", tmp_path / "g.npz", "--export", export, "--slug", "local", "--scan", "./data/features",
    )  # fmt: skip
    graph = json.loads((export / "local.json").read_text())
    first = next(n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder")
    (export / "features").mkdir()
    (export / "features" / f"{first['feature']}.json").write_text(json.dumps(_feature_json(first["feature"])))
    report = viewer.check_graph_in_viewer(export, "local", click_node_id=first["node_id"])
    assert not report.missing and not report.unexpected
    click = report.click
    assert click is not None and click["clicked_node_ids"] == [first["node_id"]]
    fetched = [r["url"].split("/", 3)[-1] for r in click["requests"]]
    assert f"data/features/{first['feature']}.json" in fetched
    assert not report.blocked_requests and not report.failed_requests
    assert not report.console_errors and not report.page_errors
    assert "Top activations" in click["panel_text"] and "add" in click["panel_text"]


def test_the_harness_sees_a_node_the_viewer_hides(graphs: dict, tmp_path: Path) -> None:
    """Not a vacuous count: raise one feature's influence above the threshold and the viewer
    stops drawing it, which viewer_hides predicts."""
    source = Path(graphs["transcoder_set"]["npz"]).parent / "transcoder_set-export"
    export = tmp_path / "export"
    export.mkdir()
    (export / "graph-metadata.json").write_text((source / "graph-metadata.json").read_text())
    graph = json.loads((source / "transcoder_set.json").read_text())
    node = next(n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder")
    node["influence"] = 0.99
    (export / "transcoder_set.json").write_text(json.dumps(graph))
    report = viewer.check_graph_in_viewer(export, "transcoder_set", click_feature=False)
    assert node["node_id"] in report.hidden_by_viewer and node["node_id"] not in report.drawn_node_ids
    assert sorted(report.drawn_node_ids) == sorted(report.expected_node_ids)
    before = viewer.viewer_hides(json.loads((source / "transcoder_set.json").read_text()), 0.8)
    assert set(report.hidden_by_viewer) == {*before, node["node_id"]}
    assert not report.page_errors and not report.console_errors
