"""The `lenstop` command: parse, call the engine, print.

Only typer, rich and lenstop's torch-free modules are imported at module level,
so `lenstop --help` and `--version` answer at once; torch, TransformerLens and
SAELens are imported inside the commands that need them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lenstop.commands import cards, circuits, graph
from lenstop.commands.common import (
    ENGINE_DEFAULTS,
    PLACED_BY_DEFAULT,
    AblateOpt,
    ClampOpt,
    HeadOpt,
    JsonOpt,
    LabelsOpt,
    ModelArg,
    Placement,
    PromptOpt,
    SaeOpt,
    SteerOpt,
    engine_spec,
    load_engine,
    placement_options,
    print_json,
    user_errors,
)
from lenstop.models.errors import ExitCode, LenstopError, UsageError
from lenstop.models.interventions import parse_all
from lenstop.models.prompts import read_prompt

if TYPE_CHECKING:
    from lenstop.tui.app import LenstopApp  # imported when the app opens: it is the slow part of starting

COMMANDS = (
    "trace",
    "generate",
    "info",
    "card",
    "cards",
    "features",
    "attribute",
    "patch",
    "heads",
    "circuit",
    "graph",
    "inspect",
)
ROOT_OPTIONS = ("-h", "--help", "-V", "--version")

app = typer.Typer(
    name="lenstop",
    help="A terminal circuit inspector for language models: features, heads and interventions, live.\n\n"
    "[bold]lenstop[/] opens the inspector on the bundled demo, [bold]lenstop MODEL --sae SPEC[/] on any model; "
    "the commands below are for scripts (add --json).",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# ---------------------------------------------------------------- shared options
def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"lenstop {version('lenstop')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """lenstop MODEL [--sae SPEC] opens the inspector; the commands below are for scripts."""


# ---------------------------------------------------------------- commands
@app.command()
@placement_options()
def trace(
    prompt: PromptOpt,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Features to show per token.")] = 5,
    n_predictions: Annotated[
        int, typer.Option("--predictions", min=1, help="Next-token predictions per position.")
    ] = 5,
    ablate: AblateOpt = None,
    steer: SteerOpt = None,
    clamp: ClampOpt = None,
    ablate_head: HeadOpt = None,
    as_json: JsonOpt = False,
    lens: Annotated[
        bool, typer.Option("--lens", help="Include the logit lens of every layer at every position in --json output.")
    ] = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Run a prompt and show each token's top features per layer and the predictions."""
    with user_errors():
        interventions = parse_all(ablate=ablate, steer=steer, clamp=clamp, heads=ablate_head)
        text = read_prompt(prompt)  # before the load: a bad stdin is said at once, not after minutes
        spec = engine_spec(model=model, sae=sae, labels=labels, placement=placement)
        engine = load_engine(spec)
        # Every layer's lens at every position is the costly part of an analysis: read only when asked for;
        # the text shows the last position's alone, read from what the analysis kept.
        analysis = engine.analyse(text, interventions, top_k=top_k, n_predictions=n_predictions, lens=lens and as_json)
        if as_json:
            print_json(analysis.to_json())
        else:
            from lenstop.commands.render import render_trace

            render_trace(analysis, engine.logit_lens(text, -1, interventions, n=n_predictions))


@app.command()
@placement_options()
def generate(
    prompt: PromptOpt,
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", min=1, help="Tokens to generate.")] = 20,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed, shared by the clean and the intervened run.")] = 0,
    ablate: AblateOpt = None,
    steer: SteerOpt = None,
    clamp: ClampOpt = None,
    ablate_head: HeadOpt = None,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Continue a prompt, clean and with the interventions, side by side."""
    with user_errors():
        interventions = parse_all(ablate=ablate, steer=steer, clamp=clamp, heads=ablate_head)
        text = read_prompt(prompt)
        engine = load_engine(engine_spec(model=model, sae=sae, placement=placement))
        result = engine.generate(text, interventions, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        if as_json:
            print_json(result.to_json())
        else:
            from lenstop.commands.render import render_generation

            render_generation(result)


@app.command()
@placement_options()
def info(
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Describe the model and its dictionaries: shapes, device, memory, hooks, sparsity."""
    with user_errors():
        engine = load_engine(engine_spec(model=model, sae=sae, placement=placement))
        facts = engine.info()
        if as_json:
            print_json(facts.to_json())
        else:
            from lenstop.commands.render import render_info

            render_info(facts)


