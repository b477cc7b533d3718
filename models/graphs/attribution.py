"""Build an attribution graph on the local replacement model, with circuit-tracer 0.5.0's conventions.

1. One forward pass of the real model records every layer's MLP input and output,
   attention patterns and norm inputs, and the last position's logits.
2. Each layer's transcoder encodes its MLP input; position 0's features are
   dropped and its error vectors zeroed (its error and embedding nodes stay).
   The error at (layer, position) is the MLP's real output less the replacement's.
3. The logit targets are chosen from the real model's probabilities.
4. Rows of the adjacency, one per target, come in batches from `FrozenModel.back`:
   the logits' first, then the features', all of them or, under a budget, the
   most influential first, ranked again every `update_interval` batches.
5. Rows are kept sparse (exact zeros, which are most of a causal graph, are not
   stored), the graph is pruned and scored (`influence.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lenstop.models.dictionaries import Replacement
from lenstop.models.errors import IncompatibleError, UsageError
from lenstop.models.graphs import influence as inf
from lenstop.models.graphs.frozen import FrozenModel, Reads, capture_names, check_architecture, frozen_model
from lenstop.models.graphs.result import AttributionGraph, GraphNode, Pruned
from lenstop.models.graphs.targets import Targets, choose
from lenstop.models.runtime import hook_names
from lenstop.models.runtime.handle import ModelHandle


@dataclass(frozen=True)
class GraphOptions:
    """How a graph is built; every default is circuit-tracer 0.5.0's."""

    targets: tuple[int, ...] = ()  # token ids to explain; empty: the salient next tokens
    wrong: int | None = None  # with one target: explain the logit difference target - wrong instead
    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    max_feature_nodes: int | None = None  # None: every active feature
    batch_size: int = 256  # targets carried down per pass
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    update_interval: int = 4  # batches between re-rankings under a budget


@dataclass(frozen=True)
class Active:
    """The active features, ordered by (layer, position, feature) as a coalesced sparse tensor is."""

    layer: torch.Tensor
    position: torch.Tensor
    feature: torch.Tensor
    value: torch.Tensor
    encoders: torch.Tensor  # (n, d_model)
    decoders: torch.Tensor  # (n, max_out, d_model), times the activation; zero past a feature's last layer
    spans: list[tuple[int, int, int, int]] = field(default_factory=list)  # (layer, position, start, stop)

    def __len__(self) -> int:
        return len(self.value)


def graph_tokens(handle: ModelHandle, prompt: str) -> list[int]:
    """circuit-tracer's tokenisation: no special tokens, then BOS unless the first token is already special."""
    tokenizer = handle.model.tokenizer
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    special = set(tokenizer.all_special_ids)
    if (not ids or ids[0] not in special) and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id), *ids]
    return [int(i) for i in ids]


