"""What a user names when asking why: the metric to explain, and the nodes of the
computation that may cause it. Plain frozen values, no torch, so the CLI and the
app build, show and send them without the heavy imports.

Nodes, and how each is removed ("ablated") to measure its effect:
- feature  a dictionary feature at a layer and position; set to 0 (or to its corrupted value),
           keeping the dictionary's reconstruction error, as `--ablate` does;
- error    the dictionary's reconstruction error at a layer and position; removed (x becomes x-hat);
- head     an attention head's output (hook_z) at a position, or at every position; zeroed, as `--ablate-head`;
- mlp      an MLP's output at a position, or at every position; zeroed;
- embed    the input to the first block at a position (token and position embeddings); zeroed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lenstop.models.errors import UsageError

NodeKind = Literal["feature", "error", "head", "mlp", "embed"]
KINDS: tuple[NodeKind, ...] = ("feature", "error", "head", "mlp", "embed")
Direction = Literal["clean->corrupt", "corrupt->clean"]
# What a circuit shows by default. MLP outputs are left out: without a dictionary of their own, an MLP is one
# opaque node as large as its layer, and its effects still reach the circuit through the nodes it feeds.
CIRCUIT_KINDS: tuple[NodeKind, ...] = ("feature", "error", "head", "embed")
DIRECTIONS: tuple[Direction, ...] = ("clean->corrupt", "corrupt->clean")
MAX_STEPS = 1024  # integrated gradients' points on the path: 20 to 300 are usual; more only costs time


def check_steps(steps: int) -> None:
    """A usage error for a number of integrated-gradients steps out of range, said before any pass runs."""
    if not 0 <= steps <= MAX_STEPS:
        raise UsageError(
            f"--steps {steps}: integrated gradients takes 1 to {MAX_STEPS:,} steps (0: the plain gradient); "
            "a few hundred are already more than enough"
        )


@dataclass(frozen=True)
class Metric:
    """One number to explain: log p(target) at `position`, or logit(target) - logit(wrong) when `wrong` is set.

    `target` and `wrong` are a token's text (" first") or `#ID`; no target means the
    model's top prediction at that position on the clean prompt.
    """

    position: int = -1  # a prompt position; negative counts from the end
    target: str | None = None
    wrong: str | None = None


@dataclass(frozen=True)
class CircuitOptions:
    """How much of a circuit to draw: its nodes, its edges, and how their attributions are computed."""

    node_threshold: float = 0.1  # a node's |attribution|, as a share of the strongest node's
    edge_threshold: float = 0.1  # an edge's |weight|, as a share of the strongest into the same node
    max_children: int = 6  # upstream nodes with an edge into one followed node, at the most
    max_nodes: int = 24
    kinds: tuple[NodeKind, ...] = CIRCUIT_KINDS  # the kinds shown; the others' effects still flow through them
    steps: int = 0  # integrated gradients' points on the path; 0: the plain gradient

    def __post_init__(self) -> None:
        check_steps(self.steps)


@dataclass(frozen=True)
class Node:
    kind: NodeKind
    layer: int | None = None  # None only for embed
    position: int | None = None  # None: a head or MLP at every position
    feature: int | None = None  # feature nodes only
    head: int | None = None  # head nodes only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown node kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if (self.kind == "feature") != (self.feature is not None) or (self.kind == "head") != (self.head is not None):
            raise UsageError(f"a {self.kind} node names {'a feature' if self.kind == 'feature' else 'a head'}")
        if (self.kind == "embed") != (self.layer is None):
            raise UsageError("every node but an embedding names a layer")
        if self.position is None and self.kind not in ("head", "mlp"):
            raise UsageError(f"a {self.kind} node names a position")

    @property
    def followable(self) -> bool:
        """Whether "why is this here?" has an answer: its own upstream nodes. Errors and inputs are leaves."""
        return self.kind in ("feature", "head", "mlp")

    def describe(self) -> str:
        """`L1 #446 @23`, `L1 err @23`, `L1.H4 @23`, `L1.H4 @all`, `L0 mlp @5`, `emb @3`."""
        at = "@all" if self.position is None else f"@{self.position}"
        match self.kind:
            case "feature":
                return f"L{self.layer} #{self.feature} {at}"
            case "error":
                return f"L{self.layer} err {at}"
            case "head":
                return f"L{self.layer}.H{self.head} {at}"
            case "mlp":
                return f"L{self.layer} mlp {at}"
            case _:
                return f"emb {at}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "layer": self.layer,
            "position": self.position,
            "feature": self.feature,
            "head": self.head,
        }


_FEATURE = re.compile(r"^(?P<layer>\d+):(?P<feature>\d+)@(?P<pos>\d+)$")
_HEAD = re.compile(r"^(?P<layer>\d+)\.(?P<head>\d+)(?:@(?P<pos>\d+))?$")
_SITE = re.compile(r"^(?P<kind>err|mlp):(?P<layer>\d+)(?:@(?P<pos>\d+))?$")
_EMBED = re.compile(r"^emb@(?P<pos>\d+)$")
NODE_SYNTAX = "L:F@POS (a feature), L.H[@POS] (a head), mlp:L[@POS], err:L@POS or emb@POS"


def parse_node(spec: str) -> Node:
    """A node as the CLI names it, in the syntax of the interventions: `1:446@23`, `1.5@39`, `mlp:0@3`."""
    text = spec.strip()
    if m := _FEATURE.match(text):
        return Node("feature", int(m["layer"]), int(m["pos"]), feature=int(m["feature"]))
    if m := _HEAD.match(text):
        return Node("head", int(m["layer"]), None if m["pos"] is None else int(m["pos"]), head=int(m["head"]))
    if m := _SITE.match(text):
        kind: NodeKind = "error" if m["kind"] == "err" else "mlp"
        return Node(kind, int(m["layer"]), None if m["pos"] is None else int(m["pos"]))
    if m := _EMBED.match(text):
        return Node("embed", None, int(m["pos"]))
    raise UsageError(f"bad node {spec!r}: expected {NODE_SYNTAX}")
