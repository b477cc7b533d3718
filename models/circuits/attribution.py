"""Feature attribution (Marks et al. 2024, Sparse Feature Circuits), for every node at once.

A node's attribution to a target is the target's gradient at the node, dotted
with the node's clean value minus its baseline value (zero, or its value on a
corrupted prompt): the linear estimate of how much the target falls when the node
is removed. One forward and one backward pass give every node; integrated
gradients (`steps` points from the baseline to the clean value, a batched pass
per group of nodes) is the option where the linear estimate is poor. The real
effect of removing each of the top nodes, one batch row each, is measured on request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lenstop.models.circuits.metric import metric_value, resolve
from lenstop.models.circuits.results import Attribution, MetricValue, NodeScore
from lenstop.models.circuits.spec import Metric, Node
from lenstop.models.circuits.tracing import (
    Edit,
    Grads,
    HookFn,
    SetError,
    SetFeature,
    SetSite,
    Trace,
    Values,
    chunks,
    dictionary_hooks,
    rows_within,
    run_rows,
    site_hook,
    trace,
)
from lenstop.models.dictionaries import unflat
from lenstop.models.errors import UsageError
from lenstop.models.results import frozen_array

if TYPE_CHECKING:
    from lenstop.models.engine import Engine

ROWS = 32  # batch rows per pass when measuring real effects, fewer for long prompts (`rows_within`)
IG_ROWS = 16  # points of the path per pass of integrated gradients, fewer for long prompts


def node_scores(
    engine: Engine, grads: Grads, values: Values, base: Values, *, skip: Node | None = None, corrupted: bool = False
) -> list[NodeScore]:
    """Every node's attribution (grad · (value - baseline)); nodes with no path to the target are left out.
    `corrupted`: `base` is a corrupted prompt's run, whose feature activations each feature's score carries too."""
    out: list[NodeScore] = []
    for d in engine.dictionaries:
        key = d.key
        f, fb, g = values.feats[key], base.feats[key], grads.feats[key]
        delta = (f - fb).float()
        where = (delta != 0).nonzero()  # (n, 2): position, feature; sparse, as dictionaries are
        rows, cols = where[:, 0], where[:, 1]
        scores = (g.float()[rows, cols] * delta[rows, cols]).tolist()
        acts = f.float()[rows, cols].tolist()
        base_acts = fb.float()[rows, cols].tolist() if corrupted else [None] * len(acts)
        labels: dict[int, str | None] = {}
        for (pos, feature), score, act, base_act in zip(where.tolist(), scores, acts, base_acts, strict=True):
            if score != 0.0:
                if feature not in labels:
                    labels[feature] = d.cards.label(feature)
                node = Node("feature", d.layer, pos, feature=feature)
                out.append(NodeScore(node, score, act, labels[feature], corrupt_activation=base_act))
        err = (grads.errors[key].float() * (values.errors[key] - base.errors[key]).float()).sum(-1)
        out += [NodeScore(Node("error", d.layer, pos), float(v)) for pos, v in enumerate(err.tolist()) if v != 0.0]
    for layer in range(engine.n_layers):
        heads = (grads.heads[layer].float() * (values.heads[layer] - base.heads[layer]).float()).sum(-1)
        for pos, row in enumerate(heads.tolist()):
            out += [NodeScore(Node("head", layer, pos, head=h), v) for h, v in enumerate(row) if v != 0.0]
        mlp = (grads.mlps[layer].float() * (values.mlps[layer] - base.mlps[layer]).float()).sum(-1)
        out += [NodeScore(Node("mlp", layer, pos), v) for pos, v in enumerate(mlp.tolist()) if v != 0.0]
    embed = (grads.embed.float() * (values.embed - base.embed).float()).sum(-1)
    out += [NodeScore(Node("embed", None, pos), v) for pos, v in enumerate(embed.tolist()) if v != 0.0]
    return [s for s in out if s.node != skip]


def baseline(engine: Engine, values: Values, tokens: torch.Tensor, corrupt: torch.Tensor | None) -> Values:
    if corrupt is None:
        return values.zeros_like()
    found = trace(engine, corrupt, differentiable=False)
    assert isinstance(found, Values)
    return found


def target_of(tr: Trace, metric: MetricValue, path: Sequence[Node]) -> torch.Tensor:
    """The scalar to explain: the metric, or the last node of `path` followed from it."""
    value = metric_value(tr.logits, metric)[0]
    for node in path:
        value = tr.value_of(node, value)
    return value


def attribute(
    engine: Engine,
    tokens: torch.Tensor,
    corrupt: torch.Tensor | None,
    metric: Metric,
    *,
    path: Sequence[Node] = (),
    top: int | None = 30,
    steps: int = 0,
) -> tuple[MetricValue, float, list[NodeScore], np.ndarray]:
    """The metric resolved, the target's value, the nodes ranked by |attribution| (top `top`), the head totals."""
    tr = trace(engine, tokens)
    assert isinstance(tr, Trace)
    mv = resolve(metric, engine.model.tokenizer, tr.logits.detach(), engine.token_strings)
    base = baseline(engine, tr.values, tokens, corrupt)
    target = target_of(tr, mv, path)
    if steps:
        grads = integrated_grads(engine, tokens, batch_target(engine, tr, mv, path), tr.values, base, steps)
    else:
        grads = tr.grads(target, keep_graph=False)
    scores = node_scores(engine, grads, tr.values, base, skip=path[-1] if path else None, corrupted=corrupt is not None)
    totals = np.zeros((engine.n_layers, engine.n_heads))
    for s in scores:
        if s.node.kind == "head":
            assert s.node.layer is not None and s.node.head is not None
            totals[s.node.layer, s.node.head] += s.attribution
    scores.sort(key=lambda s: -abs(s.attribution))
    return mv, float(target.detach()), scores[:top] if top is not None else scores, totals


