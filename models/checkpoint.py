"""A model's files, checked before they load: transformers fills a tensor the checkpoint lacks with random
values, and a tensor of the wrong dtype is cast, both without a word; a config.json is read by several
readers that trust it. So before the bridge boots, lenstop reads the config.json itself (bounded, an object,
its sizes positive) and the safetensors headers (names, dtypes and shapes, a few kilobytes: no tensor is
read), and compares them with the model that config describes, built on the meta device (no memory, a few
milliseconds). After the boot, the weights must be finite and the tokenizer real.

Every architecture TransformerBridge boots is treated alike: names are compared as transformers loads them,
with or without the base model's prefix, tied weights counted once, and the keys each class says to ignore
ignored. Renamed or fused tensors (legacy names, MoE experts stored one by one) match no name; they are let
through as long as the unmatched tensors hold at least as many values as the unmatched parameters.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenstop.models.errors import (
    JSON_LIMIT,
    BadFileError,
    IncompatibleError,
    NotFoundError,
    check_size,
    json_kind,
    parse_json,
    read_json,
)

if TYPE_CHECKING:
    import torch

# safetensors' dtype names of floating-point tensors: what a checkpoint of weights holds.
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
HEADER_LIMIT = 100_000_000  # bytes: the safetensors format's own limit on its JSON header
INDEX = "model.safetensors.index.json"
WEIGHTS = "model.safetensors"
# The JSON files of a model's folder that transformers reads, each an object.
READ_BY_TRANSFORMERS = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    INDEX,
)
# Every file of a model's folder that is read whole (configs, tokenizers, vocabularies), by readers that trust it.
SMALL_FILES = (*READ_BY_TRANSFORMERS, "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model")

LAYER_FIELDS = ("n_layer", "num_hidden_layers", "num_layers", "n_layers")
WIDTH_FIELDS = ("n_embd", "hidden_size", "d_model")
HEAD_DIM_FIELDS = ("head_dim", "d_kv", "kv_channels", "attention_head_dim", "head_size")
# Sizes that must be positive whole numbers wherever a config gives them as a number.
SIZE_FIELDS = (
    *LAYER_FIELDS,
    *WIDTH_FIELDS,
    *HEAD_DIM_FIELDS,
    "n_head",
    "num_attention_heads",
    "num_heads",
    "num_key_value_heads",
    "vocab_size",
    "n_positions",
    "n_ctx",
    "max_position_embeddings",
    "intermediate_size",
    "n_inner",
)
WIDTH_AND_HEADS = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"), ("d_model", "num_heads"))
EMBEDDING_SLACK = 4  # a config may imply an embedding this many times all the weights before it is refused


@dataclass(frozen=True)
class Tensor:
    """One tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return prod(self.shape)


# ---------------------------------------------------------------- the config
def check_config(folder: Path, what: str) -> dict[str, Any]:
    """The folder's config.json as an object whose sizes are positive and whose heads divide its width,
    read once, bounded, before transformers and TransformerLens read it again; or a one-line error."""
    config = read_json(folder / "config.json", "", what=f"{what}: its config.json")
    if not isinstance(config, dict):
        raise BadFileError(
            f"{what}: its config.json is a JSON {json_kind(config)}, not an object; fix or re-download it"
        )
    for part in _sub_configs(config):
        _check_sizes(part, what)
    _refuse_remote_code(config, what)
    return config


