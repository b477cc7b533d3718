"""lenstop's attribution graphs equal circuit-tracer 0.5.0's, run in a venv of its own (tests/reference/).

For the same model, transcoders and prompt, per-layer and cross-layer: the same nodes, activations within
1e-5, every edge within 1e-4 of the largest, the scores within 1e-4, the same pruned nodes. The prompts are
drawn at test time from the demo's held-out text (the drawn prompt is in every failure message), besides the
README's induction prompt. A reference that cannot be built fails these tests; it never skips them.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))  # tests/reference.py owns the name

import circuit_tracer_env  # noqa: E402

from lenstop.models import demo  # noqa: E402
from lenstop.models.graphs import AttributionGraph  # noqa: E402

INDUCTION = "x = [alpha, beta, gamma, delta]\ny = [alpha, beta, gamma,"
KINDS = ("transcoder_set", "cross_layer_transcoder")


def drawn_prompt(rng: random.Random, n_chars: int = 90) -> str:
    text = demo.HOLDOUT_SAMPLE.read_text()
    start = rng.randrange(0, len(text) - n_chars)
    return text[start : start + n_chars]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("planted")
    return {
        kind: circuit_tracer_env.plant_transcoders(root / kind, demo.MODEL_DIR, kind=kind, n_features=256, seed=7 + i)
        for i, kind in enumerate(KINDS)
    }


@pytest.fixture(scope="module")
def engines(planted: dict[str, Path]) -> dict[str, Any]:
    from lenstop.models.engine import Engine

    return {kind: Engine.load("demo", [str(path)], device="cpu") for kind, path in planted.items()}


def reference(transcoders: Path, graph: AttributionGraph, **options: Any) -> dict[str, np.ndarray]:
    args = ["--model", demo.MODEL_DIR, "--transcoders", transcoders, "--tokens", ",".join(map(str, graph.token_ids))]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return circuit_tracer_env.run_reference(*args, "--threads", "1")["arrays"]


def assert_same_graph(graph: AttributionGraph, ref: dict[str, np.ndarray], prompt: str) -> None:
    said = f"on prompt {prompt!r}"
    active = ref["active_features"][ref["selected_features"]]
    ours = [(n.layer, n.position, n.feature) for n in graph.nodes[: graph.n_features]]
    assert ours == [tuple(map(int, row)) for row in active], f"different feature nodes {said}"
    assert graph.n_active_features == len(ref["active_features"]), said
    acts = np.array([n.activation for n in graph.nodes[: graph.n_features]])
    np.testing.assert_allclose(acts, ref["activation_values"][ref["selected_features"]], atol=1e-5, err_msg=said)
    assert [t.id for t in graph.targets] == ref["logit_token_ids"].tolist(), f"different targets {said}"
    np.testing.assert_allclose([t.prob for t in graph.targets], ref["logit_probabilities"], atol=1e-5, err_msg=said)
    dense = graph.adjacency.to_dense().numpy()
    theirs = ref["adjacency_matrix"]
    assert dense.shape == theirs.shape, said
    scale = np.abs(theirs).max()
    worst = np.abs(dense - theirs).max()
    assert worst <= 1e-4 * scale, f"an edge differs by {worst:.3g} (largest {scale:.3g}) {said}"
    for ours_score, name in (
        (graph.replacement_score, "replacement_score"),
        (graph.completeness_score, "completeness_score"),
        (graph.pruned.replacement_score, "pruned_replacement_score"),
        (graph.pruned.completeness_score, "pruned_completeness_score"),
    ):
        assert ours_score == pytest.approx(float(ref[name]), abs=1e-4), f"{name} {said}"
    influence = np.array([n.influence for n in graph.nodes])
    np.testing.assert_allclose(influence, ref["node_influence"], atol=1e-4 * ref["node_influence"].max(), err_msg=said)
    kept = np.zeros(len(graph.nodes), dtype=bool)
    kept[list(graph.pruned.nodes)] = True
    assert (kept == ref["node_mask"]).all(), f"different pruned nodes ({(kept != ref['node_mask']).sum()}) {said}"


@pytest.mark.parametrize("spec", ["demo:transcoders", "demo:clt"])
def test_the_demos_own_transcoders_give_circuit_tracers_graph(spec: str) -> None:
    from lenstop.models.engine import Engine

    folder = demo.TRANSCODER_ROOT if spec == "demo:transcoders" else demo.CLT_ROOT
    engine = Engine.load("demo", [spec], device="cpu")
    prompt = drawn_prompt(random.Random(), 120)
    graph = engine.graph(prompt)
    assert graph.n_features > 100
    assert_same_graph(graph, reference(folder, graph), prompt)


@pytest.mark.parametrize("kind", KINDS)
def test_the_graph_equals_circuit_tracers_on_a_drawn_prompt_and_the_induction_prompt(kind, planted, engines):
    rng = random.Random()  # a fresh prompt every run: the equality must not depend on the prompt
    for prompt in (drawn_prompt(rng), INDUCTION):
        graph = engines[kind].graph(prompt)
        assert graph.n_features > 100 and len(graph.targets) >= 1
        assert_same_graph(graph, reference(planted[kind], graph), prompt)


def test_named_targets_and_a_feature_budget_equal_circuit_tracers(planted, engines):
    prompt = INDUCTION
    engine = engines["transcoder_set"]
    named = [f"#{t.id}" for t in reversed(engine.graph(prompt).targets[:2])]  # by id, and out of order
    graph = engine.graph(prompt, targets=named, max_feature_nodes=120, batch_size=32)
    assert graph.n_features == 120 < graph.n_active_features
    ids = ",".join(str(t.id) for t in graph.targets)
    ref = reference(planted["transcoder_set"], graph, targets=ids, max_feature_nodes=120, batch_size=32)
    assert_same_graph(graph, ref, prompt)


def test_the_logit_difference_target_reads_the_difference_of_the_two_columns(engines):
    engine = engines["transcoder_set"]
    answer, wrong = (f"#{t.id}" for t in engine.graph(INDUCTION).targets[:2])
    both = engine.graph(INDUCTION, targets=[answer, wrong])
    diff = engine.graph(INDUCTION, targets=[answer], wrong=wrong)
    assert len(diff.targets) == 1 and diff.targets[0].wrong == both.targets[1].id
    first = len(both.nodes) - 2
    # the difference's row is the answer's row less the wrong token's (the mean column cancels)
    rows = both.adjacency.to_dense()[first : first + 2]
    expected = rows[0] - rows[1]
    got = diff.adjacency.to_dense()[-1]
    n = both.n_features + (both.n_layers + 1) * both.n_pos
    torch.testing.assert_close(got[:n], expected[:n], atol=1e-4 * float(expected.abs().max()), rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_interventions_equal_circuit_tracers_feature_intervention(kind, planted, engines):
    """Ablating the graph's most influential features and doubling another moves the logits as
    circuit-tracer's `feature_intervention` does, with attention frozen and with it recomputed."""
    from lenstop.models.graphs import NodeSetting

    prompt = drawn_prompt(random.Random())
    engine = engines[kind]
    graph = engine.graph(prompt)
    features = sorted(graph.nodes[: graph.n_features], key=lambda n: -n.influence)
    settings = [NodeSetting(n.layer, n.position, n.feature, 0.0) for n in features[:3]]
    settings.append(
        NodeSetting(features[3].layer, features[3].position, features[3].feature, 2 * features[3].activation)
    )
    spec = ";".join(f"{s.layer},{s.position},{s.feature},{s.value!r}" for s in settings)
    ref = reference(planted[kind], graph, interventions=spec)
    gap = np.abs(ref["intervened_logits_frozen"] - ref["intervened_logits_free"]).max()
    assert gap > 1e-3, "freezing attention must matter here, or the two runs test one thing"
    for freeze, name in ((True, "frozen"), (False, "free")):
        result = engine.intervene_graph(graph, settings, freeze_attention=freeze)
        theirs = ref[f"intervened_logits_{name}"]
        said = f"attention {name}, on prompt {prompt!r}"
        moved = max(abs(t.new_logit - t.clean_logit) for t in result.targets)
        assert moved > 1e-2, f"the settings hardly move the targets {said}"
        for t in result.targets:
            assert t.clean_logit == pytest.approx(float(ref["clean_logits"][t.id]), abs=1e-4), said
            assert t.new_logit == pytest.approx(float(theirs[t.id]), abs=1e-4), f"target {t.token!r} {said}"
        probs = torch.from_numpy(theirs).softmax(-1)
        top = torch.topk(probs, len(result.top))
        np.testing.assert_allclose([p for _, p in result.top], top.values.numpy(), atol=1e-5, err_msg=said)