# ---------------------------------------------------------------- integrated gradients
@dataclass
class BatchTarget:
    """A target read from each row of a batched run: `hooks` capture what `value(logits)` needs, per row."""

    hooks: list[tuple[str, HookFn]]
    value: Callable[[torch.Tensor], torch.Tensor]  # logits (rows, seq, vocab) -> (rows,)


def batch_target(engine: Engine, tr: Trace, metric: MetricValue, path: Sequence[Node]) -> BatchTarget:
    """The metric, or the last node of `path` as `Trace.value_of` defines it (a head's or an MLP's contribution
    uses its parent's gradient at the clean run, held fixed)."""
    if not path:
        return BatchTarget([], lambda logits: metric_value(logits, metric))
    node = path[-1]
    seen: dict[str, torch.Tensor] = {}
    if node.kind == "feature":
        assert node.layer is not None and node.position is not None and node.feature is not None
        key, d = tr.dictionary_at(node.layer)
        pos, feature = node.position, node.feature

        def capture(out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor) -> None:
            seen["f"] = f

        return BatchTarget(dictionary_hooks(d, key, capture), lambda logits: seen["f"][:, pos, feature])
    if node.kind not in ("head", "mlp"):
        raise UsageError(f"{node.describe()} is an input of the graph: nothing upstream explains it")
    assert node.layer is not None
    parent = target_of(tr, metric, path[:-1])
    leaf = tr.leaves.heads[node.layer] if node.kind == "head" else tr.leaves.mlps[node.layer]
    (grad,) = torch.autograd.grad(parent, [leaf], retain_graph=True, allow_unused=True)
    grad = torch.zeros_like(leaf) if grad is None else grad.detach()
    at: Any = slice(None) if node.position is None else node.position
    index: tuple[Any, ...] = (slice(None), at, node.head) if node.kind == "head" else (slice(None), at)
    g = grad[(0, *index[1:])]

    def capture_site(x: torch.Tensor, hook: Any) -> None:
        seen["x"] = x

    def value(logits: torch.Tensor) -> torch.Tensor:
        return (seen["x"][index] * g).flatten(1).sum(-1)

    return BatchTarget([(site_hook("z" if node.kind == "head" else "mlp", node.layer), capture_site)], value)