def _sub_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config and the configs nested in it (a multimodal model's text_config, say)."""
    nested = [v for k, v in config.items() if isinstance(v, dict) and k.endswith("_config") and "model_type" in v]
    return [config, *nested]


def _check_sizes(config: dict[str, Any], what: str) -> None:
    for name in SIZE_FIELDS:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise BadFileError(
                f"{what}: its config.json field {name} is {value}, not a positive whole number; fix config.json"
            )
    if any(isinstance(config.get(name), int) for name in HEAD_DIM_FIELDS):
        return  # heads of their own width: nothing to divide
    for width_name, heads_name in WIDTH_AND_HEADS:
        width, heads = config.get(width_name), config.get(heads_name)
        if isinstance(width, int) and isinstance(heads, int) and width % heads:
            raise BadFileError(
                f"{what}: its config.json field {heads_name} is {heads}, which does not divide "
                f"{width_name} {width} into heads; fix config.json"
            )


def _refuse_remote_code(config: dict[str, Any], what: str) -> None:
    """A model type transformers does not know, whose config points at code of its own (auto_map)."""
    if not (config.get("auto_map") or config.get("trust_remote_code")):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise IncompatibleError(
            f"{what}: its config.json asks to run code that comes with the model (auto_map), and lenstop never "
            "runs code from a model's files; pick a model whose architecture transformers supports natively"
        )


def check_small_files(folder: Path, what: str) -> None:
    """Tokenizer and config files are read whole, by readers that trust them: bound their size first. One that
    is not a regular file (a link to /dev/zero, a FIFO) has no size to bound, and is refused."""
    for path in (folder / name for name in SMALL_FILES):
        if path.exists():
            check_size(path, f"{what}: its {path.name}", JSON_LIMIT)


def blame_a_file(folder: Path, what: str) -> None:
    """After transformers failed reading `folder`: the JSON file it was, in lenstop's words, if one of them does
    not parse or is no object (every JSON file of a model's folder is one). Read only after a failure, since
    a large tokenizer.json takes a tenth of a second to parse."""
    for path in (folder / name for name in READ_BY_TRANSFORMERS):
        if not path.is_file():
            continue
        doc = read_json(path, "", what=f"{what}: its {path.name}")
        if not isinstance(doc, dict):
            raise BadFileError(f"{what}: its {path.name} is a JSON {json_kind(doc)}, not an object; re-download it")


# ---------------------------------------------------------------- the weights' headers
def checkpoint_tensors(folder: Path, what: str) -> dict[str, Tensor] | None:
    """Every tensor of the folder's safetensors checkpoint (one file, or the shards its index names), from the
    headers alone; None when the checkpoint is not safetensors (transformers then says what it finds)."""
    index = folder / INDEX
    if index.is_file():
        files = _shards(index, what)
    elif (folder / WEIGHTS).is_file():
        files = [WEIGHTS]
    else:
        return None
    tensors: dict[str, Tensor] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise NotFoundError(f"{what}: its weights' shard {name} is missing; re-download the model")
        tensors.update(safetensors_header(path, f"{what}: its {name}"))
    return tensors


def _shards(index: Path, what: str) -> list[str]:
    doc = read_json(index, "", what=f"{what}: its {INDEX}")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise BadFileError(f"{what}: its {INDEX} has no weight_map of tensor names to files; re-download it")
    files = sorted(set(weight_map.values()))
    strange = next((f for f in files if Path(f).is_absolute() or ".." in Path(f).parts), None)
    if strange is not None:
        raise BadFileError(f"{what}: its {INDEX} names a shard outside the folder ({strange!r}); re-download it")
    return files


def safetensors_header(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors a safetensors file holds, from its header: an 8-byte length, then that much JSON. A file
    shorter than its header says is truncated; nothing of the tensors themselves is read."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        start = fh.read(8)
        length = struct.unpack("<Q", start)[0] if len(start) == 8 else -1
        if not 0 < length <= min(HEADER_LIMIT, size - 8):
            raise _corrupt(what, "its header is cut short or unreadable")
        header = parse_json(fh.read(length), what)
    if not isinstance(header, dict):
        raise _corrupt(what, "its header is not a JSON object")
    tensors: dict[str, Tensor] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensor, stop = _header_entry(entry)
        if tensor is None:
            raise _corrupt(what, f"its header's entry for {name[:80]!r} is malformed")
        tensors[name] = tensor
        end = max(end, stop)
    if 8 + length + end > size:
        raise _corrupt(what, f"it holds {size:,} bytes of the {8 + length + end:,} its header describes")
    return tensors


def _header_entry(entry: object) -> tuple[Tensor | None, int]:
    if not isinstance(entry, dict):
        return None, 0
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(dtype, str) and isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2):
        return None, 0
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in [*shape, *offsets]):
        return None, 0
    return Tensor(dtype, tuple(shape)), offsets[1]


def _corrupt(what: str, why: str) -> BadFileError:
    return BadFileError(f"{what} is truncated or corrupt ({why}); re-download it")


def not_float(tensors: Mapping[str, Tensor], what: str) -> None:
    """A dictionary's or a model's weights must be floating point: loaders cast int8 or bool to float silently."""
    for name, tensor in tensors.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise BadFileError(
                f"{what}: its weights' {name} is {tensor.dtype}, not floating point; lenstop reads float32, "
                "float16 or bfloat16 weights, not quantised or integer ones"
            )


