"""Bad inputs tried on purpose: each gets one line naming what was wrong and what to do, an
exit code of its own (never the generic 1), and no traceback; and no file can run code."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.errors import ExitCode

PROMPT = "def add(first, second):"


def _one_line(result, code: ExitCode, *words: str) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenstop: error:"), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _sae_copy(resid_saes: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(resid_saes / "L1", tmp_path / "L1"))


def _truncate(sae: Path) -> None:
    weights = sae / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


def _disagree(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["d_sae"] += 8
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _lacks_d_in(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    del cfg["d_in"]
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _nan(sae: Path) -> None:
    weights = load_file(sae / "sae_weights.safetensors")
    weights["W_dec"][3, 0] = float("nan")
    save_file(weights, sae / "sae_weights.safetensors")


def _cfg_not_json(sae: Path) -> None:
    (sae / "cfg.json").write_text('{"d_in": 32,')


def test_a_dictionary_without_its_weights_is_not_found(tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    sae = _sae_copy(resid_saes, tmp_path)
    (sae / "sae_weights.safetensors").unlink()
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--sae", str(sae), "--device", "cpu"])
    _one_line(result, ExitCode.NOT_FOUND, str(sae), "sae_weights.safetensors is missing")


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (_truncate, ("sae_weights.safetensors is truncated or corrupt",)),
        (_disagree, ("do not have the shapes its cfg.json declares",)),
        (_lacks_d_in, ("d_in",)),
        (_nan, ("W_dec holds 1 NaN or infinite values",)),
        (_cfg_not_json, ("cfg.json",)),
    ],
)
def test_a_spoilt_dictionary_is_named_with_what_is_wrong(
    tiny_model: Path, resid_saes: Path, tmp_path: Path, spoil: Callable[[Path], None], words: tuple[str, ...]
) -> None:
    sae = _sae_copy(resid_saes, tmp_path)
    spoil(sae)
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--sae", str(sae), "--device", "cpu"])
    line = _one_line(result, ExitCode.BAD_FILE, str(sae), *words)
    assert len(line) < 400


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe[{\x00", ("not UTF-8 text",)),
        (b'[{"index": 1, "description": "x"', ("not valid JSON",)),
        (b'{"index": 1}', ("expected a list",)),
        (b'[{"index": "one", "description": "x"}]', ("'one' is not a feature number",)),
    ],
)
def test_a_bad_labels_file_is_one_line(tiny_model: Path, resid_saes: Path, tmp_path: Path, content, words) -> None:
    labels = tmp_path / "labels.json"
    labels.write_bytes(content)
    args = ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", PROMPT, "--labels", f"1={labels}", "--json"]
    _one_line(CliRunner().invoke(app, args), ExitCode.BAD_FILE, "--labels", *words)


@pytest.mark.parametrize(
    ("prompt", "code", "words"),
    [
        ("def f(x):\ud800", ExitCode.USAGE, ("'\\ud800' at character 9", "surrogate")),
        ("", ExitCode.USAGE, ("empty",)),
    ],
)
def test_a_prompt_that_is_not_text_is_one_line(tiny_model: Path, resid_saes: Path, prompt, code, words) -> None:
    result = CliRunner().invoke(app, ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", prompt, "--json"])
    _one_line(result, code, *words)


def test_every_unicode_plane_and_control_characters_are_analysed(engine) -> None:
    """Not errors: text from any plane, tabs, escapes and NULs are text a byte-level tokenizer takes."""
    prompt = "a\x00b\x1b[31mc\td é 中 \U0001f600 \U00020000 \U000e0001 \U0010fffd"
    analysis = engine.analyse(prompt)
    assert "".join(analysis.tokens).endswith("\U0010fffd") or len(analysis.tokens) > len(prompt) // 2
    assert torch.isfinite(torch.from_numpy(analysis.predictions.probs.copy())).all()


class _Payload:
    """Unpickling this would create `marker`: the file that proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_in_place_of_weights_runs_no_code(tiny_model: Path, resid_saes: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    sae = _sae_copy(resid_saes, tmp_path)
    (sae / "sae_weights.safetensors").write_bytes(pickle.dumps({"W_enc": _Payload(marker)}))
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--sae", str(sae), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, "truncated or corrupt")
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    torch.save({"transformer.wte.weight": _Payload(marker)}, model / "pytorch_model.bin")
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, "pickle that would run code", "safetensors")
    assert not marker.exists(), "a file ran code while loading"


def test_a_truncated_model_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (weights,) = model.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, "truncated or corrupt")