def integrated_grads(
    engine: Engine, tokens: torch.Tensor, target: BatchTarget, values: Values, base: Values, steps: int
) -> Grads:
    """For each group of nodes (a dictionary's features and errors; a layer's heads; a layer's MLP; the
    embeddings), the target's gradient averaged along the straight path from the baseline to the clean values
    of that group, the rest of the model clean: `steps` rows of batched passes per group, as many rows a pass
    as `rows_within` allows, their gradients summed as they come, so memory does not grow with `steps`. The
    target's own hooks run first, so a group at the target's own site is upstream of nothing and gets no
    gradient."""
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # the midpoint rule
    rows = rows_within(engine, tokens.shape[-1], IG_ROWS, grad=True)

    def along(a: torch.Tensor, clean: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        shape = (len(a),) + (1,) * clean.dim()
        a = a.to(clean.device).view(shape).to(clean.dtype)
        return (start.unsqueeze(0) + a * (clean - start).unsqueeze(0)).detach().requires_grad_(True)

    def mean_grad(
        run: Callable[[torch.Tensor], tuple[list[tuple[str, HookFn]], list[torch.Tensor]]],
    ) -> list[torch.Tensor]:
        """`run(alphas)` gives the hooks and leaves of those points of the path; their gradients, averaged."""
        total: list[torch.Tensor] | None = None
        for part in alphas.split(rows):
            hooks, leaves = run(part)
            logits = run_rows(engine, tokens, len(part), (), extra=[*target.hooks, *hooks])
            value = target.value(logits).sum()
            if not value.requires_grad:
                return [torch.zeros_like(x[0]) for x in leaves]
            found = torch.autograd.grad(value, leaves, allow_unused=True)
            sums = [torch.zeros_like(x[0]) if g is None else g.sum(0) for x, g in zip(leaves, found, strict=True)]
            total = sums if total is None else [t + s for t, s in zip(total, sums, strict=True)]
        assert total is not None
        return [t / steps for t in total]

    feats, errors, heads, mlps = {}, {}, {}, {}
    for d in engine.dictionaries:

        def spliced(a: torch.Tensor, d: Any = d) -> tuple[list[tuple[str, HookFn]], list[torch.Tensor]]:
            fp, ep = (
                along(a, values.feats[d.key], base.feats[d.key]),
                along(a, values.errors[d.key], base.errors[d.key]),
            )

            def on_output(out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
                return unflat((d.reconstruct(x_in.detach(), fp) + ep).to(out.dtype), out)

            return dictionary_hooks(d, d.key, on_output), [fp, ep]

        feats[d.key], errors[d.key] = mean_grad(spliced)

    def replace_site(site: Any, layer: int, clean: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        def replaced(a: torch.Tensor) -> tuple[list[tuple[str, HookFn]], list[torch.Tensor]]:
            path = along(a, clean, start)
            return [(site_hook(site, layer), lambda x, hook: path.to(x.dtype))], [path]

        (grad,) = mean_grad(replaced)
        return grad

    for layer in range(engine.n_layers):
        heads[layer] = replace_site("z", layer, values.heads[layer], base.heads[layer])
        mlps[layer] = replace_site("mlp", layer, values.mlps[layer], base.mlps[layer])
    embed = replace_site("resid_pre", 0, values.embed, base.embed)
    return Grads(feats, errors, heads, mlps, embed, {0: embed})


# ---------------------------------------------------------------- real effects
def removal(node: Node, row: int, key_of: dict[int, str], base: Values) -> Edit:
    """The edit that removes `node` in batch row `row`: it takes its baseline value."""
    if node.kind == "feature":
        assert node.layer is not None and node.position is not None and node.feature is not None
        key = key_of[node.layer]
        return SetFeature(key, row, node.position, node.feature, float(base.feats[key][node.position, node.feature]))
    if node.kind == "error":
        assert node.layer is not None and node.position is not None
        key = key_of[node.layer]
        return SetError(key, row, node.position, base.errors[key][node.position])
    if node.kind == "embed":
        assert node.position is not None
        return SetSite("resid_pre", 0, row, node.position, base.embed[node.position])
    assert node.layer is not None
    pos: Any = slice(None) if node.position is None else node.position
    if node.kind == "head":
        assert node.head is not None
        return SetSite("z", node.layer, row, node.position, base.heads[node.layer][pos, node.head], head=node.head)
    return SetSite("mlp", node.layer, row, node.position, base.mlps[node.layer][pos])


def real_effects(
    engine: Engine, tokens: torch.Tensor, corrupt: torch.Tensor | None, metric: MetricValue, nodes: Sequence[Node]
) -> list[float]:
    """How much the metric really falls when each node alone is removed: one batch row per node."""
    values = trace(engine, tokens, differentiable=False)
    assert isinstance(values, Values)
    base = baseline(engine, values, tokens, corrupt)
    key_of = {d.layer: d.key for d in engine.dictionaries}
    out: list[float] = []
    for rows in chunks(len(nodes), rows_within(engine, tokens.shape[-1], ROWS)):
        edits = [removal(nodes[i], row, key_of, base) for row, i in enumerate(rows)]
        logits = run_rows(engine, tokens, len(rows), edits)
        out += (metric.clean - metric_value(logits, metric)).tolist()
    return out


def with_real(scores: Sequence[NodeScore], real: Sequence[float]) -> tuple[NodeScore, ...]:
    return tuple(replace(s, real=r) for s, r in zip(scores, real, strict=False)) + tuple(scores[len(real) :])


def as_result(
    engine: Engine,
    prompt: str,
    tokens: torch.Tensor,
    corrupt_prompt: str | None,
    metric: MetricValue,
    target_value: float,
    scores: Sequence[NodeScore],
    totals: np.ndarray,
    path: Sequence[Node],
    steps: int,
) -> Attribution:
    return Attribution(
        model=engine.name,
        prompt=prompt,
        tokens=tuple(engine.token_strings(tokens[0].tolist())),
        metric=metric,
        path=tuple(path),
        method=f"integrated-gradients:{steps}" if steps else "gradient",
        corrupt_prompt=corrupt_prompt,
        nodes=tuple(scores),
        head_totals=frozen_array(totals, np.float32),
        target_value=target_value,
    )
