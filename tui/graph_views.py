"""The graph view's model and text, apart from any widget: which nodes are shown and where (a row per layer,
the embeddings at the bottom and the logits on top, a column per position), how the cursor steps between
them, each node's mark, and the text of the panes (a node's edges numbered, the pinned subgraph, the
supernodes, an intervention's targets before and after).

Marks read without colour: `●◐○` a feature by influence (strong, middling, weak), `◇` an error node, `■` a
token's embedding, `◆` a logit. Labels and tokens come from files and the tokenizer: they go through `plain`
and `quoted_token`, never markup. Only tensor methods are used here (no torch import): an edge list's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from lenstop.tui.format import clip, percent, plain
from lenstop.tui.graph_text import graph_node_text
from lenstop.tui.views import quoted_token

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph, GraphIntervention
    from lenstop.models.graphs.influence import Edges

EDGES_SHOWN = 4  # inputs numbered 1-4, outputs 5-8
STRONG, MIDDLING = 0.2, 0.6  # the shares of the shown features, by influence, marked ● and ◐
Neighbour = tuple[int, float]  # (node, weight)


def row_of(kind: str, layer: int, n_layers: int) -> int:
    """A node's row from the bottom: 0 the embeddings, 1 + layer the features and errors, the logits on top."""
    return 0 if kind == "embed" else n_layers + 1 if kind == "logit" else layer + 1


def row_name(row: int, n_layers: int) -> str:
    return "emb" if row == 0 else "logit" if row == n_layers + 1 else f"L{row - 1}"


@dataclass(frozen=True)
class GraphModel:
    """What the grid shows of a graph: the pruned nodes or all, by cell, by influence, with their marks."""

    graph: AttributionGraph
    everything: bool
    shown: tuple[int, ...]
    cells: Mapping[tuple[int, int], tuple[int, ...]]  # (row, position) -> its nodes, most influential first
    ranked: tuple[int, ...]  # every shown node but the logits, most influential first
    marks: Mapping[int, str]
    edges: Edges  # the shown graph's edges: the pruned ones, or all

    @classmethod
    def of(cls, graph: AttributionGraph, everything: bool = False) -> GraphModel:
        shown = tuple(range(len(graph.nodes))) if everything else tuple(graph.pruned.nodes)
        nodes = graph.nodes
        cells: dict[tuple[int, int], list[int]] = {}
        for i in shown:
            n = nodes[i]
            cells.setdefault((row_of(n.kind, n.layer, graph.n_layers), n.position), []).append(i)
        kind_order = {"feature": 0, "error": 1, "embed": 2, "logit": 3}
        ordered = {
            k: tuple(sorted(v, key=lambda i: (kind_order[nodes[i].kind], -nodes[i].influence)))
            for k, v in cells.items()
        }
        ranked = tuple(sorted((i for i in shown if nodes[i].kind != "logit"), key=lambda i: -nodes[i].influence))
        features = [i for i in ranked if nodes[i].kind == "feature"]
        strong, middling = round(len(features) * STRONG), round(len(features) * MIDDLING)
        marks = {i: "◇" if nodes[i].kind == "error" else "■" if nodes[i].kind == "embed" else "◆" for i in shown}
        for rank, i in enumerate(features):
            marks[i] = "●" if rank < max(1, strong) else "◐" if rank < middling else "○"
        edges = graph.edges if everything else graph.edges.where(graph.pruned.edges)
        return cls(graph, everything, shown, ordered, ranked, marks, edges)

    @property
    def n_rows(self) -> int:
        return self.graph.n_layers + 2

    def cell_of(self, index: int) -> tuple[int, int]:
        n = self.graph.nodes[index]
        return row_of(n.kind, n.layer, self.graph.n_layers), n.position

    def first(self) -> int:
        """Where the cursor starts: the first logit, which the graph explains."""
        return next(i for i in self.shown if self.graph.nodes[i].kind == "logit")

    def step(self, index: int, rows: int, positions: int) -> int | None:
        """The node one step away along rows (up +1) or positions (right +1): the nearest cell that way that
        holds a node, closest in the other direction, and in it the most influential; None at the edge."""
        row, position = self.cell_of(index)
        if rows:
            lines = range(row + rows, -1 if rows < 0 else self.n_rows, rows)
            for r in lines:
                found = [(abs(p - position), p) for (rr, p) in self.cells if rr == r]
                if found:
                    return self.cells[r, min(found)[1]][0]
            return None
        lines = range(position + positions, -1 if positions < 0 else self.graph.n_pos, positions)
        for p in lines:
            found = [(abs(rr - row), rr) for (rr, pp) in self.cells if pp == p]
            if found:
                return self.cells[min(found)[1], p][0]
        return None

    def cycle(self, index: int, step: int) -> int:
        """The next (or previous) node by influence, after the logits (what the graph explains)."""
        order = tuple(i for i in self.shown if self.graph.nodes[i].kind == "logit") + self.ranked
        at = order.index(index) if index in order else -step
        return order[(at + step) % len(order)]

    def neighbours(self, index: int, k: int = EDGES_SHOWN) -> tuple[list[Neighbour], list[Neighbour]]:
        """The node's strongest inputs and outputs among the shown edges, by absolute weight."""
        return _strongest(self.edges, index, True, k), _strongest(self.edges, index, False, k)


