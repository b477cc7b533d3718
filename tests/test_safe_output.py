"""Nothing from a file reaches the terminal raw, in the CLI: labels, tokens, prompts, model and
dictionary names, cached values and error messages are shown, never obeyed, and never read as
markup. Each path that prints data is tried with the attacks found against lenstop and with
random strings from every Unicode plane (tests/hostile.py)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.text import Text
from typer.testing import CliRunner

from lenstop.commands import common, render
from lenstop.commands.cli import app
from lenstop.models.circuits.spec import Metric
from lenstop.models.errors import ExitCode, LengthMismatchError, NotFoundError
from lenstop.models.safe_text import printable

from hostile import ATTACKS, CLIPBOARD, HostileEngine, hostile_text, nets_must_not_fire, unsafe_in

PROMPT = "def add(first, second):\n    return first + second"
CORRUPT = PROMPT.replace("+", "-")  # one token changed: the same length for every tokenizer here


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The CLI's console, writing to a string as it would to a 256-colour terminal, with its last net made to
    fail: the renderers must sanitise what they print themselves."""
    nets_must_not_fire(monkeypatch)
    out = io.StringIO()
    monkeypatch.setattr(render, "console", render.SafeConsole(file=out, force_terminal=True, color_system="256"))
    monkeypatch.setattr(render.console, "width", 120)
    yield out


def every_rendering(engine: HostileEngine) -> list[Callable[[], None]]:
    """Each of the CLI's renderings, fed the hostile engine's results."""
    steered = engine.analyse(PROMPT, [], top_k=5)
    return [
        lambda: render.render_trace(steered),
        lambda: render.render_generation(engine.generate(PROMPT)),
        lambda: render.render_info(engine.info()),
        lambda: render.render_card(1, engine.card(1, 7)),  # type: ignore[arg-type]
        lambda: render.render_attribution(engine.attribute(PROMPT, Metric(), top=12)),
        lambda: render.render_direct(engine.direct(PROMPT, Metric())),
        lambda: render.render_patching(engine.patch(PROMPT, CORRUPT, Metric())),
        lambda: render.render_heads(engine.head_roles()),
        lambda: render.render_circuit(engine.circuit(PROMPT, Metric())),
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(hostile_text, min_size=1, max_size=6))
def test_every_rendering_sends_only_text_and_colours(terminal: io.StringIO, words: list[str]) -> None:
    for draw in every_rendering(HostileEngine(words=words)):
        terminal.seek(0)
        terminal.truncate()
        draw()
        assert unsafe_in(terminal.getvalue()) == [], draw


def test_markup_in_data_is_shown_as_it_is(terminal: io.StringIO) -> None:
    """`[/]` used to end the output with a MarkupError halfway; `[link=...]` made a hyperlink."""
    engine = HostileEngine(words=["[/]", "[link=file:///etc/passwd]x[/link]", "d_[blink red]X"])
    render.render_attribution(engine.attribute(PROMPT, Metric(), top=12))
    render.render_patching(engine.patch(PROMPT, CORRUPT, Metric()))
    shown = Text.from_ansi(terminal.getvalue()).plain
    for word in engine.words:
        assert word in shown
    assert "\x1b]8;" not in terminal.getvalue()  # no hyperlink was made
    assert "strongest heads" in shown and "attribution patching agrees" in shown  # the output ran to its end


def test_a_control_character_costs_the_cells_it_is_shown_in(terminal: io.StringIO) -> None:
    """The trace table keeps its columns when a token holds an escape sequence: Rich measured ESC as
    zero cells wide, the terminal then drew what followed somewhere else."""
    engine = HostileEngine(words=[CLIPBOARD])
    render.render_trace(engine.analyse(PROMPT, top_k=3))
    lines = [line for line in Text.from_ansi(terminal.getvalue()).plain.splitlines() if "│" in line]
    assert len(lines) > 5
    columns = {tuple(i for i, c in enumerate(line) if c == "│") for line in lines}
    assert len(columns) == 1, columns


def test_text_built_elsewhere_is_caught_by_the_console_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last net: Rich text that a renderer forgot to sanitise, and a plain string, are drawn safely."""
    terminal = io.StringIO()
    monkeypatch.setattr(render, "console", render.SafeConsole(file=terminal, force_terminal=True, color_system="256"))
    render.console.print(Text("label " + CLIPBOARD, style="bold"))
    render.console.print("[/] " + CLIPBOARD)
    output = terminal.getvalue()
    assert unsafe_in(output) == []
    assert "␛]52;c;" in Text.from_ansi(output).plain and "[/]" in output


FIXTURE_READ_EACH_TIME = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # capsys: read out


@FIXTURE_READ_EACH_TIME
@given(message=hostile_text)
def test_an_error_line_is_one_line_of_text(message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit), common.user_errors():
        raise NotFoundError(f"no model directory at {message}")
    err = capsys.readouterr().err
    assert unsafe_in(err) == [] and err.count("\n") == 1


def test_the_two_tokenisations_of_a_length_mismatch_are_shown_safely(capsys: pytest.CaptureFixture[str]) -> None:
    error = LengthMismatchError(
        "the clean prompt is 3 tokens and the corrupted one 2", ["a", CLIPBOARD, "c"], ["a", "b"]
    )
    with pytest.raises(typer.Exit), common.user_errors():
        raise error
    err = capsys.readouterr().err
    assert unsafe_in(err) == [] and "␛]52" in err and err.count("\n") == 4


def test_progress_names_the_model_safely(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    say = common.progress_line(True)
    assert say is not None
    say(f"loading model /models/{CLIPBOARD}")
    err = capsys.readouterr().err
    assert unsafe_in(err.replace("\r\x1b[K", "")) == [] and "␛]52" in err


@FIXTURE_READ_EACH_TIME
@given(words=st.lists(hostile_text, min_size=1, max_size=4))
def test_json_output_is_the_data_and_nothing_a_terminal_obeys(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    analysis = HostileEngine(words=words).analyse(PROMPT, top_k=3)
    common.print_json(analysis.to_json())
    out = capsys.readouterr().out
    assert unsafe_in(out) == [] and "\x1b" not in out
    assert json.loads(out) == json.loads(json.dumps(analysis.to_json()))


# ---------------------------------------------------------------- the commands, end to end
@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI as a script runs it (not a terminal: no styling at all), on a console wide enough that
    nothing the tests look for is wrapped."""
    monkeypatch.setattr(render.console, "width", 240)
    return CliRunner()


