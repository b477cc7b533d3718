"""What every `lenstop` command shares: its options (the engine's declared once, as `engine_spec` reads
them), one-line errors with exit codes, loading the engine, and printing JSON. Nothing here imports torch."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import ExitCode, LengthMismatchError, LenstopError, describe
from lenstop.models.files import json_text
from lenstop.models.protocol import EngineProtocol
from lenstop.models.safe_text import printable


def syntax(text: str) -> str:
    """A help text that spells a syntax: Typer renders help as Rich markup, which would take `[@POS]` or
    `[LAYER=]` for a style and drop it."""
    return escape(text)


ModelArg = Annotated[
    str, typer.Argument(help="A Hugging Face model name, a local Hugging Face model directory, or demo (bundled).")
]
SaeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sae",
        help="Dictionary: RELEASE:SAE_ID, RELEASE (all its SAEs), a SAELens directory, a folder of them, or demo. "
        "Repeatable. Defaults to demo for the demo model.",
    ),
]
LabelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--labels",
        help=syntax(
            "Feature labels, [LAYER=]PATH: a Neuronpedia export (batch-N.jsonl.gz, its explanations/ folder, a "
            "folder of MODEL/SOURCE/explanations/, or the older JSON list). Repeatable."
        ),
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option(help="float32, float16 or bfloat16.")]
NDevicesOpt = Annotated[int | None, typer.Option("--n-devices", help="Split the model across this many GPUs.")]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option("--device-map", help="auto, balanced, sequential, a JSON object, or module=device pairs."),
]
ENGINE_DEFAULTS = EngineSpec()  # the options above default to what the app loads: the demo, auto, float32


@dataclass(frozen=True)
class Placement:
    """Where the model runs and in what precision: --device, --dtype, --n-devices and --device-map."""

    device: str = ENGINE_DEFAULTS.device
    dtype: str = ENGINE_DEFAULTS.dtype
    n_devices: int | None = ENGINE_DEFAULTS.n_devices
    device_map: str | None = ENGINE_DEFAULTS.device_map


PLACED_BY_DEFAULT = Placement()  # what a command's `placement` is named as; `placement_options` fills it in
_PLACEMENT_OPTIONS = {"device": DeviceOpt, "dtype": DtypeOpt, "n_devices": NDevicesOpt, "device_map": DeviceMapOpt}
Command = Callable[..., None]


def placement_options(*, spread: bool = True) -> Callable[[Command], Command]:
    """Give a command the placement options, declared here once: --device and --dtype, and with `spread`
    --n-devices and --device-map, after the command's own options (so each `--help` lists them last), handed
    to it as one `placement: Placement`."""
    names = list(_PLACEMENT_OPTIONS)[: 4 if spread else 2]

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "placement"]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(Placement, name), annotation=kind)
            for name, kind in _PLACEMENT_OPTIONS.items()
            if name in names
        ]

        @functools.wraps(command)
        def with_placement(**options: Any) -> None:
            placement = Placement(**{name: options.pop(name) for name in names})
            command(**options, placement=placement)

        # Typer reads the parameters from the signature and their types from the annotations: both made here.
        with_placement.__signature__ = own.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
        with_placement.__annotations__ = {p.name: p.annotation for p in [*kept, *added]} | {"return": None}
        return with_placement

    return decorate


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
PromptOpt = Annotated[
    str,
    typer.Option(
        "--prompt",
        "-p",
        help=r"The text to run; \n and \t are a newline and a tab, \\ a backslash. - reads it from stdin (UTF-8).",
    ),
]
AblateOpt = Annotated[
    list[str] | None, typer.Option("--ablate", help=syntax("Zero a feature: LAYER:FEATURE[@POS]. Repeatable."))
]
SteerOpt = Annotated[
    list[str] | None,
    typer.Option("--steer", help=syntax("Add STRENGTH x the feature's decoder row: LAYER:FEATURE:STRENGTH[@POS].")),
]
ClampOpt = Annotated[
    list[str] | None, typer.Option("--clamp", help=syntax("Set a feature to VALUE: LAYER:FEATURE:VALUE[@POS]."))
]
HeadOpt = Annotated[
    list[str] | None, typer.Option("--ablate-head", help=syntax("Zero an attention head's output: LAYER.HEAD[@POS]."))
]


def fail(message: str, code: ExitCode) -> typer.Exit:
    """One line on stderr; the message names files and values from outside, so it is shown, not obeyed."""
    typer.echo(f"lenstop: error: {printable(message)}", err=True)
    return typer.Exit(int(code))


@contextmanager
def user_errors() -> Iterator[None]:
    """Every failure becomes one line on stderr and an exit code; no traceback unless LENSTOP_DEBUG is set."""
    try:
        yield
    except LenstopError as err:
        if isinstance(err, LengthMismatchError):  # the one line, then why: the two tokenisations side by side
            typer.echo(f"lenstop: error: {printable(str(err))}", err=True)
            for line in err.alignment():
                typer.echo(line.rstrip(), err=True)
            raise typer.Exit(int(err.code)) from None
        raise fail(str(err), err.code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", ExitCode.INTERRUPTED) from None
    except BrokenPipeError as err:
        if not _stdout_closed():  # some other pipe or socket: a failure like any other
            raise fail(describe(err), ExitCode.FAILED) from None
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # `lenstop ... | head`: nobody to tell
        raise typer.Exit(0) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as err:  # the edge of the program: anything else is one line too
        if os.environ.get("LENSTOP_DEBUG"):
            raise
        raise fail(f"{describe(err)} (set LENSTOP_DEBUG=1 for the traceback)", ExitCode.FAILED) from None


def _stdout_closed() -> bool:
    """Whether whoever read our stdout has gone (poll reports an error on a pipe whose reader closed)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _fd, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll here, or stdout is not a file
        return False


def progress_line(enabled: bool) -> Callable[[str], None] | None:
    """Loading steps on stderr, only for a person watching a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None

    def say(step: str) -> None:
        sys.stderr.write(f"\r\033[K{printable(step)}…")
        sys.stderr.flush()
        if step == "ready":
            sys.stderr.write("\r\033[K")

    return say


def engine_spec(
    *,
    model: str = ENGINE_DEFAULTS.model,
    sae: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    placement: Placement,
) -> EngineSpec:
    """The engine a command's options name (`ModelArg`, `SaeOpt`, `LabelsOpt` and its `placement`); a command
    without some of them gets the defaults."""
    p = placement
    return EngineSpec(model, tuple(sae or ()), p.device, p.dtype, p.n_devices, p.device_map, tuple(labels or ()))


def load_engine(spec: EngineSpec) -> EngineProtocol:
    """The engine `spec` names, loaded as the app loads it, with progress on a terminal."""
    return spec.load(progress_line(True))


def print_json(doc: object) -> None:
    """One JSON document on stdout, as lenstop writes every one (`json_text`): nothing a terminal would obey."""
    sys.stdout.write(json_text(doc))