def _strongest(edges: Edges, index: int, incoming: bool, k: int) -> list[Neighbour]:
    mask = (edges.target if incoming else edges.source) == index
    weights, ends = edges.weight[mask], (edges.source if incoming else edges.target)[mask]
    order = weights.abs().argsort(descending=True)[:k]
    return [(int(ends[i]), float(weights[i])) for i in order]


def node_name(graph: AttributionGraph, index: int) -> str:
    return graph_node_text(graph.nodes[index], graph)


def node_title(graph: AttributionGraph, index: int, width: int) -> Text:
    """The selected node in one line: its name, token, activation, influence and label."""
    n = graph.nodes[index]
    parts = [node_name(graph, index)]
    if n.kind != "logit":
        parts.append(quoted_token(graph.tokens[n.position], 12))
    if n.activation is not None:
        parts.append(f"act {n.activation:.3g}")
    parts.append(f"influence {n.influence:.3g}")
    if n.kind == "logit":
        target = next((t for t in graph.targets if t.id == n.feature), None)
        parts.append(f"p {percent(target.prob).strip()}" if target else "")
    if n.kind == "feature" and n.label:
        parts.append(repr(clip(n.label, 40)))
    return plain(clip(" " + " · ".join(p for p in parts if p), width), "bold")


def _edge_line(graph: AttributionGraph, number: int | None, edge: Neighbour, width: int) -> str:
    other, weight = edge
    n = graph.nodes[other]
    label = f" {n.label}" if n.kind == "feature" and n.label else ""
    return clip(f"{number if number is not None else ' '} {weight:+.3f} {node_name(graph, other)}{label}", width)