def record(handle: ModelHandle, ids: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The values the graph is built from, without the batch dimension, and the last position's logits."""
    store: dict[str, torch.Tensor] = {}

    def keeper(name: str) -> Callable[..., torch.Tensor]:
        def keep(value: torch.Tensor, hook: object) -> torch.Tensor:
            store[name] = value[0].detach()
            return value

        return keep

    names = capture_names(handle.n_layers)
    tokens = torch.tensor([ids], device=handle.model.cfg.device)
    with handle.guard(len(ids)), handle.hooks([(name, keeper(name)) for name in names]):
        logits = handle.model(tokens)
    missing = [name for name in names if name not in store]
    if missing:
        raise RuntimeError(f"the model never reached hooks {missing[:3]}")
    return store, logits[0, -1].detach()


def active_features(replacement: Replacement, mlp_in: list[torch.Tensor]) -> Active:
    """Every nonzero activation past position 0, with its encoder row and its scaled decoder rows."""
    n_layers, parts = replacement.n_layers, []
    for layer in range(n_layers):
        acts = replacement.encode(layer, mlp_in[layer]).detach().float()
        acts[0] = 0
        pos, feat = torch.nonzero(acts, as_tuple=True)
        decoders = replacement.decoder_vectors(layer, feat).float() * acts[pos, feat][:, None, None]
        encoders = replacement.encoder_vectors(layer, feat).float()
        parts.append((torch.full_like(pos, layer), pos, feat, acts[pos, feat], encoders, decoders))
    width = max(part[5].shape[1] for part in parts)  # 1 for per-layer transcoders; a CLT's first layer writes to all
    padded = [torch.nn.functional.pad(part[5], (0, 0, 0, width - part[5].shape[1])) for part in parts]
    layers, positions, features, values, encoders = (torch.cat([p[i] for p in parts]) for i in range(5))
    spans, start = [], 0
    keys = torch.stack([layers, positions], 1).tolist()
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            spans.append((keys[start][0], keys[start][1], start, i))
            start = i
    return Active(layers, positions, features, values, encoders, torch.cat(padded), spans)


def error_vectors(
    replacement: Replacement, active: Active, mlp_in: list[torch.Tensor], mlp_out: list[torch.Tensor]
) -> torch.Tensor:
    """(n_layers, n_pos, d_model): each MLP's output less its replacement's, zero at position 0."""
    n_layers = replacement.n_layers
    recon = torch.stack(
        [replacement.b_dec(layer).float().expand_as(mlp_out[layer]).clone() for layer in range(n_layers)]
    )
    for j in range(active.decoders.shape[1]):
        writes = active.layer + j
        ok = writes < n_layers
        recon.index_put_((writes[ok], active.position[ok]), active.decoders[ok, j], accumulate=True)
    for layer in range(n_layers):
        skip = replacement.skip_weight(layer)
        if skip is not None:
            recon[layer] += mlp_in[layer].float() @ skip.float()
    errors = torch.stack([m.float() for m in mlp_out]) - recon
    errors[:, 0] = 0
    return errors


class Rows:
    """Turns a batch of targets' reads into their rows: the direct effect of every source on each target."""

    def __init__(self, active: Active, errors: torch.Tensor, token_vectors: torch.Tensor) -> None:
        self.active, self.errors, self.token_vectors = active, errors, token_vectors
        self.n_layers, self.n_pos = errors.shape[0], errors.shape[1]
        self.width = len(active) + (self.n_layers + 1) * self.n_pos

    def __call__(self, reads: Reads) -> torch.Tensor:
        """Sources past the batch's positions, or at or above its layers, read zeros: they are skipped."""
        batch, n = reads.embed.shape[0], reads.embed.shape[1]
        rows = reads.embed.new_zeros(batch, self.width)
        active, n_feat = self.active, len(self.active)
        width = active.decoders.shape[1]
        for layer, pos, start, stop in active.spans:
            outs = [m for m in range(layer, min(layer + width, self.n_layers)) if reads.mlp_out[m] is not None]
            if pos >= n or not outs:
                continue
            reading = torch.cat([reads.mlp_out[m][:, pos] for m in outs], 1)  # type: ignore[index]
            decoders = active.decoders[start:stop, outs[0] - layer : outs[-1] - layer + 1]
            rows[:, start:stop] = reading @ decoders.reshape(stop - start, -1).T
        for layer, read in enumerate(reads.mlp_out):
            if read is not None:
                first = n_feat + layer * self.n_pos
                rows[:, first : first + n] = (read * self.errors[layer, :n]).sum(-1)
        first = n_feat + self.n_layers * self.n_pos
        rows[:, first : first + n] = (reads.embed * self.token_vectors[:n]).sum(-1)
        return rows


@dataclass
class _Stored:
    """Rows computed so far, sparse: row `i` is node `row_node[i]`."""

    row_node: list[int] = field(default_factory=list)
    rows: list[torch.Tensor] = field(default_factory=list)
    cols: list[torch.Tensor] = field(default_factory=list)
    vals: list[torch.Tensor] = field(default_factory=list)

    def add(self, nodes: list[int], dense: torch.Tensor) -> None:
        first = len(self.row_node)
        r, c = torch.nonzero(dense, as_tuple=True)
        self.rows.append(r + first)
        self.cols.append(c)
        self.vals.append(dense[r, c])
        self.row_node += nodes

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.cat(self.rows), torch.cat(self.cols), torch.cat(self.vals)


def _partial_influence(stored: _Stored, n_cols: int, weights: torch.Tensor, max_iter: int = 128) -> torch.Tensor:
    """circuit-tracer's `compute_partial_influences`: each node's influence through the rows computed so far."""
    r, c, v = stored.coordinates()
    n_rows = len(stored.row_node)
    absolute = v.abs()
    row_sum = torch.zeros(n_rows).index_add_(0, r, absolute)
    shares = absolute / row_sum.clamp(min=1e-8)[r]
    transposed = inf.csr(c, r, shares, (n_cols, n_rows))
    row_node = torch.tensor(stored.row_node)
    prod, total = weights.clone(), torch.zeros(n_cols)
    for _ in range(max_iter):
        prod = transposed @ prod[row_node]
        if not prod.any():
            return total
        total += prod
    raise RuntimeError("partial influences did not converge")


def _feature_order(
    stored: _Stored, n_active: int, n_nodes: int, weights: torch.Tensor, visited: torch.Tensor, size: int
) -> torch.Tensor:
    scores = _partial_influence(stored, n_nodes, weights)
    rank = torch.argsort(scores[:n_active], descending=True)
    return rank[~visited[rank]][:size]


def visit(
    frozen: FrozenModel,
    rows: Rows,
    active: Active,
    targets: Targets,
    options: GraphOptions,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[_Stored, torch.Tensor]:
    """Every row the graph needs: the logits', then the features' under the budget. Returns them and which
    features were visited."""
    n_active, n_pos, n_layers = len(active), rows.n_pos, rows.n_layers
    logit_offset = rows.width
    n_nodes = logit_offset + len(targets.targets)
    batch = max(1, options.batch_size)
    stored = _Stored()
    vectors = targets.vectors.to(active.encoders.device if n_active else targets.vectors.device)
    for i in range(0, len(vectors), batch):
        chunk = vectors[i : i + batch]
        reads = frozen.back(torch.full((len(chunk),), n_layers), torch.full((len(chunk),), n_pos - 1), chunk)
        stored.add([logit_offset + j for j in range(i, i + len(chunk))], rows(reads))
    budget = min(options.max_feature_nodes if options.max_feature_nodes is not None else n_active, n_active)
    visited = torch.zeros(n_active, dtype=torch.bool)
    weights = inf.logit_weights(n_nodes, targets.weights)
    done = 0
    while done < budget:
        if budget == n_active:
            pending = torch.arange(n_active)
        else:
            size = min(options.update_interval * batch, budget - done)
            pending = _feature_order(stored, n_active, n_nodes, weights, visited, size)
        for i in range(0, len(pending), batch):
            idx = pending[i : i + batch]
            reads = frozen.back(active.layer[idx], active.position[idx], active.encoders[idx])
            stored.add(idx.tolist(), rows(reads))
            visited[idx] = True
            done += len(idx)
            if progress is not None:
                progress(done, budget)
    return stored, visited


def build_graph(
    handle: ModelHandle,
    replacement: Replacement,
    prompt: str | Sequence[int],
    options: GraphOptions = GraphOptions(),
    label: Callable[[int, int], str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttributionGraph:
    """The attribution graph of `prompt` on `handle`'s model with its MLPs replaced by `replacement`: text
    (tokenised as circuit-tracer does, `graph_tokens`) or the token ids themselves, BOS included."""
    check_architecture(handle)
    if replacement.n_layers != handle.n_layers:
        raise ValueError(f"the transcoders cover {replacement.n_layers} layers; the model has {handle.n_layers}")
    ids = graph_tokens(handle, prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise UsageError("the prompt is empty; type some text")
    prompt = prompt if isinstance(prompt, str) else "".join(handle.token_strings(ids))
    if len(ids) > handle.n_ctx:
        raise IncompatibleError(
            f"the prompt is {len(ids)} tokens but {handle.name}'s context is {handle.n_ctx}; shorten it"
        )
    captured, logits = record(handle, ids)
    device = handle.out_device
    captured = {name: value.to(device) for name, value in captured.items()}
    n_layers = handle.n_layers
    mlp_in = [captured[hook_names.mlp_in(layer)] for layer in range(n_layers)]
    mlp_out = [captured[hook_names.mlp_out(layer)] for layer in range(n_layers)]
    with torch.no_grad():
        active = active_features(replacement, mlp_in)
        errors = error_vectors(replacement, active, mlp_in, mlp_out)
        w_u = handle.model.W_U.detach().to(device)
        targets = choose(
            logits.to(device),
            w_u,
            handle.token_strings,
            options.targets,
            options.wrong,
            options.max_n_logits,
            options.desired_logit_prob,
        )
        skips = [replacement.skip_weight(layer) for layer in range(n_layers)]
        frozen = frozen_model(handle, captured, [None if s is None else s.float().to(device) for s in skips])
        token_vectors = handle.model.W_E.detach().to(device)[torch.tensor(ids, device=device)].float()
        rows = Rows(active, errors, token_vectors)
        stored, visited = visit(frozen, rows, active, targets, options, progress)
    return assemble(handle, replacement, prompt, ids, active, targets, stored, visited, options, label)


def assemble(
    handle: ModelHandle,
    replacement: Replacement,
    prompt: str,
    ids: list[int],
    active: Active,
    targets: Targets,
    stored: _Stored,
    visited: torch.Tensor,
    options: GraphOptions,
    label: Callable[[int, int], str] | None,
) -> AttributionGraph:
    """The graph in circuit-tracer's node order, restricted to the visited features, pruned and scored."""
    n_layers, n_pos, n_active = handle.n_layers, len(ids), len(active)
    selected = torch.nonzero(visited).squeeze(1)
    n_sel, n_targets = len(selected), len(targets.targets)
    n_nodes = n_sel + (n_layers + 1) * n_pos + n_targets
    col_map = torch.full((n_active + (n_layers + 1) * n_pos,), -1, dtype=torch.long)
    col_map[selected] = torch.arange(n_sel)
    col_map[n_active:] = torch.arange(n_sel, n_sel + (n_layers + 1) * n_pos)
    node_of_row = torch.tensor(stored.row_node)
    is_logit = node_of_row >= len(col_map)  # logit rows are numbered after every source column
    row_map = torch.where(is_logit, node_of_row - n_active + n_sel, col_map[node_of_row.clamp(max=len(col_map) - 1)])
    r, c, v = stored.coordinates()
    keep = col_map[c] >= 0
    edges = inf.Edges.sorted_from(row_map[r[keep]].cpu(), col_map[c[keep]].cpu(), v[keep].float().cpu(), n_nodes)
    weights = inf.logit_weights(n_nodes, targets.weights)
    node_scores = inf.node_influence(edges, weights)
    errors = slice(n_sel, n_sel + n_layers * n_pos)
    tokens = slice(errors.stop, errors.stop + n_pos)
    pruning = inf.prune(edges, weights, n_sel, n_pos + n_targets, options.node_threshold, options.edge_threshold)
    replacement_score, completeness = inf.scores(edges, weights, errors, tokens)
    pruned_scores = inf.scores(edges.where(pruning.edges), weights, errors, tokens)
    nodes = _nodes(handle, active, selected, targets, ids, node_scores, label)
    return AttributionGraph(
        prompt=prompt,
        tokens=tuple(handle.token_strings(ids)),
        token_ids=tuple(ids),
        targets=targets.targets,
        nodes=nodes,
        edges=edges,
        n_layers=n_layers,
        n_active_features=n_active,
        replacement_score=replacement_score,
        completeness_score=completeness,
        pruned=Pruned(
            tuple(torch.nonzero(pruning.nodes).squeeze(1).tolist()),
            pruning.edges,
            pruning.cumulative,
            pruned_scores[0],
            pruned_scores[1],
            options.node_threshold,
            options.edge_threshold,
        ),
        scan=replacement.scan,
        transcoders=replacement.kind,
    )


def _nodes(
    handle: ModelHandle,
    active: Active,
    selected: torch.Tensor,
    targets: Targets,
    ids: list[int],
    influence: torch.Tensor,
    label: Callable[[int, int], str] | None,
) -> tuple[GraphNode, ...]:
    n_layers, n_pos = handle.n_layers, len(ids)
    scores = influence.tolist()
    nodes: list[GraphNode] = []
    for layer, pos, feat, value in zip(
        active.layer[selected].tolist(),
        active.position[selected].tolist(),
        active.feature[selected].tolist(),
        active.value[selected].tolist(),
        strict=True,
    ):
        text = label(layer, feat) if label is not None else ""
        nodes.append(GraphNode("feature", layer, pos, feat, value, scores[len(nodes)], text))
    for layer in range(n_layers):
        for pos in range(n_pos):
            nodes.append(GraphNode("error", layer, pos, None, None, scores[len(nodes)]))
    for pos, text in enumerate(handle.token_strings(ids)):
        nodes.append(GraphNode("embed", 0, pos, ids[pos], None, scores[len(nodes)], text))
    for target in targets.targets:
        nodes.append(GraphNode("logit", n_layers, n_pos - 1, target.id, None, scores[len(nodes)], target.token))
    return tuple(nodes)
