"""`lenstop cards`: feature cards from text for every dictionary, in one pass over a corpus: top contexts,
examples at activation quantiles, density and a histogram, cached for every later session. `lenstop
features`: finding features by label or id, by the text they fire on, or by the token they promote."""

from __future__ import annotations

import time
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
    SaeOpt,
    engine_spec,
    load_engine,
    placement_options,
    print_json,
    user_errors,
)
from lenstop.models.demo import DEMO_NAME

if TYPE_CHECKING:
    from lenstop.models.cards.texts import Corpus
from lenstop.models.errors import UsageError

DEMO_CORPUS = "demo"


@placement_options()
def cards(
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    corpus: Annotated[
        list[str] | None,
        typer.Option(
            "--corpus",
            help="Text files, folders of them, or .jsonl files with a text field (repeatable); "
            f"'{DEMO_CORPUS}' for the demo's held-out text.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", metavar="NAME[:SPLIT]", help="A Hugging Face dataset in the local datasets cache."),
    ] = None,
    text_field: Annotated[
        str | None, typer.Option("--text-field", help="The JSON field or dataset column with the text (default: text).")
    ] = None,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Read at most N corpus tokens.")] = 1_000_000,
    context: Annotated[int, typer.Option("--context", min=2, help="Tokens a window, BOS included.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows a forward pass.")] = 32,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Build feature cards from text for every dictionary: one pass over the corpus, resumable (ctrl+c keeps what
    is done), cached under the model's and each dictionary's digests."""
    from lenstop.models.cards.spec import PassOptions

    with user_errors():
        source = _source(model, corpus, dataset, text_field)
        engine = load_engine(engine_spec(model=model, sae=sae, labels=None, placement=placement))
        options = PassOptions(tokens=tokens, context=context, batch_size=batch_size)
        with _Bar(context, quiet=as_json) as bar:
            result = engine.build_cards(source, options, bar.update)
        summary = {
            "corpus": source.name,
            "tokens": result.n_tokens,
            "windows": result.n_windows,
            "resumed_from_windows": result.resumed_from,
            "seconds": round(result.seconds, 2),
            "cards": {key: str(path) for key, path in result.written.items()},
        }
        if as_json:
            print_json(summary)
        else:
            _report(summary, result.written)


def _source(model: str, corpus: list[str] | None, dataset: str | None, text_field: str | None) -> Corpus:
    """The text the options name, or a one-line error saying what `lenstop cards` needs."""
    from lenstop.models.cards import texts

    if corpus and dataset:
        raise UsageError("give --corpus or --dataset, not both")
    if not corpus and not dataset:
        offer = f"; for the demo, --corpus {DEMO_CORPUS} reads its held-out text" if model == DEMO_NAME else ""
        raise UsageError(
            "lenstop cards needs text to read: --corpus PATH (text files, folders, .jsonl) or "
            f"--dataset NAME[:SPLIT] from the local Hugging Face datasets cache{offer}"
        )
    if corpus == [DEMO_CORPUS]:
        if model != DEMO_NAME:
            raise UsageError(f"--corpus {DEMO_CORPUS} is the demo model's held-out text; name files for {model}")
        return texts.from_demo()
    if dataset:
        return texts.from_dataset(dataset, text_field)
    return texts.from_paths(corpus or [], text_field or texts.TEXT_FIELD)


class _Bar:
    """A progress bar in tokens, with tokens per second and the time left (on stderr, so --json stays clean)."""

    def __init__(self, context: int, quiet: bool) -> None:
        self.per_window = context - 1
        self.quiet = quiet
        self.task: object = None

    def __enter__(self) -> _Bar:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("reading"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.progress.__enter__()
        self.started: tuple[float, int] | None = None
        return self

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.started is None:  # the first batch of this run (a resumed one starts part way): the clock starts
            self.started = (now, done)
            self.task = self.progress.add_task("cards", total=total * self.per_window, rate="")
        seconds = now - self.started[0]
        rate = f"{(done - self.started[1]) * self.per_window / seconds:,.0f} tokens/s" if seconds > 0 else ""
        self.progress.update(self.task, completed=done * self.per_window, rate=rate)  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.progress.__exit__(None, None, None)


def _report(summary: dict, written: dict[str, Path]) -> None:
    from lenstop.commands.render import console as out

    resumed = f", resuming at window {summary['resumed_from_windows']:,}" if summary["resumed_from_windows"] else ""
    out.print(f"read {summary['tokens']:,} tokens of {summary['corpus']} in {summary['seconds']:.1f} s{resumed}")
    for key, path in written.items():
        out.print(f"  {key}: {path}", highlight=False, markup=False, soft_wrap=True)
    out.print("they show in lenstop card, the app and graph exports from now on", style="dim")


@placement_options()
def features(
    model: ModelArg = ENGINE_DEFAULTS.model,
    sae: SaeOpt = None,
    labels: LabelsOpt = None,
    search: Annotated[
        str | None, typer.Option("--search", help="Words of a label (substring, then fuzzy), or LAYER:FEATURE.")
    ] = None,
    span: Annotated[
        str | None,
        typer.Option("--span", metavar="A:B", help="Tokens A..B-1 of --prompt (BOS is 0): what fires there."),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help=r"The prompt of --span (\n is a newline).")
    ] = None,
    promotes: Annotated[
        str | None, typer.Option("--promotes", help="A token (' first', or #ID): the features that raise its logit.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most N features.")] = 20,
    as_json: JsonOpt = False,
    placement: Placement = PLACED_BY_DEFAULT,
) -> None:
    """Find features over every dictionary: by label or id, by a span of a prompt they fire on, or by a token they
    promote. Open one with lenstop card LAYER:FEATURE."""
    from lenstop.models.prompts import read_prompt, unescape

    with user_errors():
        bounds = _span(span) if span is not None else None
        text = read_prompt(prompt) if prompt is not None else None
        engine = load_engine(engine_spec(model=model, sae=sae, labels=labels, placement=placement))
        hits = engine.find_features(
            search=search,
            prompt=text,
            span=bounds,
            promotes=unescape(promotes) if promotes is not None else None,
            limit=limit,
        )
        if as_json:
            print_json({"features": [h.to_json() for h in hits]})
            return
        from lenstop.commands.render import render_hits

        render_hits(hits)


def _span(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep or not start.strip().isdigit() or not stop.strip().isdigit() or int(stop) <= int(start):
        raise UsageError(f"bad --span {text!r}: expected A:B with A < B, token positions as lenstop trace numbers them")
    return int(start), int(stop)