# ---------------------------------------------------------------- the config against the weights
def check_sizes_against(config: dict[str, Any], tensors: Mapping[str, Tensor], what: str) -> None:
    """Sizes no checkpoint of these tensors can hold, refused before anything is built: building the model
    of a config with a million layers takes hours, even on the meta device."""
    for part in _sub_configs(config):
        layers = max((part[k] for k in LAYER_FIELDS if isinstance(part.get(k), int)), default=0)
        if layers > len(tensors):
            raise BadFileError(
                f"{what}: its config.json says {layers:,} layers but its weights hold {len(tensors):,} tensors in "
                "all; fix config.json or re-download the model"
            )
        width = next((part[k] for k in WIDTH_FIELDS if isinstance(part.get(k), int)), 0)
        vocab = part["vocab_size"] if isinstance(part.get("vocab_size"), int) else 0
        held = sum(t.numel for t in tensors.values())
        if width * vocab > EMBEDDING_SLACK * held:  # slack for factorised embeddings (ALBERT's are smaller)
            raise BadFileError(
                f"{what}: its config.json implies an embedding of {vocab:,} x {width:,} values but its weights "
                f"hold {held:,} in all; fix config.json or re-download the model"
            )


def compare_with_model(folder: Path, config: dict[str, Any], tensors: Mapping[str, Tensor], what: str) -> None:
    """The checkpoint holds every parameter of the model its config describes, in its shape, as floats, and
    no layer that model lacks; or a one-line error naming the tensors."""
    if "quantization_config" in config:
        return  # quantised checkpoints hold other tensors than the float model: transformers' quantiser maps them
    model = _meta_model(folder, what)
    if model is None:
        return
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    expected, tied = _expected(model, prefix)
    held = {_strip(name, prefix): tensor for name, tensor in tensors.items()}
    original = {_strip(name, prefix): name for name in tensors}  # as the checkpoint names them, for messages
    ignore_missing = _patterns(getattr(model, "_keys_to_ignore_on_load_missing", None))
    ignore_unexpected = _patterns(getattr(model, "_keys_to_ignore_on_load_unexpected", None))

    for name, (shape, is_float) in expected.items():
        found = held.get(name)
        if found is None:
            continue
        if found.shape != shape:
            raise BadFileError(
                f"{what}: its weights' {original[name]} is {_dims(found.shape)} but its config.json implies "
                f"{_dims(shape)}; config.json does not match the weights"
            )
        if is_float:
            not_float({original[name]: found}, what)
    missing = [
        name for name, group in tied.items() if not any(n in held for n in group) and not _ignored(name, ignore_missing)
    ]
    spare = [n for n in held if n not in expected and not _ignored(n, ignore_unexpected)]
    layers = _layer_counts(expected, held)
    spare_values = sum(held[n].numel for n in spare if held[n].dtype in FLOAT_DTYPES)
    if missing and sum(prod(expected[n][0]) for n in missing) > spare_values:
        raise BadFileError(
            f"{what}: its weights lack {len(missing)} tensor(s) its config.json implies ({_some(missing)}){layers}; "
            "the download is incomplete or config.json does not match the weights"
        )
    shapes = {_masked(n) for n in expected}
    extra = [original[n] for n in spare if _masked(n) in shapes]
    if extra:
        raise BadFileError(
            f"{what}: its weights hold {len(extra)} tensor(s) its config.json has no place for ({_some(extra)})"
            f"{layers}; config.json does not match the weights"
        )


def _meta_model(folder: Path, what: str) -> torch.nn.Module | None:
    """The model class TransformerBridge boots, built from the config on the meta device, or None when
    transformers has no such class (the bridge then says so itself)."""
    import torch
    import transformers

    try:
        from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config

        hf_config = transformers.AutoConfig.from_pretrained(str(folder))
        architecture = determine_architecture_from_hf_config(hf_config)
    except Exception:  # the bridge's own boot reads the config next and says what is wrong with it
        return None
    model_class = getattr(transformers, architecture, None)
    if not isinstance(model_class, type) or not issubclass(model_class, transformers.PreTrainedModel):
        return None
    try:
        with torch.device("meta"), _no_init():
            return model_class(hf_config)
    except Exception as err:
        text = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise BadFileError(f"{what}: its config.json describes no model transformers can build ({text})") from err


