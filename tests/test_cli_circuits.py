"""`lenstop attribute`, `patch`, `heads` and `circuit` as scripts use them: JSON equal to the engine's
own results, the documented fields, and one-line errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.circuits.spec import Metric, Node, parse_node
from lenstop.models.engine import Engine
from lenstop.models.errors import ExitCode, UsageError

PROMPT = "def add(first, second):\n    return first + second"
CORRUPT = "def sub(other, second):\n    return first - second"
ESCAPED, CORRUPT_ESCAPED = PROMPT.replace("\n", "\\n"), CORRUPT.replace("\n", "\\n")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _json(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(app, [*args, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_attribute_json_is_the_engines_attribution(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine
) -> None:
    doc = _json(
        runner, "attribute", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED, "--top", "7", "--wrong", "("
    )
    found = engine.attribute(PROMPT, Metric(wrong="("), top=7)
    assert {"position", "target", "wrong", "metric", "nodes"} <= set(doc)
    assert (doc["position"], doc["target"], doc["wrong"]) == (found.metric.position, found.metric.target, "(")
    assert doc["metric"] == pytest.approx(found.metric.clean, abs=1e-5)
    assert len(doc["nodes"]) == 7
    for node, expected in zip(doc["nodes"], found.nodes, strict=True):
        assert set(node) >= {"kind", "layer", "position", "feature", "head", "attribution", "label"}
        assert Node(node["kind"], node["layer"], node["position"], node["feature"], node["head"]) == expected.node
        assert node["attribution"] == pytest.approx(expected.attribution, abs=1e-5)


def test_attribute_follows_a_node_and_measures_real_effects(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine
) -> None:
    base = ["attribute", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED]
    doc = _json(runner, *base, "--kinds", "head", "--top", "4", "--real", "4", "--direct")
    assert [n["kind"] for n in doc["nodes"]] == ["head"] * 4 and all(n["real"] is not None for n in doc["nodes"])
    heads = [Node("head", n["layer"], n["position"], head=n["head"]) for n in doc["nodes"]]
    real = engine.effects(PROMPT, Metric(), heads)
    assert [n["real"] for n in doc["nodes"]] == pytest.approx(list(real), abs=1e-5)
    assert doc["direct"]["total"] == pytest.approx(doc["metric"], abs=1e-5)
    first = heads[0]
    spec = f"{first.layer}.{first.head}@{first.position}"
    followed = _json(runner, *base, "--follow", spec, "--top", "5")
    assert followed["target_node"] == first.to_json()
    expected = engine.attribute(PROMPT, path=(first,), top=5)
    assert [n["attribution"] for n in followed["nodes"]] == pytest.approx(
        [s.attribution for s in expected.nodes], abs=1e-5
    )


def test_patch_json_fields(runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine) -> None:
    doc = _json(
        runner,
        "patch",
        str(tiny_model),
        "--sae",
        str(resid_saes),
        "--clean",
        ESCAPED,
        "--corrupt",
        CORRUPT_ESCAPED,
        "--wrong",
        "(",
        "--direction",
        "corrupt->clean",
        "--features",
        "4",
    )
    found = engine.patch(PROMPT, CORRUPT, Metric(wrong="("), direction="corrupt->clean", features=4)
    assert doc["direction"] == "corrupt->clean"
    assert (doc["clean_metric"], doc["corrupt_metric"]) == pytest.approx(
        (found.clean_metric, found.corrupt_metric), abs=1e-5
    )
    assert len(doc["resid"]) == found.resid.size and set(doc["resid"][0]) >= {"layer", "position", "restored"}
    cell = doc["resid"][5]
    assert cell["restored"] == pytest.approx(float(found.resid[cell["layer"], cell["position"]]), abs=1e-5)
    assert len(doc["heads"]) == found.heads.size and set(doc["heads"][0]) >= {"layer", "head", "restored"}
    assert len(doc["features"]) == 4
    assert doc["measure"] == "damage"  # in this direction a cell is the damage done; the key stays `restored`
    runs = {"clean_act": engine.analyse(PROMPT), "corrupt_act": engine.analyse(CORRUPT)}
    compared = 0
    for feature in doc["features"]:  # each feature's activation on each run, not 0 where only one has it
        for key, run in runs.items():
            across = run.layer(feature["layer"]).activation_of(feature["feature"])
            if across is not None:
                assert feature[key] == pytest.approx(float(across[feature["position"]]), abs=1e-4)
                compared += 1
    assert compared >= 4 and any(f["clean_act"] != f["corrupt_act"] for f in doc["features"])


@pytest.mark.parametrize(("direction", "measure"), [("clean->corrupt", "restored"), ("corrupt->clean", "damage")])
def test_patch_tables_name_the_column_for_the_direction(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, direction: str, measure: str
) -> None:
    """The column said 'restored' in both directions; corrupt->clean measures the damage done."""
    args = ["patch", str(tiny_model), "--sae", str(resid_saes), "--clean", ESCAPED, "--corrupt", CORRUPT_ESCAPED]
    result = runner.invoke(app, [*args, "--direction", direction, "--features", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.lstrip().startswith(("head ", "feature "))]
    assert len(headers) == 2 and all(measure in h for h in headers), headers
    assert "clean act" in headers[1] and "corrupt act" in headers[1]
    assert direction == "clean->corrupt" or not any("restored" in h for h in headers)


def test_attribution_against_a_corrupted_prompt_gives_each_features_activation_on_both(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, engine: Engine
) -> None:
    """A feature active on the corrupted run alone showed act 0: its attribution is the effect of its absence."""
    doc = _json(
        runner,
        "attribute",
        str(tiny_model),
        "--sae",
        str(resid_saes),
        "-p",
        ESCAPED,
        "--corrupt",
        CORRUPT_ESCAPED,
        "--top",
        "200",
    )
    features = [n for n in doc["nodes"] if n["kind"] == "feature"]
    assert features and all("corrupt_activation" in n for n in features)
    assert any(n["activation"] == 0 and n["corrupt_activation"] > 0 for n in features)
    plain = _json(runner, "attribute", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED, "--top", "20")
    assert not any("corrupt_activation" in n for n in plain["nodes"])  # no baseline run: no such field


def test_heads_json(runner: CliRunner, tiny_model: Path, engine: Engine) -> None:
    doc = json.loads(runner.invoke(app, ["heads", str(tiny_model), "--json", "--device", "cpu"]).stdout)
    roles = engine.head_roles()
    assert len(doc) == engine.n_layers * engine.n_heads
    assert set(doc[0]) == {"layer", "head", "previous_token", "duplicate_token", "induction"}
    assert doc[3]["previous_token"] == pytest.approx(roles.layers[0][3].previous, abs=1e-5)


def test_circuit_json_and_file(runner: CliRunner, tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    out = tmp_path / "graph.json"
    doc = _json(runner, "circuit", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED, "--out", str(out))
    assert json.loads(out.read_text()) == doc
    assert set(doc) == {"metadata", "qParams", "nodes", "links"} and doc["metadata"]["prompt"] == PROMPT


def test_prompts_that_do_not_line_up_say_why(runner: CliRunner, tiny_model: Path, resid_saes: Path) -> None:
    result = runner.invoke(
        app,
        ["patch", str(tiny_model), "--sae", str(resid_saes), "--clean", ESCAPED, "--corrupt", "x", "--device", "cpu"],
    )
    assert result.exit_code == ExitCode.INCOMPATIBLE and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("lenstop: error: the clean prompt is") and lines[1].startswith("clean ")
    assert lines[2].startswith("corrupt ") and "^" in lines[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--follow", "nonsense"], "bad node"),
        (["--kinds", "feature,neuron"], "--kinds"),
        (["--target", " second"], "not one"),
        (["--position", "99"], "outside the prompt"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(
        app, ["attribute", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED, *args, "--json"]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_node_syntax() -> None:
    assert parse_node("1:446@23") == Node("feature", 1, 23, feature=446)
    assert parse_node("0.5") == Node("head", 0, None, head=5)
    assert parse_node("mlp:2@3") == Node("mlp", 2, 3)
    assert parse_node("emb@4") == Node("embed", None, 4)
    with pytest.raises(UsageError):
        parse_node("err:1")  # an error node is at one position


@pytest.mark.parametrize("command", ["attribute", "circuit"])
def test_steps_beyond_the_bound_are_one_line_before_the_model_loads(
    runner: CliRunner, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import one_line

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before --steps was checked")

    monkeypatch.setattr("lenstop.commands.circuits.load_engine", no_engine)
    result = runner.invoke(app, [command, "demo", "-p", "def f", "--steps", "20000"])
    one_line(result, ExitCode.USAGE, "--steps 20000: integrated gradients takes 1 to 1,024 steps")


def test_real_with_follow_is_one_line_before_the_model_loads(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--real measures effects on the metric, which --follow replaces: both at once was said after the load."""
    from helpers import one_line

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before --real and --follow were checked")

    monkeypatch.setattr("lenstop.commands.circuits.load_engine", no_engine)
    result = runner.invoke(app, ["attribute", "demo", "-p", "def f", "--real", "2", "--follow", "1:3@0"])
    one_line(result, ExitCode.USAGE, "--real measures effects on the metric; leave out --follow")


def test_out_of_memory_in_integrated_gradients_is_exit_5(
    runner: CliRunner, tiny_model: Path, resid_saes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU allocator's own words (not "out of memory") were exit 1 with the raw line."""
    from lenstop.models.circuits import attribution

    from helpers import one_line

    def no_room(*args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 6442450944 bytes.")

    monkeypatch.setattr(attribution, "run_rows", no_room)
    result = runner.invoke(
        app, ["attribute", str(tiny_model), "--sae", str(resid_saes), "-p", ESCAPED, "--steps", "64", "--json"]
    )
    one_line(result, ExitCode.OUT_OF_MEMORY, "out of memory", "-token prompt (tried to allocate 6.00 GiB)")
