"""Every circuit number against an independent computation, on a tiny random GPT-2
with a standard SAE at each block's input (resid_pre):

- direct logit attribution against a sum written by hand from the Hugging Face model's own weights;
- feature, error and head attributions against torch autograd through hooks written here on the
  Hugging Face model, and against finite differences through the engine's own interventions;
- real effects against interventions and hand-written hooks;
- integrated gradients against their completeness (they add up to the effect of removing the group);
- activation patching against hand-written patching hooks, in both directions, and its estimate against
  autograd by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.engine import Engine
from lenstop.models.errors import LengthMismatchError, UsageError
from lenstop.models.interventions import FeatureAblation, FeatureClamp, HeadKnockout

from reference import hf_model, load_sae

PROMPT = "def add(first, second):\n    return first + second"
CORRUPT = "def sub(other, second):\n    return first - second"


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Any:
    return hf_model(tiny_model)


@pytest.fixture(scope="module")
def saes(resid_saes: Path) -> dict[int, Any]:
    return {layer: load_sae(resid_saes / f"L{layer}") for layer in (0, 1)}


def _metric(logits: torch.Tensor, position: int, target: int, wrong: int | None = None) -> torch.Tensor:
    row = logits[0, position]
    return row[target] - row[wrong] if wrong is not None else row.log_softmax(-1)[target]


def _tokens(engine: Engine, prompt: str = PROMPT) -> torch.Tensor:
    return engine.tokenize(prompt)


class HandSplice:
    """GPT-2 from Hugging Face with each SAE spliced in at its block's input, written out here: leaves
    for the features and the errors, a zero leaf on every head's slice of c_proj's input, and on the
    embeddings; one backward pass of the metric fills their gradients."""

    def __init__(self, hf: Any, saes: dict[int, Any], tokens: torch.Tensor) -> None:
        self.feats: dict[int, torch.Tensor] = {}
        self.errors: dict[int, torch.Tensor] = {}
        self.z: dict[int, torch.Tensor] = {}
        self.z_delta: dict[int, torch.Tensor] = {}
        self.inputs: dict[int, torch.Tensor] = {}  # each block's input before the splice, attached upstream
        handles = []

        def splice(layer: int) -> Any:
            def pre(module: Any, args: tuple, kwargs: dict) -> Any:
                x = (args[0] if args else kwargs["hidden_states"])[0]
                sae = saes[layer]
                self.inputs[layer] = x
                f = sae.encode(x.detach()).detach().requires_grad_(True)
                err = (x.detach() - sae.decode(f.detach())).detach().requires_grad_(True)
                self.feats[layer], self.errors[layer] = f, err
                new = (sae.decode(f) + err + (x - x.detach())).unsqueeze(0)
                if layer == 0:
                    self.embed = x.detach()
                    self.embed_delta = torch.zeros_like(new, requires_grad=True)
                    new = new + self.embed_delta
                if args:
                    return (new, *args[1:]), kwargs
                kwargs["hidden_states"] = new
                return args, kwargs

            return pre

        def heads(layer: int) -> Any:
            def pre(module: Any, args: tuple) -> Any:
                z = args[0]
                self.z[layer] = z[0].detach()
                self.z_delta[layer] = torch.zeros_like(z, requires_grad=True)
                return (z + self.z_delta[layer],)

            return pre

        for layer, block in enumerate(hf.transformer.h):
            handles.append(block.register_forward_pre_hook(splice(layer), with_kwargs=True))
            handles.append(block.attn.c_proj.register_forward_pre_hook(heads(layer)))
        try:
            with torch.enable_grad():
                self.logits = hf(tokens).logits
        finally:
            for h in handles:
                h.remove()

    def backward(self, value: torch.Tensor) -> None:
        value.backward()


# ---------------------------------------------------------------- direct logit attribution
@pytest.mark.parametrize("wrong", [None, "("])
def test_direct_attribution_equals_a_sum_by_hand(engine: Engine, hf: Any, wrong: str | None) -> None:
    tokens = _tokens(engine)
    found = engine.direct(PROMPT, Metric(wrong=wrong), sources=True)
    pos, t, w = found.metric.position, found.metric.target_id, found.metric.wrong_id
    seen: dict[str, Any] = {}
    handles = [hf.transformer.ln_f.register_forward_pre_hook(lambda m, a: seen.__setitem__("final", a[0][0]))]
    for layer, block in enumerate(hf.transformer.h):
        handles.append(
            block.attn.c_proj.register_forward_pre_hook(lambda m, a, L=layer: seen.__setitem__(f"z{L}", a[0][0]))
        )
        handles.append(block.mlp.register_forward_hook(lambda m, a, out, L=layer: seen.__setitem__(f"mlp{L}", out[0])))
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
    for h in handles:
        h.remove()
    ln = hf.transformer.ln_f
    final = seen["final"][pos]
    scale = ((final - final.mean()) ** 2).mean().add(ln.eps).sqrt()
    direction = hf.lm_head.weight[t] - (hf.lm_head.weight[w] if w is not None else 0)

    @torch.no_grad()
    def part(x: torch.Tensor) -> float:  # through the final LayerNorm, its scale frozen, its bias left out
        return float(((x - x.mean()) / scale * ln.weight) @ direction)

    cfg = hf.config
    d_head = cfg.n_embd // cfg.n_head
    for layer, block in enumerate(hf.transformer.h):
        z = seen[f"z{layer}"][pos]
        for head in range(cfg.n_head):
            sl = slice(head * d_head, (head + 1) * d_head)
            assert found.heads[layer, head] == pytest.approx(part(z[sl] @ block.attn.c_proj.weight[sl]), abs=1e-4)
        assert found.mlps[layer] == pytest.approx(part(seen[f"mlp{layer}"][pos]), abs=1e-4)
        # By source position, a head's parts add up to the head.
        assert found.head_sources[layer].sum(-1) == pytest.approx(found.heads[layer], abs=1e-4)
    assert found.embed == pytest.approx(part(out.hidden_states[0][0, pos]), abs=1e-4)
    logits = out.logits[0, pos]
    total = float(logits[t] - logits[w]) if w is not None else float(logits.log_softmax(-1)[t])
    parts = found.embed + found.heads.sum() + found.mlps.sum() + found.bias + found.normaliser
    assert found.total == pytest.approx(total, rel=1e-4, abs=1e-5)
    assert parts == pytest.approx(total, rel=1e-4, abs=1e-5)
    assert (found.normaliser == 0.0) == (w is not None)


# ---------------------------------------------------------------- gradient attribution
def test_attributions_equal_autograd_through_hand_written_hooks(engine: Engine, hf: Any, saes: dict[int, Any]) -> None:
    found = engine.attribute(PROMPT, top=None)
    mv = found.metric
    hand = HandSplice(hf, saes, _tokens(engine))
    hand.backward(_metric(hand.logits, mv.position, mv.target_id))
    assert found.metric.clean == pytest.approx(
        float(_metric(hand.logits.detach(), mv.position, mv.target_id)), abs=1e-5
    )
    by_node = {s.node: s.attribution for s in found.nodes}
    checked = {"feature": 0, "error": 0, "head": 0, "embed": 0}
    for layer in (0, 1):
        attr = hand.feats[layer].grad * hand.feats[layer]
        for pos, feature in (hand.feats[layer] != 0).nonzero().tolist():
            expected = float(attr[pos, feature].detach())
            assert by_node.get(Node("feature", layer, pos, feature=feature), 0.0) == pytest.approx(expected, abs=1e-5)
            checked["feature"] += 1
        err = (hand.errors[layer].grad * hand.errors[layer]).sum(-1)
        for pos, expected in enumerate(err.tolist()):
            assert by_node.get(Node("error", layer, pos), 0.0) == pytest.approx(expected, abs=1e-5)
            checked["error"] += 1
        d_head = hf.config.n_embd // hf.config.n_head
        z_attr = (hand.z_delta[layer].grad[0] * hand.z[layer]).reshape(len(found.tokens), hf.config.n_head, d_head)
        for pos, row in enumerate(z_attr.sum(-1).tolist()):
            for head, expected in enumerate(row):
                assert by_node.get(Node("head", layer, pos, head=head), 0.0) == pytest.approx(expected, abs=1e-5)
                checked["head"] += 1
        assert found.head_totals[layer] == pytest.approx(z_attr.sum(-1).sum(0).numpy(), abs=1e-4)
    embed = (hand.embed_delta.grad[0] * hand.embed).sum(-1)
    for pos, expected in enumerate(embed.tolist()):
        assert by_node.get(Node("embed", None, pos), 0.0) == pytest.approx(expected, abs=1e-5)
        checked["embed"] += 1
    assert min(checked.values()) > 0, checked
    ranked = [abs(s.attribution) for s in found.nodes]
    assert ranked == sorted(ranked, reverse=True)


def test_feature_attributions_agree_with_finite_differences(engine: Engine) -> None:
    """attribution = f * dm/df: clamping f to f(1 - eps) through the engine's own interventions moves m by eps * it."""
    found = engine.attribute(PROMPT, top=None)
    mv = found.metric
    tokens = _tokens(engine)

    def m(interventions: list[Any]) -> float:
        return float(_metric(engine.logits(PROMPT, interventions).unsqueeze(0), mv.position, mv.target_id))

    clean = m([])
    features = [s for s in found.nodes if s.node.kind == "feature" and abs(s.attribution) > 1e-3][:5]
    assert len(features) >= 3 and len(tokens[0]) > 5
    eps = 1e-3
    for s in features:
        n = s.node
        assert s.activation is not None and n.layer is not None and n.feature is not None
        moved = m([FeatureClamp(n.layer, n.feature, s.activation * (1 - eps), position=n.position)])
        assert (clean - moved) / eps == pytest.approx(s.attribution, rel=2e-2, abs=1e-4)


