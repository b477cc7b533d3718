"""The graph view's keys: its bindings (each with an id, which keys.json remaps), the footer's choice of
them, most used first, and the guide `?` opens with."""

from __future__ import annotations

from textual.binding import Binding, BindingType

from lenstop.tui.graph_views import EDGES_SHOWN
from lenstop.tui.widgets.footer import FooterKey

THRESHOLD_STEP = 0.05  # what + and - change the node threshold by
_MOVE = "←↑↓→"

BINDINGS: list[BindingType] = [
    Binding("escape", "close", "close the view", id="graph.close"),
    Binding("h,left", "move(0, -1)", "previous position", key_display=_MOVE, id="graph.left"),
    Binding("l,right", "move(0, 1)", "next position", key_display=_MOVE, id="graph.right"),
    Binding("k,up", "move(1, 0)", "layer above", key_display=_MOVE, id="graph.up"),
    Binding("j,down", "move(-1, 0)", "layer below", key_display=_MOVE, id="graph.down"),
    Binding("tab", "cycle(1)", "next node by influence", id="graph.next"),
    Binding("shift+tab", "cycle(-1)", "previous node by influence", id="graph.previous"),
    Binding("enter", "follow(1)", "follow the strongest input", id="graph.follow"),
    Binding("o", f"follow({EDGES_SHOWN + 1})", "follow the strongest output", id="graph.follow.out"),
    *(Binding(str(n), f"follow({n})", f"follow edge {n}", show=False, id=f"graph.edge.{n}") for n in range(1, 9)),
    Binding("backspace", "back", "back along the breadcrumb", id="graph.back"),
    Binding("f", "everything", "all nodes or the pruned graph", id="graph.all"),
    Binding("p", "pin", "pin or unpin the node", id="graph.pin"),
    Binding("g", "group", "group the pinned nodes into a supernode", id="graph.group"),
    Binding("r", "prune", "re-prune: type the thresholds", id="graph.prune"),
    Binding("plus,equals_sign", f"nudge({THRESHOLD_STEP})", "keep more nodes", id="graph.prune.more"),
    Binding("minus", f"nudge({-THRESHOLD_STEP})", "keep fewer nodes", id="graph.prune.less"),
    Binding("a", "ablate", "ablate the feature", id="graph.ablate"),
    Binding("A", "ablate_pinned", "ablate every pinned feature together", id="graph.ablate.pinned"),
    Binding("c", "set_value", "set the feature to a value", id="graph.set"),
    Binding("m", "attention", "attention frozen or recomputed", id="graph.attention"),
    Binding("x", "export", "write the graph for circuit-tracer's viewer", id="graph.export"),
    Binding("comma", "position(-1)", "the graph of the token before", id="graph.position.previous"),
    Binding("full_stop", "position(1)", "the graph of the token after", id="graph.position.next"),
    Binding("question_mark", "help", "every key", id="graph.help"),
]
FOOTER = (
    FooterKey(("graph.left", "graph.down", "graph.up", "graph.right"), "node"),
    FooterKey(("graph.follow",), "follow"),
    FooterKey(("graph.back",), "back"),
    FooterKey(("graph.pin",), "pin"),
    FooterKey(("graph.group",), "group"),
    FooterKey(("graph.ablate",), "ablate"),
    FooterKey(("graph.set",), "set"),
    FooterKey(("graph.all",), "all"),
    FooterKey(("graph.prune",), "prune"),
    FooterKey(("graph.export",), "export"),
    FooterKey(("graph.close",), "close"),
    FooterKey(("graph.next",), "by influence"),
    FooterKey(("graph.follow.out",), "follow out"),
    FooterKey(("graph.attention",), "attention"),
    FooterKey(("graph.ablate.pinned",), "ablate pinned"),
)
GUIDE = (
    "The attribution graph of the prediction after the selected token, built on the prompt cut there: rows are "
    "layers (logits on top, token embeddings at the bottom), columns positions. ● ◐ ○ a feature, strong to "
    "weak; ◇ an error node; ■ a token; ◆ a logit. The selected node is reversed, pinned nodes underlined. "
    "Numbers 1-4 follow an input, 5-8 an output. Pinned nodes and every error node form a subgraph, whose "
    "scores are shown."
)