def _no_init() -> Any:
    """transformers' switch that skips weight initialisation (pointless on the meta device), where it has one:
    `transformers.initialization` in 5.x, `transformers.modeling_utils` before."""
    import importlib
    from contextlib import nullcontext

    for module in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            switch = getattr(importlib.import_module(module), "no_init_weights", None)
        except ImportError:
            continue
        if switch is not None:
            return switch()
    return nullcontext()


def _expected(
    model: torch.nn.Module, prefix: str
) -> tuple[dict[str, tuple[tuple[int, ...], bool]], dict[str, list[str]]]:
    """The model's state dict as names (without the prefix) -> (shape, floating), and its parameters grouped by
    the tensor they share (tied weights: one of the names is enough)."""
    expected = {_strip(name, prefix): (tuple(t.shape), t.is_floating_point()) for name, t in model.state_dict().items()}
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(_strip(name, prefix))
    tied = {group[0]: group for group in groups.values()}
    declared = getattr(model, "_tied_weights_keys", None)
    if isinstance(declared, dict):  # transformers 5: target -> source, whether or not already tied
        for target, source in declared.items():
            target, source = _strip(str(target), prefix), _strip(str(source), prefix)
            if target in tied and source in expected:
                tied[target].append(source)
    return expected, tied


def _strip(name: str, prefix: str) -> str:
    return name.removeprefix(f"{prefix}.") if prefix else name


def _patterns(found: object) -> list[re.Pattern[str]]:
    if not isinstance(found, Iterable) or isinstance(found, str):
        return []
    return [re.compile(str(p)) for p in found]


def _ignored(name: str, patterns: list[re.Pattern[str]]) -> bool:
    return any(p.search(name) for p in patterns)


def _masked(name: str) -> str:
    """`h.12.attn.c_attn.weight` -> `h.#.attn.c_attn.weight`: the same tensor of another layer."""
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "#", name)


def _layer_counts(expected: Iterable[str], held: Iterable[str]) -> str:
    """` (its config.json has 5 layers, its weights 3)` when the numbered blocks disagree, else nothing."""

    def count(names: Iterable[str]) -> int:
        found = (re.search(r"(?:^|\.)(\d+)\.", n) for n in names)
        return len({m.group(1) for m in found if m})

    want, have = count(expected), count(held)
    return f" (its config.json has {want} layer(s), its weights {have})" if want != have else ""


def _some(names: list[str], n: int = 2) -> str:
    shown = ", ".join(sorted(names)[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


# ---------------------------------------------------------------- after the boot
def nonfinite(tensor: torch.Tensor) -> int:
    """How many of a tensor's values are NaN or infinite. A sum in float32 (float64 for float64) is finite
    when every value is, so a sound tensor costs one pass and no mask; a sum that is not may be large finite
    values overflowing it (bf16 reaches 3e38), so then the values themselves are counted."""
    import torch

    wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    if bool(torch.isfinite(tensor.sum(dtype=wide))):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def check_finite(parameters: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """One NaN in the weights makes every probability NaN: refuse them when loading, by name. A tensor seen
    twice (a tied embedding and unembedding, a view the bridge keeps beside its original) is read once."""
    seen: set[tuple[str, int, int, tuple[int, ...]]] = set()
    for name, param in parameters:
        if not param.is_floating_point() or param.device.type == "meta":
            continue
        key = (str(param.device), param.untyped_storage().data_ptr(), int(param.storage_offset()), tuple(param.shape))
        if key in seen:
            continue
        seen.add(key)
        if bad := nonfinite(param):
            shown = name.replace("._original_component", "")  # the bridge's wrappers, not the checkpoint's names
            raise BadFileError(
                f"{what}: its weights hold {bad:,} NaN or infinite value(s), in {shown}; "
                "re-download or fix the checkpoint"
            )


def check_tokenizer(tokenizer: Any, what: str) -> None:
    """transformers makes an empty tokenizer from a folder without tokenizer files, which turns every prompt
    into end-of-text tokens: a missing tokenizer is said."""
    size = len(tokenizer) if tokenizer is not None else 0
    special = len(set(getattr(tokenizer, "all_special_ids", ()) or ()))
    if size - special < 1:
        raise NotFoundError(
            f"{what}: it has no tokenizer (tokenizer.json, tokenizer.model, or vocab.json with merges.txt); "
            "copy the tokenizer's files beside its config.json"
        )
