"""Influence, pruning and the graph's scores, as circuit-tracer 0.5.0 defines them, on a sparse adjacency.

circuit-tracer holds the adjacency dense, (nodes, nodes), and runs out of memory
near 2,300 tokens on 80 GB (its issue #92); every quantity here is the same sum
over the stored edges only, so what a graph costs grows with its edges. Rows are
targets and columns sources, as there. The formulas, from its `graph.py`:

- each row is normalised by the sum of its absolute weights;
- a node's influence is its total weight on the logits through every path,
  `w A + w A² + ...` with `w` the logit probabilities;
- pruning keeps the nodes that carry `node_threshold` of the cumulative
  influence, then the edges that carry `edge_threshold` of the edge influence,
  then drops feature and error nodes left without an outgoing edge and
  features without an incoming one, until nothing changes; tokens and logits stay;
- the replacement score is the share of the tokens' influence in that of tokens
  and errors together; completeness is the influence-weighted share of each
  node's input that does not come from an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@contextmanager
def quiet_sparse() -> Iterator[None]:
    """Without torch's notices that sparse support is in beta and its invariant checks are off: facts of
    torch, not of this graph."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from coordinates in any order (duplicates summed)."""
    with quiet_sparse():
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False)
        return coo.coalesce().to_sparse_csr()


@dataclass(frozen=True)
class Edges:
    """A sparse (n_nodes, n_nodes) adjacency as coordinate lists: `weight` of the edge from `source` into `target`,
    sorted by (source, target), so the transposed adjacency that the influence multiplies by is a CSR matrix
    as it stands. `sorted_from` makes one from coordinates in any order."""

    target: torch.Tensor  # (n_edges,) int64
    source: torch.Tensor  # (n_edges,) int64
    weight: torch.Tensor  # (n_edges,) float32
    n_nodes: int

    @classmethod
    def sorted_from(cls, target: torch.Tensor, source: torch.Tensor, weight: torch.Tensor, n_nodes: int) -> Edges:
        order = torch.argsort(source * n_nodes + target)
        return cls(target[order], source[order], weight[order], n_nodes)

    def where(self, keep: torch.Tensor) -> Edges:
        return Edges(self.target[keep], self.source[keep], self.weight[keep], self.n_nodes)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The (source, target) CSR matrix with these values, one per edge: no sort, no coalesce, when the
        edges are in (source, target) order, as `sorted_from` makes them; else sorted here first."""
        key = self.source * self.n_nodes + self.target
        if len(key) > 1 and not bool((key[1:] > key[:-1]).all()):
            order = torch.argsort(key)
            return Edges(self.target[order], self.source[order], self.weight[order], self.n_nodes).transposed(
                values[order]
            )
        counts = torch.bincount(self.source, minlength=self.n_nodes)
        crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        with quiet_sparse():
            return torch.sparse_csr_tensor(crow, self.target, values, (self.n_nodes, self.n_nodes))

    def normalised(self) -> torch.Tensor:
        """Each edge's share of its target's summed absolute input."""
        absolute = self.weight.abs()
        row_sum = torch.zeros(self.n_nodes, dtype=absolute.dtype).index_add_(0, self.target, absolute)
        return absolute / row_sum.clamp(min=1e-10)[self.target]

    def to_sparse(self) -> torch.Tensor:
        """The adjacency as a torch sparse CSR tensor, [target, source]."""
        return csr(self.target, self.source, self.weight, (self.n_nodes, self.n_nodes))


def influence(edges: Edges, shares: torch.Tensor, weights: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
    """`weights @ (A + A² + ...)` for the normalised adjacency A (its values `shares`): the graph is acyclic, so
    the series ends after at most its depth."""
    transposed = edges.transposed(shares)
    current = transposed @ weights
    total = current.clone()
    for _ in range(max_iter):
        if not current.any():
            return total
        current = transposed @ current
        total += current
    raise RuntimeError(f"influence did not converge in {max_iter} steps: the graph has a cycle")


def logit_weights(n_nodes: int, probabilities: torch.Tensor) -> torch.Tensor:
    """Zero everywhere but the logit nodes (the last), which weigh their probability."""
    weights = torch.zeros(n_nodes)
    weights[n_nodes - len(probabilities) :] = probabilities.float()
    return weights


def node_influence(edges: Edges, weights: torch.Tensor) -> torch.Tensor:
    """circuit-tracer's `compute_node_influence`."""
    return influence(edges, edges.normalised(), weights)