def edges_text(
    graph: AttributionGraph, inputs: Sequence[Neighbour], outputs: Sequence[Neighbour], width: int, rows: int
) -> Text:
    """Inputs beside outputs, one edge a line, weights signed and aligned: the first four of each numbered
    (inputs 1-4, outputs 5-8, the keys that follow them), the rest, on a tall screen, listed."""
    half = max(20, (width - 4) // 2)
    out = Text(" ")
    out.append(f"{'inputs (enter follows the first)':<{half}}", "dim")
    out.append(" │ outputs (o)", "dim")
    for row in range(max(EDGES_SHOWN, rows)):
        cells = []
        for edges, first in ((inputs, 1), (outputs, 1 + EDGES_SHOWN)):
            number = first + row if row < EDGES_SHOWN else None
            cells.append(_edge_line(graph, number, edges[row], half) if row < len(edges) else "none" * (row == 0))
        out.append("\n ")
        out.append_text(plain(f"{cells[0]:<{half}} │ {cells[1]}"))
    return out


def crumbs_text(graph: AttributionGraph, path: Sequence[int], width: int) -> str:
    """The nodes followed to get here, the latest last; cut at the left when long."""
    text = " › ".join(node_name(graph, i) for i in path)
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


def pinned_text(graph: AttributionGraph, pinned: Sequence[int], scores: tuple[float, float] | None, width: int) -> Text:
    if not pinned:
        return plain(" pinned: none · p pins a node: the pinned and every error node form a subgraph", "dim")
    names = ", ".join(node_name(graph, i) for i in pinned)
    score = "scoring…" if scores is None else f"replacement {short(scores[0])} completeness {short(scores[1])}"
    line = f" pinned {len(pinned)} + errors: {score} · {names}"
    return plain(clip(line, width))


def supernodes_text(graph: AttributionGraph, supernodes: Mapping[str, tuple[int, ...]], width: int) -> Text:
    if not supernodes:
        return plain(" supernodes: none · g groups the pinned nodes under a name", "dim")
    parts = [f"{name} [{' '.join(node_name(graph, i) for i in members)}]" for name, members in supernodes.items()]
    return plain(clip(" supernodes: " + " · ".join(parts), width))


def intervention_text(graph: AttributionGraph, what: str, found: GraphIntervention | None, width: int) -> Text:
    """The targets before → after an intervention on the real model, and its new top tokens."""
    if found is None:
        return plain(f" {what}…" if what else " intervene: a ablates the feature, c sets a value, m attention", "dim")
    attention = "attention frozen" if found.frozen_attention else "attention recomputed"
    moved = "  ".join(
        f"{quoted_token(t.token, 10)} {percent(t.clean_prob).strip()}→{percent(t.new_prob).strip()}"
        for t in found.targets
    )
    top = " ".join(f"{quoted_token(token, 10)} {percent(p).strip()}" for token, p in found.top[:4])
    out = plain(clip(f" {what} ({attention}): {moved}", width))
    out.append("\n")
    out.append_text(plain(clip(f"   now top: {top}", width)))
    return out


def header_text(graph: AttributionGraph | None, tokens: Sequence[str], position: int, width: int) -> str:
    """What the graph explains: the prediction after the selected token, on the prompt cut there."""
    token = quoted_token(tokens[position], 12) if 0 <= position < len(tokens) else "?"
    head = f"graph · next token after pos {position} {token} (prompt cut there)"
    if graph is not None:
        head += " · " + " ".join(f"{quoted_token(t.token, 10)} {percent(t.prob).strip()}" for t in graph.targets)
    return clip(head, width)


def short(score: float) -> str:
    """A score in 0..1 as `.97`."""
    return f"{score:.2f}".removeprefix("0")


def scores_text(model: GraphModel, width: int) -> str:
    """What is shown, and the scores of the pruned graph beside the whole one's."""
    g, pruned = model.graph, model.graph.pruned
    shown = f"all {len(g.nodes)} nodes" if model.everything else f"pruned {len(pruned.nodes)}/{len(g.nodes)}"
    line = (
        f"{shown} ({pruned.node_threshold:g}/{pruned.edge_threshold:g}): replacement {short(pruned.replacement_score)}"
        f" completeness {short(pruned.completeness_score)} · whole {short(g.replacement_score)}"
        f" {short(g.completeness_score)} · {len(g.edges.weight)} edges"
    )
    return clip(line, width)


def cut_prompt(prompt: str, tokens: Sequence[str], position: int, bos: bool) -> str | None:
    """The prompt up to and including the token at `position`, as the tokens spell it; None if they do not
    spell the prompt's start (a token decoded alone need not be its text there)."""
    text = "".join(tokens[1 if bos else 0 : position + 1])
    return text if prompt.startswith(text) else None


def parse_thresholds(text: str) -> tuple[float, float]:
    """`0.8 0.98` (or `0.8,0.98`): the node and edge thresholds, each in 0..1."""
    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise ValueError("type two numbers: the node threshold and the edge threshold, e.g. 0.8 0.98")
    node, edge = (float(p) for p in parts)
    if not (0 <= node <= 1 and 0 <= edge <= 1):
        raise ValueError("each threshold is a share of the influence, between 0 and 1")
    return node, edge