def _labels(tmp_path: Path, n: int = 64) -> Path:
    """A Neuronpedia-style export labelling every feature of a dictionary with an attack."""
    path = tmp_path / "labels.json"
    path.write_text(json.dumps([{"index": i, "description": ATTACKS[i % len(ATTACKS)]} for i in range(n)]))
    return path


def _clean(result) -> str:
    """The command's whole output; it must hold no escape at all, since CliRunner is not a terminal."""
    output = result.stdout + result.stderr
    assert "\x1b" not in output and unsafe_in(output) == [], output
    return output


@pytest.mark.parametrize(
    "command",
    [
        ["trace", "-p", PROMPT, "--top-k", "8"],
        ["card", "1:3"],
        ["attribute", "-p", PROMPT, "--top", "40"],
        ["patch", "--clean", PROMPT, "--corrupt", CORRUPT, "--features", "20"],
    ],
    ids=lambda c: c[0],
)
def test_labels_from_a_file_are_shown_not_obeyed(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path, command: list[str]
) -> None:
    labels = _labels(tmp_path)
    model = [str(tiny_model), "--sae", str(resid_saes), "--labels", f"1={labels}", "--device", "cpu"]
    result = runner.invoke(app, [*command, *model])
    assert result.exit_code == 0, result.stderr
    output = _clean(result)
    assert any(printable(attack) in output for attack in ATTACKS)  # the labels were printed, visibly


def test_labels_in_json_output_are_the_labels_and_nothing_a_terminal_obeys(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path
) -> None:
    labels = _labels(tmp_path)
    model = [str(tiny_model), "--sae", str(resid_saes), "--labels", f"1={labels}", "--device", "cpu"]
    result = runner.invoke(app, ["circuit", "-p", PROMPT, "--json", *model])
    assert result.exit_code == 0, result.stderr
    graph = json.loads(_clean(result))
    shown = {node["clerp"] for node in graph["nodes"]}
    assert shown & set(ATTACKS), "the graph's features carry their labels, unchanged"


def test_a_graph_whose_labels_utf8_cannot_hold_is_written_escaped(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path
) -> None:
    """A label with a lone surrogate (a JSON escape in a labels file) made `circuit --out` exit 1."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"index": i, "description": f"half \ud800 {i}"} for i in range(64)]))
    out = tmp_path / "graph.json"
    model = [str(tiny_model), "--sae", str(resid_saes), "--labels", f"1={labels}", "--device", "cpu"]
    result = runner.invoke(app, ["circuit", "-p", PROMPT, "--out", str(out), *model])
    assert result.exit_code == 0, result.stderr
    clerps = {node["clerp"] for node in json.loads(out.read_text(encoding="utf-8"))["nodes"]}
    assert any(c.startswith("half \ud800 ") for c in clerps)


def test_a_dictionarys_own_labels_are_shown_not_obeyed(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path
) -> None:
    """The labels file a downloaded dictionary carries beside its weights (feature_labels.json)."""
    folder = Path(shutil.copytree(resid_saes, tmp_path / "saes"))
    with gzip.open(folder / "L0" / "feature_cards.json.gz", "wt") as fh:
        json.dump({"features": []}, fh)  # as the demo's: the cards, and their labels beside them
    (folder / "L0" / "feature_labels.json").write_text(
        json.dumps({str(i): ATTACKS[i % len(ATTACKS)] for i in range(64)})
    )
    args = ["trace", str(tiny_model), "--sae", str(folder), "-p", PROMPT, "--top-k", "8", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert any(printable(attack) in _clean(result) for attack in ATTACKS)


def test_a_dictionary_folder_name_is_shown_not_obeyed(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "saes"
    shutil.copytree(resid_saes / "L1", folder / "L1\x1b]0;owned\x07[blink red]X")
    result = runner.invoke(app, ["info", str(tiny_model), "--sae", str(folder), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "L1␛]0;owned␇[blink red]X" in _clean(result)


def test_a_model_path_is_shown_not_obeyed_in_an_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / f"gone{CLIPBOARD}[/]")])
    assert result.exit_code == ExitCode.NOT_FOUND
    assert f"gone{CLIPBOARD.replace(chr(27), '␛')}[/]" in _clean(result)


def test_a_prompt_from_stdin_is_shown_not_obeyed(runner: CliRunner, tiny_model: Path, resid_saes: Path) -> None:
    stdin = f"def f():{CLIPBOARD}\x9b2J".encode()
    args = ["generate", str(tiny_model), "--sae", str(resid_saes), "-p", "-", "-n", "3", "--device", "cpu"]
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == 0, result.stderr
    assert "def f():␛]52;c;" in _clean(result)


def test_the_model_name_in_the_head_roles_is_shown_not_obeyed(
    runner: CliRunner, tiny_model: Path, tmp_path: Path
) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "model\x1b]0;owned\x07[/]"))
    result = runner.invoke(app, ["heads", str(model), "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "model␛]0;owned␇[/]" in _clean(result)
