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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lenstop.models.circuits.metric import metric_value
from lenstop.models.circuits.passes import Grads, HookFn, Site, Values, dictionary_hooks, site_hook
from lenstop.models.circuits.results import Attribution, NodeScore
from lenstop.models.circuits.rows import Edit, SetError, SetFeature, SetSite, chunks, rows_within, run_rows
from lenstop.models.circuits.setup import Setup, TracedSetup
from lenstop.models.circuits.spec import Node
from lenstop.models.dictionaries import Dictionaries, Dictionary, unflat
from lenstop.models.errors import UsageError
from lenstop.models.results import frozen_array

ROWS = 32  # batch rows per pass when measuring real effects, fewer for long prompts (`rows_within`)
IG_ROWS = 16  # points of the path per pass of integrated gradients, fewer for long prompts


def attribute(s: TracedSetup, *, path: Sequence[Node] = (), top: int | None = 30, steps: int = 0) -> Attribution:
    """Every node's attribution to the metric, or to the last node of `path` followed from it, ranked by
    |attribution| (the top `top`), with each head's total over the positions."""
    target = s.target(path)  # 1. the scalar to explain
    grads = gradients(s, path, steps, target=target, keep_graph=False)  # 2. its gradient at every node
    scores = node_scores(s, grads, skip=path[-1] if path else None, corrupted=s.corrupted)  # 3. each node's share
    totals = np.zeros((s.handle.n_layers, s.handle.n_heads))  # 4. ranked, and summed by head
    for score in scores:
        if score.node.kind == "head":
            assert score.node.layer is not None and score.node.head is not None
            totals[score.node.layer, score.node.head] += score.attribution
    scores.sort(key=lambda score: -abs(score.attribution))
    return Attribution(  # 5. packaged
        model=s.handle.name,
        prompt=s.prompts.text,
        tokens=tuple(s.handle.token_strings(s.tokens[0].tolist())),
        metric=s.metric,
        path=tuple(path),
        method=f"integrated-gradients:{steps}" if steps else "gradient",
        corrupt_prompt=s.prompts.corrupt_text,
        nodes=tuple(scores[:top] if top is not None else scores),
        head_totals=frozen_array(totals, np.float32),
        target_value=float(target.detach()),
    )


def gradients(
    s: TracedSetup, path: Sequence[Node], steps: int, *, target: torch.Tensor | None = None, keep_graph: bool = True
) -> Grads:
    """The gradient at every node of the metric, or of the last node of `path` (`target`, when it is already
    computed): plain, or integrated along `steps` points. The trace's graph is freed unless `keep_graph`."""
    if steps:
        return integrated_grads(s, batch_target(s, path), steps)
    return s.trace.grads(s.target(path) if target is None else target, keep_graph=keep_graph)


def node_scores(s: Setup, grads: Grads, *, skip: Node | None = None, corrupted: bool = False) -> list[NodeScore]:
    """Every node's attribution (grad · (value - baseline)); nodes with no path to the target are left out.
    `corrupted`: the baseline is a corrupted prompt's run, whose feature activations each feature's score
    carries too."""
    out: list[NodeScore] = []
    values, base = s.values, s.base
    for d in s.handle.dictionaries:
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
    for layer in range(s.handle.n_layers):
        heads = (grads.heads[layer].float() * (values.heads[layer] - base.heads[layer]).float()).sum(-1)
        for pos, row in enumerate(heads.tolist()):
            out += [NodeScore(Node("head", layer, pos, head=h), v) for h, v in enumerate(row) if v != 0.0]
        mlp = (grads.mlps[layer].float() * (values.mlps[layer] - base.mlps[layer]).float()).sum(-1)
        out += [NodeScore(Node("mlp", layer, pos), v) for pos, v in enumerate(mlp.tolist()) if v != 0.0]
    embed = (grads.embed.float() * (values.embed - base.embed).float()).sum(-1)
    out += [NodeScore(Node("embed", None, pos), v) for pos, v in enumerate(embed.tolist()) if v != 0.0]
    return [score for score in out if score.node != skip]


# ---------------------------------------------------------------- integrated gradients
@dataclass
class BatchTarget:
    """A target read from each row of a batched run: `hooks` capture what `value(logits)` needs, per row."""

    hooks: list[tuple[str, HookFn]]
    value: Callable[[torch.Tensor], torch.Tensor]  # logits (rows, seq, vocab) -> (rows,)


def batch_target(s: TracedSetup, path: Sequence[Node]) -> BatchTarget:
    """The metric, or the last node of `path` as `Trace.value_of` defines it (a head's or an MLP's contribution
    uses its parent's gradient at the clean run, held fixed)."""
    if not path:
        return BatchTarget([], lambda logits: metric_value(logits, s.metric))
    node = path[-1]
    seen: dict[str, torch.Tensor] = {}
    if node.kind == "feature":
        assert node.layer is not None and node.position is not None and node.feature is not None
        d = s.handle.dictionaries.at(node.layer)
        pos, feature = node.position, node.feature

        def capture(out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor) -> None:
            seen["f"] = f

        return BatchTarget(dictionary_hooks(d, capture), lambda logits: seen["f"][:, pos, feature])
    if node.kind not in ("head", "mlp"):
        raise UsageError(f"{node.describe()} is an input of the graph: nothing upstream explains it")
    assert node.layer is not None
    parent = s.target(path[:-1])
    leaves = s.trace.leaves
    leaf = leaves.heads[node.layer] if node.kind == "head" else leaves.mlps[node.layer]
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


