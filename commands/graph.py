"""`lenstop graph`: the attribution graph of a prompt on a local replacement model (transcoders, frozen
attention and norms, exact linear edges), as circuit-tracer computes it; text, `--json`, or `--out` for
circuit-tracer's and Neuronpedia's graph viewers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lenstop.commands.circuits import ViewerOutOpt
from lenstop.commands.common import (
    ENGINE_DEFAULTS,
    PLACED_BY_DEFAULT,
    JsonOpt,
    LabelsOpt,
    ModelArg,
    Placement,
    PromptOpt,
    engine_spec,
    load_engine,
    placement_options,
    print_json,
    user_errors,
)
from lenstop.models.demo import DEMO_NAME
from lenstop.models.errors import UsageError
from lenstop.models.prompts import read_prompt

DEMO_TRANSCODERS = "demo:transcoders"

TranscodersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sae",
        help="Transcoders: one per layer (SAELens or circuit-tracer files, a folder of them), or a cross-layer "
        f"transcoder (circuit-tracer's config.yaml folder). Defaults to {DEMO_TRANSCODERS} for the demo model "
        "(demo:clt for its cross-layer transcoder).",
    ),
]


@placement_options()
def graph(
    prompt: PromptOpt,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: TranscodersOpt = None,
    labels: LabelsOpt = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="A token to explain (' first', or #ID; repeatable); default: the salient ones."),
    ] = None,
    wrong: Annotated[
        str | None, typer.Option("--wrong", help="With one --target: explain logit(target) - logit(wrong).")
    ] = None,
    max_feature_nodes: Annotated[
        int | None, typer.Option("--max-feature-nodes", min=1, help="Visit at most N features, most influential first.")
    ] = None,
    node_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Pruning: keep the nodes with this share of the influence.")
    ] = 0.8,
    edge_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Pruning: keep the edges with this share of the influence.")
    ] = 0.98,
    batch_size: Annotated[int, typer.Option(min=1, help="Targets carried down per pass.")] = 256,
    out: ViewerOutOpt = None,
    neuronpedia: Annotated[
        str | None,
        typer.Option(
            "--neuronpedia",
            metavar="MODEL[:SOURCE_SET]",
            help="With --out: write the graph for Neuronpedia's upload instead, its scan the Neuronpedia model id "
            "and its features looked up in SOURCE_SET there (no feature files).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """The attribution graph behind a prediction, on transcoders with attention and norms frozen (circuit-tracer's
    method and defaults): nodes, exact edges, pruning and scores."""
    with user_errors():
        _check_out(out, neuronpedia)
        text = read_prompt(prompt)
        saes = sae or ([DEMO_TRANSCODERS] if model == DEMO_NAME else [])
        spec = engine_spec(model=model, sae=saes, labels=labels, placement=placement)
        engine = load_engine(spec)
        found = engine.graph(
            text,
            targets=tuple(target or ()),
            wrong=wrong,
            max_feature_nodes=max_feature_nodes,
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
            batch_size=batch_size,
        )
        if out is not None:
            engine.export_graph(found, out, neuronpedia)
        if as_json:
            print_json(found.as_json())
        else:
            from lenstop.commands.render import render_graph

            render_graph(found)


def _check_out(out: Path | None, neuronpedia: str | None) -> None:
    """Refuse a bad --out or --neuronpedia before the graph is built, not after."""
    if neuronpedia is not None:
        from lenstop.models.graphs.export import NeuronpediaTarget

        if out is None:
            raise UsageError("--neuronpedia names where --out's graph goes: give --out FILE.json too")
        NeuronpediaTarget.parse(neuronpedia)
    if out is not None:
        from lenstop.models.files import check_writable

        check_writable(out)