def find_threshold(scores: torch.Tensor, share: float) -> torch.Tensor:
    """The score above which the highest scores carry `share` of the total."""
    ordered = torch.sort(scores, descending=True).values
    cumulative = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    index = min(int(torch.searchsorted(cumulative, share).item()), len(cumulative) - 1)
    return ordered[index]


@dataclass(frozen=True)
class Pruning:
    """What `prune_graph` keeps: a node mask, an edge mask over the stored edges, each node's cumulative share."""

    nodes: torch.Tensor  # (n_nodes,) bool
    edges: torch.Tensor  # (n_edges,) bool
    cumulative: torch.Tensor  # (n_nodes,) the share of influence of the nodes at least as influential


def prune(
    edges: Edges, weights: torch.Tensor, n_features: int, n_kept: int, node_threshold: float, edge_threshold: float
) -> Pruning:
    """circuit-tracer's `prune_graph`; `n_kept` is the number of token and logit nodes, always kept (the last)."""
    for name, value in (("node threshold", node_threshold), ("edge threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the {name} must be between 0 and 1, not {value}")
    n_nodes = edges.n_nodes
    scores = node_influence(edges, weights)
    node_mask = scores >= find_threshold(scores, node_threshold)
    node_mask[n_nodes - n_kept :] = True
    inside = edges.where(node_mask[edges.target] & node_mask[edges.source])
    shares = inside.normalised()
    edge_scores = shares * (influence(inside, shares, weights) + weights)[inside.target]
    kept = edge_scores >= find_threshold(edge_scores, edge_threshold) if len(edge_scores) else edge_scores > 0
    keep_edge = torch.zeros(len(edges.weight), dtype=torch.bool)
    keep_edge[torch.nonzero(node_mask[edges.target] & node_mask[edges.source]).squeeze(1)[kept]] = True
    prunable = torch.arange(n_nodes) < n_nodes - n_kept
    while True:
        before = node_mask.clone()
        keep_edge &= node_mask[edges.target] & node_mask[edges.source]
        has_out = torch.zeros(n_nodes, dtype=torch.bool)
        has_out[edges.source[keep_edge]] = True
        has_in = torch.zeros(n_nodes, dtype=torch.bool)
        has_in[edges.target[keep_edge]] = True
        node_mask &= ~prunable | has_out
        node_mask[:n_features] &= has_in[:n_features]
        if torch.equal(node_mask, before):
            break
    ordered, order = torch.sort(scores, descending=True)
    cumulative = torch.zeros_like(scores)
    cumulative[order] = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    return Pruning(node_mask, keep_edge, cumulative)


def scores(edges: Edges, weights: torch.Tensor, errors: slice, tokens: slice) -> tuple[float, float]:
    """circuit-tracer's `compute_graph_scores`: (replacement, completeness)."""
    shares = edges.normalised()
    node = influence(edges, shares, weights)
    token_influence, error_influence = node[tokens].sum(), node[errors].sum()
    replacement = token_influence / (token_influence + error_influence)
    from_errors = (edges.source >= errors.start) & (edges.source < errors.stop)
    error_share = torch.zeros(edges.n_nodes).index_add_(0, edges.target[from_errors], shares[from_errors])
    output = node + weights
    completeness = ((1 - error_share) * output).sum() / output.sum()
    return float(replacement), float(completeness)