def test_a_corrupted_baseline_uses_the_difference_of_values(engine: Engine, hf: Any, saes: dict[int, Any]) -> None:
    found = engine.attribute(PROMPT, corrupt=CORRUPT, top=None)
    corrupt = HandSplice(hf, saes, _tokens(engine, CORRUPT))
    hand = HandSplice(hf, saes, _tokens(engine))
    hand.backward(_metric(hand.logits, found.metric.position, found.metric.target_id))
    by_node = {s.node: s.attribution for s in found.nodes}
    attr = hand.feats[1].grad * (hand.feats[1] - corrupt.feats[1])
    for pos, feature in ((hand.feats[1] != 0) | (corrupt.feats[1] != 0)).nonzero().tolist()[:40]:
        expected = float(attr[pos, feature].detach())
        assert by_node.get(Node("feature", 1, pos, feature=feature), 0.0) == pytest.approx(expected, abs=1e-5)
    assert found.corrupt_prompt == CORRUPT and found.to_json()["baseline"] == "corrupt"


def test_prompts_of_different_lengths_are_refused_with_an_alignment(engine: Engine) -> None:
    with pytest.raises(LengthMismatchError) as info:
        engine.attribute(PROMPT, corrupt=PROMPT + " + 1")
    lines = info.value.alignment()
    assert lines[0].startswith("clean ") and lines[1].startswith("corrupt ") and "^" in lines[2]
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- real effects
def test_real_effects_equal_interventions_and_hand_written_hooks(engine: Engine, hf: Any) -> None:
    found = engine.attribute(PROMPT, top=None)
    mv = found.metric
    pick = {
        kind: next(s.node for s in found.nodes if s.node.kind == kind) for kind in ("feature", "head", "error", "embed")
    }
    nodes = [*pick.values(), Node("head", 1, None, head=2), Node("mlp", 0, 3)]
    real = engine.effects(PROMPT, Metric(), nodes)

    def m(interventions: list[Any]) -> float:
        return float(_metric(engine.logits(PROMPT, interventions).unsqueeze(0), mv.position, mv.target_id))

    f, h = pick["feature"], pick["head"]
    assert f.layer is not None and f.feature is not None and h.layer is not None and h.head is not None
    assert real[0] == pytest.approx(mv.clean - m([FeatureAblation(f.layer, f.feature, f.position)]), abs=1e-4)
    assert real[1] == pytest.approx(mv.clean - m([HeadKnockout(h.layer, h.head, h.position)]), abs=1e-4)
    assert real[4] == pytest.approx(mv.clean - m([HeadKnockout(1, 2)]), abs=1e-4)
    tokens = _tokens(engine)

    def hf_with(edit: Callable[[torch.Tensor], torch.Tensor], module: Any) -> float:
        handle = module.register_forward_hook(lambda mod, args, out: edit(out))
        try:
            with torch.no_grad():
                return float(_metric(hf(tokens).logits, mv.position, mv.target_id))
        finally:
            handle.remove()

    def zero_at(pos: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def edit(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[0, pos] = 0
            return out

        return edit

    e = pick["embed"]
    assert e.position is not None
    embeddings_zeroed = hf_with(lambda out: zero_at(e.position)(out), hf.transformer.drop)  # after wte + wpe
    assert real[3] == pytest.approx(mv.clean - embeddings_zeroed, abs=1e-4)
    mlp_zeroed = hf_with(zero_at(3), hf.transformer.h[0].mlp)
    assert real[5] == pytest.approx(mv.clean - mlp_zeroed, abs=1e-4)
    # The error node: removing it leaves x-hat, which is what ablating nothing but the error does.
    err = pick["error"]
    sae_out = engine.attribute(PROMPT, top=None, real=len(found.nodes))
    measured = {s.node: s.real for s in sae_out.nodes}
    assert measured[err] == pytest.approx(real[2], abs=1e-5)


def test_real_effects_are_reported_beside_the_estimates(engine: Engine) -> None:
    found = engine.attribute(PROMPT, top=12, real=8)
    assert [s.real is not None for s in found.nodes] == [True] * 8 + [False] * 4
    assert found.correlation is not None and -1 <= found.correlation <= 1
    with pytest.raises(UsageError, match="real effects"):
        engine.attribute(PROMPT, path=(Node("head", 1, None, head=0),), real=3)


# ---------------------------------------------------------------- integrated gradients
def test_integrated_gradients_add_up_to_removing_the_group(engine: Engine, hf: Any, saes: dict[int, Any]) -> None:
    """Completeness: a group's attributions sum to the metric's fall when the whole group goes to its baseline."""
    found = engine.attribute(PROMPT, top=None, steps=64)
    mv = found.metric
    tokens = _tokens(engine)
    layer = 1
    in_group = sum(s.attribution for s in found.nodes if s.node.kind in ("feature", "error") and s.node.layer == layer)

    def pre(module: Any, args: tuple, kwargs: dict) -> Any:  # every feature and the error at zero: x = b_dec
        hidden = args[0] if args else kwargs["hidden_states"]
        new = saes[layer].b_dec.expand_as(hidden[0]).unsqueeze(0)
        if args:
            return (new, *args[1:]), kwargs
        kwargs["hidden_states"] = new
        return args, kwargs

    handle = hf.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            removed = float(_metric(hf(tokens).logits, mv.position, mv.target_id))
    finally:
        handle.remove()
    assert in_group == pytest.approx(mv.clean - removed, rel=2e-2, abs=2e-3)
    heads = sum(s.attribution for s in found.nodes if s.node.kind == "head" and s.node.layer == 0)
    knocked = engine.logits(PROMPT, [HeadKnockout(0, h) for h in range(engine.n_heads)]).unsqueeze(0)
    assert heads == pytest.approx(mv.clean - float(_metric(knocked, mv.position, mv.target_id)), rel=2e-2, abs=2e-3)
    assert found.method == "integrated-gradients:64"


# ---------------------------------------------------------------- following a node upstream
def test_a_features_upstream_is_its_activations_gradient(engine: Engine, hf: Any, saes: dict[int, Any]) -> None:
    clean = engine.attribute(PROMPT, top=None)
    target = next(s.node for s in clean.nodes if s.node.kind == "feature" and s.node.layer == 1)
    assert target.position is not None and target.feature is not None
    up = engine.attribute(PROMPT, path=(target,), top=None)
    hand = HandSplice(hf, saes, _tokens(engine))
    with torch.enable_grad():
        activation = saes[1].encode(hand.inputs[1])[target.position, target.feature]
    assert up.target_value == pytest.approx(float(activation.detach()), abs=1e-5)
    activation.backward()
    attr = hand.feats[0].grad * hand.feats[0]
    by_node = {s.node: s.attribution for s in up.nodes}
    for pos, feature in (hand.feats[0] != 0).nonzero().tolist():
        assert by_node.get(Node("feature", 0, pos, feature=feature), 0.0) == pytest.approx(
            float(attr[pos, feature].detach()), abs=1e-5
        )
    assert all(s.node.position is None or s.node.position <= target.position for s in up.nodes)  # causal
    assert not any(s.node.layer == 1 and s.node.kind in ("feature", "error") for s in up.nodes)  # nothing downstream


def test_following_a_head_explains_its_contribution(engine: Engine) -> None:
    clean = engine.attribute(PROMPT, top=None)
    head = next(s for s in clean.nodes if s.node.kind == "head" and s.node.layer == 1)
    up = engine.attribute(PROMPT, path=(head.node,), top=None)
    # The followed value is the head's contribution: its output times the metric's gradient there, its attribution.
    assert up.target_value == pytest.approx(head.attribution, abs=1e-5)
    assert up.target == head.node and all(s.node != head.node for s in up.nodes)
    with pytest.raises(UsageError, match="input of the graph"):
        engine.attribute(PROMPT, path=(Node("embed", None, 1),))


# ---------------------------------------------------------------- patching
@pytest.mark.parametrize("direction", ["clean->corrupt", "corrupt->clean"])
def test_patching_equals_hand_written_hooks(engine: Engine, hf: Any, direction: str) -> None:
    found = engine.patch(PROMPT, CORRUPT, Metric(wrong="("), direction=direction, features=10)  # type: ignore[arg-type]
    mv = found.metric
    clean_tokens, corrupt_tokens = _tokens(engine), _tokens(engine, CORRUPT)
    base_tokens, source_tokens = (
        (corrupt_tokens, clean_tokens) if direction == "clean->corrupt" else (clean_tokens, corrupt_tokens)
    )
    with torch.no_grad():
        hidden = hf(source_tokens, output_hidden_states=True).hidden_states
        m_clean = float(_metric(hf(clean_tokens).logits, mv.position, mv.target_id, mv.wrong_id))
        m_corrupt = float(_metric(hf(corrupt_tokens).logits, mv.position, mv.target_id, mv.wrong_id))
    assert (found.clean_metric, found.corrupt_metric) == pytest.approx((m_clean, m_corrupt), abs=1e-4)

    def share(m: float) -> float:
        moved = m - m_corrupt if direction == "clean->corrupt" else m_clean - m
        return moved / (m_clean - m_corrupt)

    def run(module: Any, edit: Callable[[torch.Tensor], torch.Tensor], pre: bool = True) -> float:
        if pre:
            handle = module.register_forward_pre_hook(lambda mod, args: (edit(args[0]), *args[1:]))
        with torch.no_grad():
            out = float(_metric(hf(base_tokens).logits, mv.position, mv.target_id, mv.wrong_id))
        handle.remove()
        return out

    for layer, pos in [(0, 2), (1, 5), (1, len(found.tokens) - 1)]:

        def put(x: torch.Tensor, layer: int = layer, pos: int = pos) -> torch.Tensor:
            x = x.clone()
            x[0, pos] = hidden[layer][0, pos]
            return x

        expected = share(run(hf.transformer.h[layer], put))
        assert found.resid[layer, pos] == pytest.approx(expected, abs=1e-4)

    seen: dict[int, torch.Tensor] = {}
    handles = [
        block.attn.c_proj.register_forward_pre_hook(lambda m, a, L=L: seen.__setitem__(L, a[0].clone()))
        for L, block in enumerate(hf.transformer.h)
    ]
    with torch.no_grad():
        hf(source_tokens)
    for h in handles:
        h.remove()
    d_head = hf.config.n_embd // hf.config.n_head
    for layer, head in [(0, 1), (1, 3)]:
        sl = slice(head * d_head, (head + 1) * d_head)

        def swap(z: torch.Tensor, layer: int = layer, sl: slice = sl) -> torch.Tensor:
            z = z.clone()
            z[..., sl] = seen[layer][..., sl]
            return z

        expected = share(run(hf.transformer.h[layer].attn.c_proj, swap))
        assert found.heads[layer, head] == pytest.approx(expected, abs=1e-4)
        assert found.head_positions is not None
        pos = len(found.tokens) - 1

        def swap_at(z: torch.Tensor, layer: int = layer, sl: slice = sl, pos: int = pos) -> torch.Tensor:
            z = z.clone()
            z[0, pos, sl] = seen[layer][0, pos, sl]
            return z

        assert found.head_positions[layer, head, pos] == pytest.approx(
            share(run(hf.transformer.h[layer].attn.c_proj, swap_at)), abs=1e-4
        )
    assert found.direction == direction and found.to_json()["direction"] == direction
    assert len(found.features) == 10 and all(np.isfinite([f.restored, f.estimate]).all() for f in found.features)


def test_attribution_patching_estimates_equal_autograd_by_hand(engine: Engine, hf: Any) -> None:
    found = engine.patch(PROMPT, CORRUPT, Metric(wrong="("), head_positions=False, features=0)
    mv = found.metric
    clean_tokens, corrupt_tokens = _tokens(engine), _tokens(engine, CORRUPT)
    with torch.no_grad():
        clean_hidden = hf(clean_tokens, output_hidden_states=True).hidden_states
    with torch.enable_grad():
        out = hf(corrupt_tokens, output_hidden_states=True)
        for h in out.hidden_states:
            h.retain_grad()
        _metric(out.logits, mv.position, mv.target_id, mv.wrong_id).backward()
    diff = found.clean_metric - found.corrupt_metric
    for layer in range(engine.n_layers):
        grad, corrupt_h = out.hidden_states[layer].grad[0], out.hidden_states[layer][0].detach()
        expected = ((grad * (clean_hidden[layer][0] - corrupt_h)).sum(-1) / diff).numpy()
        np.testing.assert_allclose(found.resid_estimate[layer], expected, atol=1e-4)
    assert found.agreement()["resid"] is not None


def test_patching_refuses_prompts_that_do_not_line_up(engine: Engine) -> None:
    with pytest.raises(LengthMismatchError):
        engine.patch(PROMPT, "x", Metric())
    with pytest.raises(UsageError, match="same on both"):
        engine.patch(PROMPT, PROMPT, Metric())
    with pytest.raises(UsageError, match="direction"):
        engine.patch(PROMPT, CORRUPT, Metric(), direction="sideways")  # type: ignore[arg-type]


def test_no_hook_outlives_its_run(engine: Engine) -> None:
    """Every method scopes its hooks to the run, also when the run fails half way."""
    engine.attribute(PROMPT, top=3, steps=2, real=2)
    engine.direct(PROMPT)
    engine.patch(PROMPT, CORRUPT, Metric(wrong="("), head_positions=False, features=2)
    engine.analyse(PROMPT, [FeatureAblation(1, 3)])
    with pytest.raises(UsageError):
        engine.analyse(PROMPT, [FeatureAblation(1, 10**6)])
    with pytest.raises(LengthMismatchError):
        engine.attribute(PROMPT, corrupt="x")
    points = {id(p): p for p in engine.model.hook_dict.values()}.values()
    assert sum(len(p.fwd_hooks) + len(p.bwd_hooks) for p in points) == 0


def test_direct_attribution_in_half_precision_adds_up_within_its_rounding(tiny_model: Path, resid_saes: Path) -> None:
    half = Engine.load(str(tiny_model), [str(resid_saes)], device="cpu", dtype="bfloat16")
    found = half.direct(PROMPT, Metric(), sources=True)
    parts = found.embed + float(found.heads.sum()) + float(found.mlps.sum()) + found.bias + found.normaliser
    assert parts == pytest.approx(found.total, rel=5e-2, abs=5e-2)


def test_nodes_outside_the_model_or_prompt_are_usage_errors(engine: Engine) -> None:
    for bad, message in [
        (Node("head", 9, 1, head=1), "layers"),
        (Node("head", 1, 1, head=99), "heads"),
        (Node("head", 1, 99, head=1), "positions"),
        (Node("feature", 1, 2, feature=10**6), "features"),
    ]:
        with pytest.raises(UsageError, match=message):
            engine.attribute(PROMPT, path=(bad,))
        with pytest.raises(UsageError, match=message):
            engine.effects(PROMPT, Metric(), [bad])


def test_nested_hook_contexts_remove_only_their_own(engine: Engine) -> None:
    seen: list[str] = []
    name = "blocks.1.hook_resid_pre"
    with engine.hooks([(name, lambda x, hook: seen.append("outer"))]):
        with engine.hooks([(name, lambda x, hook: seen.append("inner"))]):
            engine.model(engine.tokenize(PROMPT))
        engine.model(engine.tokenize(PROMPT))
    engine.model(engine.tokenize(PROMPT))
    assert seen == ["outer", "inner", "outer"]


# ---------------------------------------------------------------- integrated gradients' memory
def test_integrated_gradients_run_in_bounded_chunks_with_the_same_result(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory must not grow with --steps: no pass runs more than IG_ROWS rows, whatever the steps, and summing
    the chunks' gradients gives what one pass of every step gave."""
    from lenstop.models.circuits import attribution

    rows: list[int] = []
    real_run_rows = attribution.run_rows

    def counted(engine: Engine, tokens: torch.Tensor, n: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows.append(n)
        return real_run_rows(engine, tokens, n, *args, **kwargs)

    monkeypatch.setattr(attribution, "run_rows", counted)
    monkeypatch.setattr(attribution, "IG_ROWS", 5)
    chunked = engine.attribute(PROMPT, top=None, steps=37)
    assert rows and max(rows) == 5 and sum(rows) % 37 == 0  # 37 rows of every group, 5 at a time
    monkeypatch.setattr(attribution, "IG_ROWS", 1000)
    rows.clear()
    whole = engine.attribute(PROMPT, top=None, steps=37)
    assert max(rows) == 37
    got = {s.node: s.attribution for s in chunked.nodes}
    want = {s.node: s.attribution for s in whole.nodes}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[n] for n in want], list(want.values()), rtol=1e-4, atol=1e-6)


def test_rows_a_pass_shrink_with_the_prompt_and_never_vanish(engine: Engine) -> None:
    from lenstop.models.circuits.rows import rows_within

    assert rows_within(engine, 10, 16, grad=True) == 16
    long = rows_within(engine, 10**6, 16, grad=True)
    assert long == 1  # a million tokens of rows would pass the budget: one row a pass, never zero
    rows = rows_within(engine, 100, 10**6, grad=True)
    assert rows > 2 and rows_within(engine, 200, 10**6, grad=True) in (rows // 2, rows // 2 + 1)  # by the token
    assert rows_within(engine, 100, 10**6) > rows  # a pass with no backward one keeps less a row


@pytest.mark.parametrize("steps", [-1, 1025, 2**70])
def test_too_many_or_negative_steps_are_a_usage_error(engine: Engine, steps: int) -> None:
    with pytest.raises(UsageError, match=f"--steps {steps}: integrated gradients takes 1 to 1,024 steps"):
        engine.attribute(PROMPT, steps=steps)
    with pytest.raises(UsageError, match="--steps"):
        engine.circuit(PROMPT, steps=steps)
