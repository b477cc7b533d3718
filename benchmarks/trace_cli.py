"""`lenstop trace ... --json` as the benchmarks time it: the command itself, in this process (typer's
CliRunner), with the prompt on stdin (`-p -`, read as it is) and the engine already loaded, so that the
time is the command's work (parse, analyse, JSON on stdout) and not the load, which start.py and
bench.py time on their own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock


@contextmanager
def trace_command(engine: Any, model: str, prompt: str, *options: str) -> Iterator[Callable[[], str]]:
    """A step that runs `lenstop trace MODEL -p - --json OPTIONS` on `engine` and returns its stdout;
    it checks once that the command read the same tokens as `engine.tokenize(prompt)`."""
    import json

    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    runner = CliRunner()
    args = ["trace", model, "-p", "-", "--json", *options]
    typed = prompt + "\n"  # `-p -` drops one trailing newline, as the one `echo` adds

    def run() -> str:
        result = runner.invoke(app, args, input=typed)
        if result.exit_code != 0:
            raise RuntimeError(f"lenstop {' '.join(args)}: {result.stderr.strip() or result.exception!r}")
        return result.stdout

    with mock.patch("lenstop.commands.cli.load_engine", lambda spec: engine):
        n = len(json.loads(run())["tokens"])
        if n != engine.tokenize(prompt).shape[-1]:
            raise RuntimeError(f"lenstop trace read {n} tokens of a {engine.tokenize(prompt).shape[-1]}-token prompt")
        yield run
