"""A model's files are checked before they load (models/checkpoint.py): each defect of a checkpoint, which
transformers would fill with random weights or cast without a word, is one line with its exit code; and
checkpoints that are merely laid out differently still load."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.errors import ExitCode

from helpers import one_line

Spoil = Callable[[Path], None]


def _copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def _config(**fields: object) -> Spoil:
    def spoil(model: Path) -> None:
        config = json.loads((model / "config.json").read_text())
        config.update(fields)
        (model / "config.json").write_text(json.dumps(config))

    return spoil


def _weights(change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Spoil:
    def spoil(model: Path) -> None:
        weights = load_file(model / "model.safetensors")
        save_file(change(weights), model / "model.safetensors", metadata={"format": "pt"})

    return spoil


def _without_layer_1(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if ".h.1." not in k}


def _without_one_tensor(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if k != "transformer.h.0.mlp.c_fc.weight"}


def _int8(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.int8) if k.endswith("c_attn.weight") else v for k, v in weights.items()}


def _bool(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v > 0 if k.endswith("ln_f.weight") else v for k, v in weights.items()}


def _one_value(value: float) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    def change(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = weights["transformer.h.1.mlp.c_proj.weight"].clone()
        target[3, 5] = value
        return {**weights, "transformer.h.1.mlp.c_proj.weight": target}

    return change


def _narrower(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**weights, "transformer.h.0.mlp.c_fc.weight": weights["transformer.h.0.mlp.c_fc.weight"][:, :64].clone()}


def _no_tokenizer(model: Path) -> None:
    for path in model.glob("tokenizer*"):
        path.unlink()


def _truncated(name: str) -> Spoil:
    def spoil(model: Path) -> None:
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[: len(data) // 2])

    return spoil


def _nested(name: str) -> Spoil:
    def spoil(model: Path) -> None:
        (model / name).write_text("[" * 100_000 + "]" * 100_000)

    return spoil


def _huge(name: str) -> Spoil:
    def spoil(model: Path) -> None:
        with (model / name).open("r+b") as fh:
            fh.truncate(65 * 2**20)  # sparse: costs no disk, and no reader ever gets that far

    return spoil


def _header(header: object) -> Spoil:
    """A safetensors file whose header is `header`, followed by 16 bytes of data."""

    def spoil(model: Path) -> None:
        text = json.dumps(header).encode()
        (model / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + bytes(16))

    return spoil


def _index_outside(model: Path) -> None:
    _sharded(model)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: "../../elsewhere.safetensors" for k in index["weight_map"]}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))


def _a_large_file_of_its_own(model: Path) -> None:
    """A training log beside the model: nothing lenstop or transformers reads, however large."""
    with (model / "training_log.txt").open("wb") as fh:
        fh.truncate(65 * 2**20)


def _a_list(model: Path) -> None:
    (model / "config.json").write_text("[1, 2]")


def _sharded(model: Path) -> None:
    """The checkpoint in two shards and the index that names them, as save_pretrained writes large models."""
    weights = load_file(model / "model.safetensors")
    names = sorted(weights)
    shards = {name: f"model-0000{1 + 2 * i // len(names)}-of-00002.safetensors" for i, name in enumerate(names)}
    for shard in sorted(set(shards.values())):
        save_file({k: weights[k] for k, f in shards.items() if f == shard}, model / shard, {"format": "pt"})
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    (model / "model.safetensors").unlink()


def _sharded_without_a_shard(model: Path) -> None:
    _sharded(model)
    (model / "model-00002-of-00002.safetensors").unlink()


CHECKPOINT_DEFECTS = [
    (
        _weights(_without_layer_1),
        ExitCode.BAD_FILE,
        ("lack 12 tensor(s)", "h.1.", "its config.json has 2 layer(s), its weights 1"),
    ),
    (_weights(_without_one_tensor), ExitCode.BAD_FILE, ("lack 1 tensor(s)", "h.0.mlp.c_fc.weight")),
    (_config(n_layer=5), ExitCode.BAD_FILE, ("lack 36 tensor(s)", "its config.json has 5 layer(s), its weights 2")),
    (_config(n_layer=50), ExitCode.BAD_FILE, ("says 50 layers but its weights hold 28 tensors",)),
    (_config(n_layer=1), ExitCode.BAD_FILE, ("11 tensor(s) its config.json has no place for", "(transformer.h.1.")),
    (_config(n_embd=64), ExitCode.BAD_FILE, ("transformer.wte.weight is 320x32 but its config.json implies 320x64",)),
    (_config(vocab_size=10**7), ExitCode.BAD_FILE, ("implies an embedding of 10,000,000 x 32 values",)),
    (
        _weights(_narrower),
        ExitCode.BAD_FILE,
        ("transformer.h.0.mlp.c_fc.weight is 32x64 but its config.json implies 32x128",),
    ),
    (
        _weights(_int8),
        ExitCode.BAD_FILE,
        ("its weights' transformer.h.0.attn.c_attn.weight is I8, not floating point",),
    ),
    (_weights(_bool), ExitCode.BAD_FILE, ("ln_f.weight is BOOL, not floating point",)),
    (
        _weights(_one_value(float("nan"))),
        ExitCode.BAD_FILE,
        ("1 NaN or infinite value(s), in transformer.h.1.mlp.c_proj.weight",),
    ),
    (_weights(_one_value(float("inf"))), ExitCode.BAD_FILE, ("1 NaN or infinite value(s)",)),
    (_no_tokenizer, ExitCode.NOT_FOUND, ("it has no tokenizer", "tokenizer.json")),
    (_truncated("tokenizer.json"), ExitCode.BAD_FILE, ("its tokenizer.json is not valid JSON",)),
    (_truncated("model.safetensors"), ExitCode.BAD_FILE, ("model.safetensors is truncated or corrupt",)),
    (_sharded_without_a_shard, ExitCode.NOT_FOUND, ("shard model-00002-of-00002.safetensors is missing",)),
    (
        _header({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}),
        ExitCode.BAD_FILE,
        ("its header's entry for 'w' is malformed",),
    ),
    (
        _header({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}),
        ExitCode.BAD_FILE,
        ("model.safetensors is truncated or corrupt", "of the 4,0"),
    ),
    (_header([1, 2]), ExitCode.BAD_FILE, ("its header is not a JSON object",)),
    (_index_outside, ExitCode.BAD_FILE, ("names a shard outside the folder ('../../elsewhere.safetensors')",)),
]


CONFIG_DEFECTS = [
    (_config(n_head=0), ExitCode.BAD_FILE, ("field n_head is 0, not a positive whole number",)),
    (_config(n_head=5), ExitCode.BAD_FILE, ("n_head is 5, which does not divide n_embd 32",)),
    (_config(n_layer=-1), ExitCode.BAD_FILE, ("field n_layer is -1",)),
    (_a_list, ExitCode.BAD_FILE, ("its config.json is a JSON list, not an object",)),
    (_nested("config.json"), ExitCode.BAD_FILE, ("its config.json is nested too deeply",)),
    (_huge("config.json"), ExitCode.BAD_FILE, ("its config.json is over 64 MiB",)),
    (_nested("tokenizer.json"), ExitCode.BAD_FILE, ("its tokenizer.json is nested too deeply",)),
    (_huge("tokenizer.json"), ExitCode.BAD_FILE, ("its tokenizer.json is over 64 MiB",)),
    (_nested("tokenizer_config.json"), ExitCode.BAD_FILE, ("its tokenizer_config.json is nested too deeply",)),
    (
        _config(model_type="my_own_llm", auto_map={"AutoModelForCausalLM": "modeling.MyLLM"}),
        ExitCode.INCOMPATIBLE,
        ("lenstop never runs code from a model's files",),
    ),
]


@pytest.mark.parametrize(("spoil", "code", "words"), CHECKPOINT_DEFECTS + CONFIG_DEFECTS)
def test_each_checkpoint_and_config_defect_is_one_line(
    tiny_model: Path, tmp_path: Path, spoil: Spoil, code: ExitCode, words: tuple[str, ...]
) -> None:
    model = _copy(tiny_model, tmp_path)
    spoil(model)
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu", "--json"])
    one_line(result, code, f"model {str(model)!r}", *words)


def test_a_million_layers_are_refused_at_once(tiny_model: Path, tmp_path: Path) -> None:
    """Building the model of this config would take hours, even on the meta device; nothing is built."""
    model = _copy(tiny_model, tmp_path)
    _config(n_layer=10**6)(model)
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["info", str(model), "--device", "cpu"])
    one_line(result, ExitCode.BAD_FILE, "says 1,000,000 layers but its weights hold 28 tensors")
    assert time.perf_counter() - start < 10


def _without_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A base model's checkpoint (`h.0...`, not `transformer.h.0...`), as GPT-2's own on the hub."""
    return {k.removeprefix("transformer."): v for k, v in weights.items()}


