"""`lenstop attribute`, `patch`, `heads` and `circuit`: why the model predicted a token,
and what carries the difference between two prompts. Each prints rich tables, or one
JSON document with `--json` (the same the app shows)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lenstop.commands.common import (
    ENGINE_DEFAULTS,
    PLACED_BY_DEFAULT,
    JsonOpt,
    LabelsOpt,
    ModelArg,
    Placement,
    PromptOpt,
    SaeOpt,
    engine_spec,
    load_engine,
    placement_options,
    print_json,
    syntax,
    user_errors,
)
from lenstop.models.circuits.spec import DIRECTIONS, KINDS, NODE_SYNTAX, Metric, NodeKind, check_steps, parse_node
from lenstop.models.errors import UsageError
from lenstop.models.prompts import read_prompt, unescape

if TYPE_CHECKING:
    pass

PositionOpt = Annotated[
    int, typer.Option("--position", help="The prompt position whose prediction is explained; negative from the end.")
]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="The token to explain (' first', or #ID); default: the top prediction.")
]
WrongOpt = Annotated[
    str | None, typer.Option("--wrong", help="A wrong token: the metric becomes logit(target) - logit(wrong).")
]
CorruptOpt = Annotated[
    str | None,
    typer.Option("--corrupt", help="A corrupted prompt of the same token length: nodes are set to its values, not 0."),
]
ViewerOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Also write the graph for circuit-tracer's viewer here (FILE.json; feature files beside it)."
    ),
]
StepsOpt = Annotated[int, typer.Option("--steps", min=0, help="Integrated gradients with N steps (0: the gradient).")]


def _metric(position: int, target: str | None, wrong: str | None) -> Metric:
    return Metric(position, unescape(target) if target else None, unescape(wrong) if wrong else None)


def _kinds(text: str) -> tuple[NodeKind, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise UsageError(f"--kinds {text!r}: expected a comma-separated list of {', '.join(KINDS)}")
    return kinds  # type: ignore[return-value]  # checked just above


@placement_options()
def attribute(
    prompt: PromptOpt,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    position: PositionOpt = -1,
    target: TargetOpt = None,
    wrong: WrongOpt = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Nodes to list.")] = 20,
    corrupt: CorruptOpt = None,
    steps: StepsOpt = 0,
    real: Annotated[int, typer.Option("--real", min=0, help="Measure the real effect of the top N nodes.")] = 0,
    kinds: Annotated[str, typer.Option("--kinds", help=f"Node kinds to list: {','.join(KINDS)}.")] = ",".join(KINDS),
    follow: Annotated[
        list[str] | None,
        typer.Option(
            "--follow", help=syntax(f"Explain this node instead of the metric (repeat to walk a path): {NODE_SYNTAX}.")
        ),
    ] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Add the direct logit attribution.")] = False,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Which features, heads, MLPs and inputs cause a prediction: each node's attribution to the metric."""
    with user_errors():
        check_steps(steps)
        shown = _kinds(kinds)
        path = tuple(parse_node(n) for n in follow or ())
        if real and path:  # known before the load, so said before it
            raise UsageError("--real measures effects on the metric; leave out --follow to measure them")
        metric = _metric(position, target, wrong)
        text = read_prompt(prompt)
        spec = engine_spec(model=model, sae=sae, labels=labels, placement=placement)
        engine = load_engine(spec)
        found = engine.attribute(
            text, metric, corrupt=unescape(corrupt) if corrupt else None, path=path, top=None, steps=steps
        )
        found = replace(found, nodes=tuple(s for s in found.nodes if s.node.kind in shown)[:top])
        if real:
            measuring = [s.node for s in found.nodes[:real]]
            measured = engine.effects(text, metric, measuring, corrupt=found.corrupt_prompt)
            found = found.with_real(dict(zip(measuring, measured, strict=True)))
        dla = engine.direct(text, metric, sources=True) if direct else None
        if as_json:
            doc = found.to_json()
            if dla is not None:
                doc["direct"] = dla.to_json()
            print_json(doc)
        else:
            from lenstop.commands.render import render_attribution, render_direct

            render_attribution(found)
            if dla is not None:
                render_direct(dla)