# Given points of the path (alphas), the hooks that put a group of nodes there and the leaves they are.
PathRun = Callable[[torch.Tensor], tuple[list[tuple[str, HookFn]], list[torch.Tensor]]]


def integrated_grads(s: Setup, target: BatchTarget, steps: int) -> Grads:
    """For each group of nodes (a dictionary's features and errors; a layer's heads; a layer's MLP; the
    embeddings), the target's gradient averaged along the straight path from the baseline to the clean values
    of that group, the rest of the model clean: `steps` rows of batched passes per group, as many rows a pass
    as `rows_within` allows, their gradients summed as they come, so memory does not grow with `steps`. The
    target's own hooks run first, so a group at the target's own site is upstream of nothing and gets no
    gradient."""
    path = _StraightPath(s, target, steps)
    values, base = s.values, s.base
    feats, errors, heads, mlps = {}, {}, {}, {}
    for d in s.handle.dictionaries:
        feats[d.key], errors[d.key] = path.mean_grad(_spliced(d, values, base))
    for layer in range(s.handle.n_layers):
        (heads[layer],) = path.mean_grad(_replaced("z", layer, values.heads[layer], base.heads[layer]))
        (mlps[layer],) = path.mean_grad(_replaced("mlp", layer, values.mlps[layer], base.mlps[layer]))
    (embed,) = path.mean_grad(_replaced("resid_pre", 0, values.embed, base.embed))
    return Grads(feats, errors, heads, mlps, embed, {0: embed})


class _StraightPath:
    """`steps` points from the baseline to the clean values (the midpoint rule), run as many a pass as fit."""

    def __init__(self, s: Setup, target: BatchTarget, steps: int) -> None:
        self.s, self.target, self.steps = s, target, steps
        self.alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
        self.rows = rows_within(s.handle, s.prompts.seq, IG_ROWS, grad=True)

    def mean_grad(self, run: PathRun) -> list[torch.Tensor]:
        """The gradients at the leaves `run` gives, averaged over the path."""
        total: list[torch.Tensor] | None = None
        for part in self.alphas.split(self.rows):
            hooks, leaves = run(part)
            logits = run_rows(self.s.handle, self.s.tokens, len(part), (), extra=[*self.target.hooks, *hooks])
            value = self.target.value(logits).sum()
            if not value.requires_grad:
                return [torch.zeros_like(x[0]) for x in leaves]
            found = torch.autograd.grad(value, leaves, allow_unused=True)
            sums = [torch.zeros_like(x[0]) if g is None else g.sum(0) for x, g in zip(leaves, found, strict=True)]
            total = sums if total is None else [t + s for t, s in zip(total, sums, strict=True)]
        assert total is not None
        return [t / self.steps for t in total]


def _points(a: torch.Tensor, clean: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """The points `start + a * (clean - start)`, one a row, as leaves of their own."""
    shape = (len(a),) + (1,) * clean.dim()
    a = a.to(clean.device).view(shape).to(clean.dtype)
    return (start.unsqueeze(0) + a * (clean - start).unsqueeze(0)).detach().requires_grad_(True)


def _spliced(d: Dictionary, values: Values, base: Values) -> PathRun:
    """A dictionary's features and errors along the path, spliced in at its output."""

    def run(a: torch.Tensor) -> tuple[list[tuple[str, HookFn]], list[torch.Tensor]]:
        fp = _points(a, values.feats[d.key], base.feats[d.key])
        ep = _points(a, values.errors[d.key], base.errors[d.key])

        def on_output(out: torch.Tensor, x_in: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
            return unflat((d.reconstruct(x_in.detach(), fp) + ep).to(out.dtype), out)

        return dictionary_hooks(d, on_output), [fp, ep]

    return run


def _replaced(site: Site, layer: int, clean: torch.Tensor, start: torch.Tensor) -> PathRun:
    """A site's activation along the path, in place of its own."""

    def run(a: torch.Tensor) -> tuple[list[tuple[str, HookFn]], list[torch.Tensor]]:
        points = _points(a, clean, start)
        return [(site_hook(site, layer), lambda x, hook: points.to(x.dtype))], [points]

    return run


# ---------------------------------------------------------------- real effects
def removal(node: Node, row: int, dictionaries: Dictionaries, base: Values) -> Edit:
    """The edit that removes `node` in batch row `row`: it takes its baseline value."""
    if node.kind == "feature":
        assert node.layer is not None and node.position is not None and node.feature is not None
        key = dictionaries.at(node.layer).key
        return SetFeature(key, row, node.position, node.feature, float(base.feats[key][node.position, node.feature]))
    if node.kind == "error":
        assert node.layer is not None and node.position is not None
        key = dictionaries.at(node.layer).key
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


def real_effects(s: Setup, nodes: Sequence[Node]) -> list[float]:
    """How much the metric really falls when each node alone is removed: one batch row per node."""
    out: list[float] = []
    for rows in chunks(len(nodes), rows_within(s.handle, s.prompts.seq, ROWS)):
        edits = [removal(nodes[i], row, s.handle.dictionaries, s.base) for row, i in enumerate(rows)]
        logits = run_rows(s.handle, s.tokens, len(rows), edits)
        out += (s.metric.clean - metric_value(logits, s.metric)).tolist()
    return out