def _with_old_buffers(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-2's hub checkpoint keeps each layer's causal mask, which transformers ignores."""
    masks = {f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 64, 64) for i in range(2)}
    return {**weights, **masks}


def _untied_head(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**weights, "lm_head.weight": weights["transformer.wte.weight"].clone()}


@pytest.mark.parametrize(
    "layout",
    [
        _weights(_without_prefix),
        _weights(_with_old_buffers),
        _weights(_untied_head),
        _sharded,
        _a_large_file_of_its_own,
    ],
    ids=["without-prefix", "old-buffers", "untied-head", "sharded", "a-large-log-beside"],
)
def test_checkpoints_laid_out_otherwise_still_load(tiny_model: Path, tmp_path: Path, layout: Spoil, engine) -> None:
    model = _copy(tiny_model, tmp_path)
    layout(model)
    result = CliRunner().invoke(app, ["trace", str(model), "--device", "cpu", "-p", "def f(x):", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == list(engine.analyse("def f(x):").tokens)


def test_a_cached_hub_model_is_checked_like_a_folder(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lenstop info owner/name` from the local cache: the snapshot folder goes through the same checks."""
    from hub_cache import _add, _repo
    from huggingface_hub import constants

    snapshot = _repo(tmp_path / "hub", "someone/tiny", "0" * 40)
    spoilt = _copy(tiny_model, tmp_path)
    _weights(_without_layer_1)(spoilt)
    for path in spoilt.iterdir():
        _add(snapshot, path.name, path.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = CliRunner().invoke(app, ["info", "someone/tiny", "--device", "cpu"])
    one_line(result, ExitCode.BAD_FILE, "model 'someone/tiny'", "lack 12 tensor(s)")


def test_a_native_model_whose_config_asks_for_its_own_code_loads_without_running_it(
    tiny_model: Path, tmp_path: Path, engine
) -> None:
    model = _copy(tiny_model, tmp_path)
    marker = tmp_path / "code-ran"
    (model / "modeling_own.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    _config(auto_map={"AutoModelForCausalLM": "modeling_own.GPT2LMHeadModel"})(model)
    result = CliRunner().invoke(app, ["trace", str(model), "--device", "cpu", "-p", "def f(x):", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == list(engine.analyse("def f(x):").tokens)
    assert not marker.exists(), "the model's own code ran"


def test_large_finite_weights_that_overflow_a_sum_are_not_called_infinite() -> None:
    """The check sums each tensor in float32 and counts only when the sum is not finite: a sum of finite values
    can overflow (bf16 reaches 3e38), and such weights were refused as holding '0 NaN or infinite value(s)'."""
    from lenstop.models.checkpoint import check_finite, nonfinite
    from lenstop.models.errors import BadFileError

    large = torch.full((4, 4), 3e38, dtype=torch.bfloat16)
    assert not torch.isfinite(large.sum(dtype=torch.float32)) and nonfinite(large) == 0
    check_finite([("w", large)], "model 'x'")
    fused = torch.zeros(3, 4)
    fused[2, 1] = float("nan")
    q, k, v = fused.unbind(0)  # views of one storage at three offsets, as the bridge keeps q, k and v
    with pytest.raises(BadFileError, match=r"1 NaN or infinite value\(s\), in v"):
        check_finite([("q", q), ("k", k), ("v", v)], "model 'x'")
