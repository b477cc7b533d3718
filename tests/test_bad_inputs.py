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

from helpers import one_line as _one_line

PROMPT = "def add(first, second):"


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


def _d_sae_a_string(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["d_sae"] = str(cfg["d_sae"])
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _hook_a_number(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = 3
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _flag_a_string(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = "yes"
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _cast(dtype: torch.dtype, name: str = "W_dec") -> Callable[[Path], None]:
    def spoil(sae: Path) -> None:
        weights = load_file(sae / "sae_weights.safetensors")
        weights[name] = weights[name].to(dtype) if dtype != torch.bool else weights[name] > 0
        save_file(weights, sae / "sae_weights.safetensors")

    return spoil


def _k_over_d_sae(sae: Path) -> None:
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["k"] = cfg["d_sae"] + 1
    (sae / "cfg.json").write_text(json.dumps(cfg))


def _cfg_text(text: str) -> Callable[[Path], None]:
    def spoil(sae: Path) -> None:
        (sae / "cfg.json").write_text(text)

    return spoil


def _cfg_huge(sae: Path) -> None:
    with (sae / "cfg.json").open("r+b") as fh:
        fh.truncate(65 * 2**20)  # sparse


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
        (_d_sae_a_string, ('field d_sae is "', "not a positive whole number")),
        (_hook_a_number, ("field metadata.hook_name is 3, not a string",)),
        (_flag_a_string, ('field apply_b_dec_to_input is "yes", not true or false',)),
        (_cast(torch.int8), ("W_dec is I8, not floating point",)),
        (_cast(torch.bool, "b_enc"), ("b_enc is BOOL, not floating point",)),
        (_cast(torch.int64, "W_enc"), ("W_enc is I64, not floating point",)),
        (_k_over_d_sae, ("field k is 65, more than its 64 features (d_sae)",)),
        (_cfg_text("[" * 100_000 + "]" * 100_000), ("its cfg.json is nested too deeply",)),
        (_cfg_text('["d_in", 32]'), ("its cfg.json is not a JSON object",)),
        (_cfg_huge, ("its cfg.json is over 64 MiB",)),
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
        (b'[{"index": "one", "description": "x"}]', ('"one" is not a feature number',)),
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


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('{"model_type": "gpt2",', ("its config.json is not valid JSON",)),
        ('{"model_type": "gpt2", "n_layer": "three"}', ("config.json has a field of the wrong type", "n_layer")),
    ],
)
def test_a_model_config_that_cannot_be_used_is_one_line(tiny_model: Path, tmp_path: Path, config, words) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (model / "config.json").write_text(config)
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, str(model), *words)


