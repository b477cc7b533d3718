"""The CLI as a script uses it: exit codes, one-line errors on stderr, clean JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lenstop.commands.cli import app, route
from lenstop.models.engine import Engine
from lenstop.models.errors import ExitCode
from lenstop.models.interventions import FeatureAblation, FeatureSteer, HeadKnockout

PROMPT = "def add(first, second):"
LENSTOP = Path(sys.executable).parent / "lenstop"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _run(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


def test_trace_json_matches_the_engine(runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    result = _run(
        runner,
        "trace",
        str(tiny_model),
        "--sae",
        str(resid_saes),
        "--prompt",
        PROMPT,
        "--top-k",
        "3",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    analysis = engine.analyse(PROMPT, top_k=3)
    assert doc["tokens"] == list(analysis.tokens)
    assert doc["token_ids"] == list(analysis.token_ids)
    assert [layer["layer"] for layer in doc["layers"]] == [0, 1]
    assert [layer["hook"] for layer in doc["layers"]] == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    for layer, lf in zip(doc["layers"], analysis.layers, strict=True):
        assert len(layer["features"]) == len(analysis.tokens)
        for pos, feats in enumerate(layer["features"]):
            assert [f["id"] for f in feats] == [f.id for f in lf.features(pos)]
            np.testing.assert_allclose([f["act"] for f in feats], [f.act for f in lf.features(pos)], atol=1e-5)
    assert len(doc["predictions"]) == len(analysis.tokens)
    assert doc["predictions"][-1][0]["id"] == int(analysis.predictions.ids[-1, 0])
    assert doc["interventions"] == [] and "clean_predictions" not in doc


def test_trace_json_with_interventions(runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    result = _run(
        runner,
        "trace",
        str(tiny_model),
        "--sae",
        str(resid_saes),
        "-p",
        PROMPT,
        "--json",
        "--device",
        "cpu",
        "--ablate",
        "1:4",
        "--steer",
        "0:2:5.5@-1",
        "--ablate-head",
        "1.0",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    interventions = [FeatureAblation(1, 4), FeatureSteer(0, 2, 5.5, -1), HeadKnockout(1, 0)]
    analysis = engine.analyse(PROMPT, interventions, n_predictions=5)
    assert [i["kind"] for i in doc["interventions"]] == ["ablate", "steer", "knockout"]
    assert doc["interventions"][1] == {"kind": "steer", "layer": 0, "feature": 2, "strength": 5.5, "position": -1}
    got = [p["prob"] for p in doc["predictions"][-1]]
    np.testing.assert_allclose(got, analysis.predictions.probs[-1], atol=1e-5)
    clean = [p["prob"] for p in doc["clean_predictions"][-1]]
    np.testing.assert_allclose(clean, analysis.clean_predictions.probs[-1], atol=1e-5)
    assert got != clean


def test_trace_human_output_shows_layers_and_predictions(runner: CliRunner, tiny_model: Path, resid_saes: Path) -> None:
    result = _run(runner, "trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "layer 0 · blocks.0.hook_resid_pre" in result.stdout
    assert "layer 1 · blocks.1.hook_resid_pre" in result.stdout
    assert "next token" in result.stdout and "logit lens" in result.stdout


def test_trace_json_has_the_lens_only_with_lens(runner: CliRunner) -> None:
    """Every layer's logit lens at every position is read for --lens alone; then each layer's top token at the
    last position is the engine's own logit lens there."""
    plain = _run(runner, "trace", "-p", PROMPT, "--json", "--device", "cpu")
    assert plain.exit_code == 0, plain.stderr
    assert json.loads(plain.stdout)["logit_lens"] == []
    result = _run(runner, "trace", "-p", PROMPT, "--json", "--lens", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    demo = Engine.load("demo", device="cpu")
    expected = demo.logit_lens(PROMPT, -1)
    assert [entry["layer"] for entry in doc["logit_lens"]] == list(range(demo.n_layers))
    for entry, top in zip(doc["logit_lens"], expected.layers, strict=True):
        last = entry["top"][-1]
        assert (last["token"], last["id"]) == (top[0].token, top[0].id)
        assert last["prob"] == pytest.approx(top[0].prob, abs=1e-5)


def test_generate_json_clean_and_intervened(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine
) -> None:
    result = _run(
        runner,
        "generate",
        str(tiny_model),
        "--sae",
        str(resid_saes),
        "-p",
        PROMPT,
        "-n",
        "6",
        "--steer",
        "1:3:15",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    expected = engine.generate(PROMPT, [FeatureSteer(1, 3, 15.0)], max_new_tokens=6)
    assert doc["clean"]["token_ids"] == list(expected.clean.token_ids)
    assert doc["intervened"]["token_ids"] == list(expected.intervened.token_ids)
    assert doc["clean"]["text"] == expected.clean.text


def test_info_json(runner: CliRunner, tiny_model: Path, resid_saes: Path) -> None:
    result = _run(runner, "info", str(tiny_model), "--sae", str(resid_saes), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["n_layers"], doc["d_model"], doc["n_heads"], doc["n_ctx"]) == (2, 32, 4, 64)
    assert doc["device"] == "cpu" and doc["dtype"] == "float32" and doc["memory_bytes"] > 0
    assert [d["hook"] for d in doc["dictionaries"]] == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    assert all(d["d_sae"] == 64 and d["architecture"] == "standard" for d in doc["dictionaries"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--ablate", "nonsense"], ExitCode.USAGE, "bad --ablate"),
        (["--ablate", "7:1"], ExitCode.USAGE, "no dictionary at layer 7"),
        (["--ablate-head", "0.9"], ExitCode.USAGE, "head 0.9 does not exist"),
        (["--device", "quantum"], ExitCode.USAGE, "--device"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, args, code, message
) -> None:
    result = _run(runner, "trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--json", *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenstop: error:") and message in lines[0]


def test_missing_and_incompatible_exit_codes(runner: CliRunner, tmp_path: Path, tiny_model: Path) -> None:
    from helpers import build_sae

    missing = _run(runner, "info", str(tmp_path / "nowhere" / "model"), "--json")
    assert missing.exit_code == ExitCode.NOT_FOUND and "no model directory at" in missing.stderr
    unknown = _run(runner, "info", "someone/no-such-model", "--json")
    assert unknown.exit_code == ExitCode.NOT_FOUND and "not in the local Hugging Face cache" in unknown.stderr
    build_sae(tmp_path / "wide", hook="blocks.0.hook_resid_pre", d_in=40)
    wide = _run(runner, "info", str(tiny_model), "--sae", str(tmp_path / "wide"), "--device", "cpu")
    assert wide.exit_code == ExitCode.INCOMPATIBLE and "d_in is 40" in wide.stderr


def test_routing_makes_inspect_the_default() -> None:
    assert route([]) == ["inspect"]
    assert route(["gpt2", "--sae", "x"]) == ["inspect", "gpt2", "--sae", "x"]
    assert route(["trace", "gpt2"]) == ["trace", "gpt2"]
    assert route(["--version"]) == ["--version"]
    assert route(["-h"]) == ["-h"]
    assert route(["--device", "cpu"]) == ["inspect", "--device", "cpu"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["generate", "--seed", str(2**70)], ExitCode.USAGE, f"--seed {2**70}: a seed is a whole number"),
        (["info", "--device-map", "transformer.h.0=cuda:99"], ExitCode.USAGE, "--device-map transformer.h.0=cuda:99"),
        (["info", "--device-map", '{"transformer.h.0": 7}'], ExitCode.USAGE, "--device-map transformer.h.0=7"),
        (["info", "--device-map", "transformer.h.0=disk"], ExitCode.USAGE, "offloading to disk or meta"),
    ],
)
def test_options_out_of_range_are_one_line_usage_errors(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, args: list[str], code: ExitCode, message: str
) -> None:
    from helpers import one_line

    command, *rest = args
    extra = ["-p", PROMPT] if command == "generate" else []
    result = _run(runner, command, str(tiny_model), "--sae", str(resid_saes), *extra, *rest, "--json")
    one_line(result, code, message)
    assert result.stdout == ""


def test_json_never_carries_nan(runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    """A NaN from a file (here a card's frequency) made `"frequency": NaN`, which JSON parsers reject."""
    import gzip
    import shutil

    from helpers import one_line

    sae = Path(shutil.copytree(resid_saes / "L1", tmp_path / "L1"))
    (sae / "feature_cards.json.gz").write_bytes(
        gzip.compress(b'{"features": [{"id": 3, "label": "x", "frequency": NaN, "max_act": Infinity}]}')
    )
    result = _run(runner, "card", "1:3", str(tiny_model), "--sae", str(sae), "--json", "--device", "cpu")
    one_line(result, ExitCode.NUMERIC, "NaN or infinite numbers, which JSON cannot carry")
    assert result.stdout == ""


def test_the_app_refuses_to_start_without_a_terminal(runner: CliRunner) -> None:
    """CliRunner's stdin and stdout are not terminals: one line pointing to the commands, exit 2, no load."""
    result = _run(runner, "inspect", "demo", "--device", "cpu")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.count("\n") == 1 and "needs a terminal" in result.stderr and "--json" in result.stderr


def test_a_session_named_with_a_tilde_is_the_file_in_home(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--session=~/s.json` reaches lenstop unexpanded (a shell expands ~ only as a word of its own): the app
    opened a fresh session, and w then replaced the real file without asking."""
    from lenstop.commands import cli
    from lenstop.tui.session import Session

    monkeypatch.setenv("HOME", str(tmp_path))
    Session(model="demo", prompt="def saved(): pass").save(tmp_path / "s.json")
    opened = []
    monkeypatch.setattr(cli, "need_a_terminal", lambda: None)
    monkeypatch.setattr(cli, "run_app", lambda app: opened.append(app) or 0)
    result = _run(runner, "inspect", "--session=~/s.json")
    assert result.exit_code == 0, result.output
    (app,) = opened
    assert app.inspector.prompt == "def saved(): pass" and app.inspector.session_path == tmp_path / "s.json"


def test_lenstop_with_its_output_in_a_pipe_exits_at_once() -> None:
    """It sat at 'importing torch…' for minutes with stdout piped, and then waited for keys forever."""
    done = subprocess.run([str(LENSTOP), "--device", "cpu"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert done.returncode == ExitCode.USAGE
    assert done.stdout == b"" and b"lenstop: error: the inspector needs a terminal" in done.stderr


def test_generate_prints_nothing_on_stderr() -> None:
    """transformers' FutureWarning that `past_key_values` is now `cache` came out on every generation; run as a
    user runs it, in a process of its own (pytest would catch the warning itself)."""
    done = subprocess.run(
        [str(LENSTOP), "generate", "demo", "-p", PROMPT, "-n", "3", "--device", "cpu", "--json"],
        capture_output=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == "" and json.loads(done.stdout)["clean"]["text"]


def test_generate_from_python_prints_nothing_on_stderr() -> None:
    """Later transformers releases log the rename once, through their logger, instead of warning: it came out
    of `Engine.generate` in a notebook although the CLI, which quiets transformers' logging, kept silent."""
    script = (
        "from lenstop.models import Engine\nEngine.load('demo', device='cpu').generate('def f(x):', max_new_tokens=3)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == ""


def test_every_options_help_is_shown_as_written() -> None:
    """Typer renders help as Rich markup: a syntax such as `LAYER:FEATURE[@POS]` lost its `[@POS]` as a
    style until `syntax()` escaped it. Every option's help of every command must appear whole."""
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"}).output
        for param in command.params:
            if param.help:
                written = param.help.replace("\\[", "[")  # the text the escapes stand for
                assert " ".join(written.split()) in " ".join(shown.split()), (name, param.name)