@app.command()
@placement_options(spread=False)
def card(
    feature: Annotated[str, typer.Argument(help="LAYER:FEATURE, e.g. 1:204.")],
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Show a feature's card: the tokens it promotes and suppresses, its decoder norm and nearest features (from
    the weights, for any dictionary), and its label, top contexts and frequency where it has cards."""
    with user_errors():
        layer_text, sep, feature_text = feature.partition(":")
        if not sep or not layer_text.isdigit() or not feature_text.isdigit():
            raise LenstopError(f"bad feature {feature!r}: expected LAYER:FEATURE, e.g. 1:204", ExitCode.USAGE)
        layer, index = int(layer_text), int(feature_text)
        engine = load_engine(engine_spec(model=model, sae=sae, labels=labels, placement=placement))
        found = engine.card(layer, index)
        if found is None:
            raise LenstopError(
                f"no card or label for L{layer} #{index}: its dictionary writes elsewhere than the residual stream and "
                "has no feature_cards.json.gz; pass --labels",
                ExitCode.NOT_FOUND,
            )
        if as_json:
            print_json({"layer": layer, **found.to_json()})
        else:
            from lenstop.commands.render import render_card

            render_card(layer, found)


@app.command()
@placement_options()
def inspect(
    model: Annotated[str | None, typer.Argument(help="Model to open (default: the bundled demo).")] = None,
    sae: SaeOpt = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help=r"Prompt to start with (\n is a newline).")
    ] = None,
    labels: LabelsOpt = None,
    session: Annotated[
        Path | None, typer.Option("--session", help="Restore a saved session (w in the app saves one).")
    ] = None,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Open the interactive inspector (the default command: lenstop MODEL --sae SPEC)."""
    with user_errors():
        from lenstop.tui.app import LenstopApp
        from lenstop.tui.session import Session

        if session is not None:  # `--session=~/s.json` reaches us unexpanded: the shell expands ~ only alone
            session = session.expanduser()
        state = Session.load(session) if session is not None and session.exists() else Session()
        if model is not None:
            state.model = model
        if sae:
            state.saes = list(sae)
        if labels:
            state.labels = list(labels)
        if prompt is not None:
            state.prompt = prompt
        spec = engine_spec(
            model=state.model,
            sae=state.saes,
            labels=state.labels,
            placement=placement,
        )
        need_a_terminal()
        code = run_app(LenstopApp(spec, session=state, session_path=session))
        if code:
            raise typer.Exit(code)


def need_a_terminal() -> None:
    """The app reads keys from stdin and draws on stdout. Started with either not a terminal (a pipe, a
    file, a job with no tty), it would load for minutes and then wait for keys that never come."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the inspector needs a terminal (stdin and stdout); for scripts, use the commands: "
            "lenstop trace MODEL --prompt TEXT --json (see lenstop --help)"
        )


def run_app(app: LenstopApp) -> int:
    """Run the app in the terminal; when it quits with a load or generation still running, end the process now.

    The terminal is restored by then, and the work is nobody's to see; but Python would wait for its
    thread at exit, which for a large model's load means minutes of a terminal that does not answer."""
    code = int(ExitCode.INTERRUPTED)  # unless the app says otherwise: a SIGINT may end it from outside
    try:
        code = app.run_in_terminal()
    finally:
        if app.work_threads.busy:
            if code == ExitCode.INTERRUPTED:
                typer.echo("lenstop: interrupted; the work in progress was abandoned", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


for command in (
    cards.cards,
    cards.features,
    circuits.attribute,
    circuits.patch,
    circuits.heads,
    circuits.circuit,
    graph.graph,
):
    app.command()(command)


def route(argv: list[str]) -> list[str]:
    """`lenstop` and `lenstop MODEL ...` mean `lenstop inspect ...`."""
    if not argv:
        return ["inspect"]
    first = argv[0]
    if first in COMMANDS or first in ROOT_OPTIONS:
        return argv
    return ["inspect", *argv]  # `lenstop gpt2 --sae ...` and `lenstop --device cpu` open the app


def main() -> None:
    app(args=route(sys.argv[1:]), prog_name="lenstop")