def test_a_corrupt_session_file_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    session = tmp_path / "lenstop-session.json"
    session.write_bytes(b'{"version": 1, "prompt": "def f(x):", "interventions": [')
    before = session.read_bytes()
    result = CliRunner().invoke(app, ["inspect", "demo", "--session", str(session), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, "--session", "not valid JSON")
    assert session.read_bytes() == before


def test_a_name_the_hub_does_not_know_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """With network, the hub's answer for an unknown repository (here as transformers words it) is one line."""
    from transformer_lens.model_bridge import TransformerBridge

    from lenstop.models import loading

    def unknown(*args: object, **kwargs: object) -> None:
        raise OSError(
            "someone/no-such-model is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token"
        )

    monkeypatch.setattr(TransformerBridge, "boot_transformers", unknown)
    monkeypatch.setattr(loading, "cache_first", lambda what, load: load())  # as when the hub answers
    result = CliRunner().invoke(app, ["info", "someone/no-such-model", "--device", "cpu"])
    _one_line(result, ExitCode.NOT_FOUND, "no model named 'someone/no-such-model' on disk or on the hub")


def test_a_truncated_model_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    (weights,) = model.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu"])
    _one_line(result, ExitCode.BAD_FILE, "truncated or corrupt")


def test_an_architecture_transformerlens_lacks_is_named(tmp_path: Path) -> None:
    from transformers import CTRLConfig, CTRLLMHeadModel

    from helpers import build_tokenizer

    config = CTRLConfig(vocab_size=320, n_embd=32, n_layer=2, n_head=2, dff=64, n_positions=64)
    CTRLLMHeadModel(config).save_pretrained(tmp_path / "ctrl")
    build_tokenizer().save_pretrained(tmp_path / "ctrl")
    result = CliRunner().invoke(app, ["info", str(tmp_path / "ctrl"), "--device", "cpu"])
    line = _one_line(result, ExitCode.INCOMPATIBLE, "CTRLLMHeadModel is not an architecture TransformerLens supports")
    assert len(line) < 300


def test_whitespace_is_a_prompt(tiny_model: Path, resid_saes: Path) -> None:
    """Not an error: newlines and indentation are tokens a researcher may want to study."""
    result = CliRunner().invoke(app, ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", r" \n\t ", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["prompt"] == " \n\t " and "".join(doc["tokens"][1:]) == " \n\t "


@pytest.mark.parametrize(
    ("data", "prompt"),
    [(b"a\r\n", "a"), (b"a\n\n", "a\n"), (b"a\r", "a\r"), (b"\xef\xbb\xbfa\n", "a"), (b" \n", " ")],
)
def test_stdin_loses_one_line_ending_and_a_byte_order_mark(data: bytes, prompt: str) -> None:
    import io

    from lenstop.models.prompts import read_prompt

    assert read_prompt("-", io.BytesIO(data)) == prompt


def test_a_prompt_from_stdin_is_taken_as_it_is(tiny_model: Path, resid_saes: Path) -> None:
    text = "def f(x):\\n\treturn x"  # a backslash-n stays two characters: no escapes on stdin
    result = CliRunner().invoke(
        app, ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", "-", "--json"], input=(text + "\n").encode()
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["prompt"] == text  # the one trailing newline is dropped


@pytest.mark.parametrize(
    ("data", "where"), [(b"def f(x):\xff\xfe", "0xff at offset 9"), (b"\xc3(", "0xc3 at offset 0")]
)
def test_a_prompt_from_stdin_that_is_not_utf8_is_one_line(tiny_model: Path, resid_saes: Path, data, where) -> None:
    result = CliRunner().invoke(
        app, ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", "-", "--json"], input=data
    )
    _one_line(result, ExitCode.BAD_FILE, "standard input is not UTF-8", where)


# ---------------------------------------------------------------- out of memory
CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 7.63 GiB of which 1.2 GiB is free."
)


def _no_room(*args: object, **kwargs: object) -> None:
    raise torch.OutOfMemoryError(CUDA_OOM)


def test_out_of_memory_while_loading_names_the_model_and_the_size(
    tiny_model: Path, resid_saes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    monkeypatch.setattr(TransformerBridge, "boot_transformers", _no_room)
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--device", "cpu"])
    _one_line(result, ExitCode.OUT_OF_MEMORY, "out of memory loading", str(tiny_model), "tried to allocate 2.50 GiB")
    monkeypatch.undo()

    from lenstop.models.runtime.handle import ModelHandle

    monkeypatch.setattr(ModelHandle, "_attach_dictionaries", _no_room)  # moving the dictionaries onto the device
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--sae", str(resid_saes), "--device", "cpu"])
    _one_line(result, ExitCode.OUT_OF_MEMORY, "out of memory loading", "in float32", "tried to allocate 2.50 GiB")


def test_out_of_memory_loading_a_dictionary_is_not_called_a_bad_file(
    tiny_model: Path, resid_saes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sae_lens import SAE

    monkeypatch.setattr(SAE, "load_from_disk", _no_room)
    result = CliRunner().invoke(app, ["info", str(tiny_model), "--sae", str(resid_saes), "--device", "cpu"])
    _one_line(result, ExitCode.OUT_OF_MEMORY, "out of memory loading", "tried to allocate 2.50 GiB")


def test_the_cpu_allocators_wording_gives_the_size_too() -> None:
    from lenstop.models.errors import allocation

    cpu = RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 3221225472 bytes.")
    assert allocation(cpu) == " (tried to allocate 3.00 GiB)"
    assert allocation(RuntimeError(CUDA_OOM)) == " (tried to allocate 2.50 GiB)"
    assert allocation(RuntimeError("out of memory")) == ""


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`lenstop trace ... --json | head -c 10`: the rest has nowhere to go, and nothing is wrong."""
    import subprocess
    import sys

    prompt = "def f(x):\\n    return x " * 12  # about 120 KB of JSON: more than a pipe holds
    lenstop = str(Path(sys.executable).parent / "lenstop")
    process = subprocess.Popen(
        [lenstop, "trace", "demo", "--json", "-p", prompt, "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10) == b'{"model": '
    process.stdout.close()
    assert process.wait(timeout=300) == 0
    assert process.stderr.read() == b""


def test_out_of_memory_in_an_analysis_names_the_prompt_and_leaves_the_engine_usable(engine) -> None:
    from lenstop.models.errors import OutOfMemoryError

    prompt = "def add(first, second): return first + second"
    before = engine.analyse(prompt)
    block = next(m for name, m in engine.model.named_modules() if name.endswith("blocks.1"))

    handle = block.register_forward_pre_hook(_no_room)
    try:
        with pytest.raises(OutOfMemoryError) as failed:
            engine.analyse(prompt + " and more")
    finally:
        handle.remove()
    n_tokens = len(engine.tokenize(prompt + " and more")[0])
    assert f"running a {n_tokens}-token prompt (tried to allocate 2.50 GiB)" in str(failed.value)
    assert "\n" not in str(failed.value)
    from helpers import assert_same_analysis

    assert_same_analysis(engine.analyse(prompt), before)


# ---------------------------------------------------------------- prompts too long to tokenise
def test_a_prompt_that_cannot_fit_is_refused_before_it_is_tokenised(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 46 MB prompt aborted the Rust tokenizer (exit 134) before its length was checked."""
    from lenstop.models.errors import IncompatibleError

    longest = max(len(t) for t in engine.model.tokenizer.get_vocab())
    most = engine.n_ctx * longest

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenised a prompt that cannot fit")

    monkeypatch.setattr(engine.model, "to_tokens", never)
    with pytest.raises(IncompatibleError) as refused:
        engine.analyse("x" * (most + 1))
    assert f"is {most + 1:,} characters but" in str(refused.value) and f"context is {engine.n_ctx} tokens" in str(
        refused.value
    )
    monkeypatch.undo()
    with pytest.raises(IncompatibleError, match="tokens but"):  # one that might fit is tokenised and counted
        engine.analyse("x " * (engine.n_ctx + 5))


def test_a_huge_prompt_on_stdin_is_one_line(tiny_model: Path, resid_saes: Path) -> None:
    prompt = "def f(x):\n    return x\n" * 20_000  # 480 KB: far more than 64 tokens can spell
    result = CliRunner().invoke(
        app, ["trace", str(tiny_model), "--sae", str(resid_saes), "-p", "-", "--json"], input=prompt.encode()
    )
    _one_line(result, ExitCode.INCOMPATIBLE, "characters but", "context is 64 tokens")


def test_stdin_is_read_no_further_than_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-p - < /dev/zero` must not read until memory runs out."""
    from lenstop.models import prompts
    from lenstop.models.errors import IncompatibleError

    class Endless:
        asked: list[int] = []

        def read(self, n: int = -1) -> bytes:
            assert n > 0, "read to the end of an endless stream"
            self.asked.append(n)
            return b"\0" * n

    monkeypatch.setattr(prompts, "STDIN_LIMIT", 1000)
    stream = Endless()
    with pytest.raises(IncompatibleError, match="standard input holds more than"):
        prompts.read_prompt("-", stream)  # type: ignore[arg-type]
    assert stream.asked == [1001]
