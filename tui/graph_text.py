"""An attribution graph as text, for `lenstop graph` and the app's graph view: its nodes named short
(`L1 #446@23`, `L0 err@20`, `emb '·range'@19`, `→ ' first'`), its scores, its most influential nodes and a
node's strongest inputs and outputs. Labels and tokens come from files and the tokenizer, so they pass
through `plain` and `quoted_token`, never markup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from lenstop.tui.format import clip, counted, percent, plain
from lenstop.tui.views import quoted_token

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph, GraphNode


def graph_node_text(node: GraphNode, graph: AttributionGraph) -> str:
    """One node, short."""
    at = f"@{node.position}"
    match node.kind:
        case "feature":
            return f"L{node.layer} #{node.feature}{at}"
        case "error":
            return f"L{node.layer} err{at}"
        case "embed":
            return f"emb {quoted_token(graph.tokens[node.position], 10)}{at}"
        case _:
            return f"→ {quoted_token(node.label, 12)}"


def scores_line(graph: AttributionGraph) -> str:
    pruned = graph.pruned
    return (
        f"{counted(len(graph.nodes), 'node')} · {counted(len(graph.edges.weight), 'edge')} · "
        f"replacement {graph.replacement_score:.2f} · completeness {graph.completeness_score:.2f}   "
        f"pruned: {counted(len(pruned.nodes), 'node')}, replacement {pruned.replacement_score:.2f}, "
        f"completeness {pruned.completeness_score:.2f}"
    )


def targets_line(graph: AttributionGraph) -> str:
    return " · ".join(f"{quoted_token(t.token, 16)} {percent(t.prob).strip()}" for t in graph.targets)


def neighbours_text(graph: AttributionGraph, index: int, k: int = 6, width: int = 100) -> Text:
    """The node's strongest direct inputs and outputs, with weights and labels."""
    out = Text()
    for title, pairs in (("in ", graph.inputs(index, k)), ("out", graph.outputs(index, k))):
        out.append(f"{title} ", style="bold")
        if not pairs:
            out.append("none\n")
            continue
        parts = []
        for other, weight in pairs:
            node = graph.nodes[other]
            label = f" {node.label}" if node.kind == "feature" and node.label else ""
            parts.append(f"{graph_node_text(node, graph)}{label} {weight:+.3g}")
        out.append_text(plain(clip(" · ".join(parts), max(20, 2 * width - 4))))
        out.append("\n")
    return out


def graph_text(graph: AttributionGraph, width: int = 100, top: int = 12) -> Text:
    """What `lenstop graph` prints: targets, scores, the most influential features of the pruned graph, and
    the strongest inputs of the first target."""
    out = Text()
    out.append("prompt   ", style="bold")
    out.append_text(
        plain(
            f"{counted(graph.n_pos, 'token')} · {counted(graph.n_active_features, 'active feature')} · "
            f"{graph.transcoders} {clip(graph.scan, 40)}"
        )
    )
    out.append("\ntargets  ", style="bold")
    out.append_text(plain(clip(targets_line(graph), width - 9)))
    out.append("\n")
    out.append("graph    ", style="bold")
    out.append(scores_line(graph) + "\n")
    kept = [i for i in graph.pruned.nodes if graph.nodes[i].kind == "feature"]
    kept.sort(key=lambda i: -graph.nodes[i].influence)
    out.append(f"top features of the pruned graph, by influence ({len(kept)} kept)\n", style="bold")
    for i in kept[:top]:
        node = graph.nodes[i]
        line = (
            f"  {graph_node_text(node, graph):<16} {quoted_token(graph.tokens[node.position], 10):<12} "
            f"act {node.activation or 0:7.3f}  influence {node.influence:.3g}  {node.label}"
        )
        out.append_text(plain(clip(line, width)))
        out.append("\n")
    first_logit = len(graph.nodes) - len(graph.targets)
    out.append(f"into {graph_node_text(graph.nodes[first_logit], graph)}\n", style="bold")
    out.append_text(neighbours_text(graph, first_logit, width=width))
    return out