@placement_options()
def patch(
    clean: Annotated[str, typer.Option("--clean", help=r"The clean prompt (\n is a newline).")],
    corrupt: Annotated[str, typer.Option("--corrupt", help="The corrupted prompt, of the same token length.")],
    answer: Annotated[
        str | None, typer.Option("--answer", help="The right token; default: the clean prediction.")
    ] = None,
    wrong: WrongOpt = None,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    position: PositionOpt = -1,
    direction: Annotated[
        str,
        typer.Option(
            "--direction", help="clean->corrupt: restore the corrupted run; corrupt->clean: damage the clean."
        ),
    ] = DIRECTIONS[0],
    features: Annotated[
        int, typer.Option("--features", min=0, help="Patch the N features with the largest estimates.")
    ] = 50,
    head_positions: Annotated[
        bool, typer.Option("--head-positions/--no-head-positions", help="Also patch each head at each position.")
    ] = True,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Activation patching between a clean and a corrupted prompt, beside attribution patching's estimate."""
    with user_errors():
        if direction not in DIRECTIONS:
            raise UsageError(f"--direction {direction!r}: expected {' or '.join(DIRECTIONS)}")
        spec = engine_spec(model=model, sae=sae, labels=labels, placement=placement)
        engine = load_engine(spec)
        found = engine.patch(
            unescape(clean),
            unescape(corrupt),
            _metric(position, answer, wrong),
            direction=direction,  # narrowed to a Direction by the check above
            head_positions=head_positions,
            features=features,
        )
        if as_json:
            print_json(found.to_json())
        else:
            from lenstop.commands.render import render_patching

            render_patching(found)


@placement_options(spread=False)
def heads(
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Compute the roles again instead of reading the cache.")
    ] = False,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Each head's previous-token, duplicate-token and induction score on repeated random tokens (cached)."""
    with user_errors():
        engine = load_engine(engine_spec(model=model, sae=sae, placement=placement))
        roles = engine.head_roles(refresh=refresh)
        if as_json:
            print_json(roles.to_json())
        else:
            from lenstop.commands.render import render_heads

            render_heads(roles)


@placement_options()
def circuit(
    prompt: PromptOpt,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    position: PositionOpt = -1,
    target: TargetOpt = None,
    wrong: WrongOpt = None,
    corrupt: CorruptOpt = None,
    steps: StepsOpt = 0,
    node_threshold: Annotated[float, typer.Option(help="Keep nodes with at least this share of the top effect.")] = 0.1,
    edge_threshold: Annotated[
        float, typer.Option(help="Keep edges with at least this share of a node's top edge.")
    ] = 0.1,
    max_nodes: Annotated[int, typer.Option(min=1, help="At most this many nodes.")] = 24,
    out: ViewerOutOpt = None,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """The circuit behind a prediction, as a graph circuit-tracer's and Neuronpedia's viewers read (--json, --out)."""
    with user_errors():
        if out is not None:
            from lenstop.models.files import check_writable

            check_writable(out)  # a FIFO or a directory is said now, not after the work
        check_steps(steps)
        text = read_prompt(prompt)
        spec = engine_spec(model=model, sae=sae, labels=labels, placement=placement)
        engine = load_engine(spec)
        found = engine.circuit(
            text,
            _metric(position, target, wrong),
            corrupt=unescape(corrupt) if corrupt else None,
            steps=steps,
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
            max_nodes=max_nodes,
        )
        from lenstop.models.circuits import export

        # --out: the graph, its features' cards beside it and the listing, as circuit-tracer's viewer reads them
        if out is not None:
            engine.export_graph(found, out)
        doc = export.graph_json(found) if out is None else export.graph_json(found, out.stem)  # what the file holds
        if as_json:
            print_json(doc)
        else:
            from lenstop.commands.render import render_circuit

            render_circuit(found)
