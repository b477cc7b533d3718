"""Loading a language model through TransformerLens's TransformerBridge.

The bridge wraps the Hugging Face model itself, so any architecture
TransformerLens supports works, from a hub name or a local Hugging Face
directory, on one device or split across several with an accelerate device map.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenstop.models import demo
from lenstop.models.demo import DEMO_NAME
from lenstop.models.errors import (
    BadFileError,
    IncompatibleError,
    LenstopError,
    NotFoundError,
    UsageError,
    corrupt_weights,
    is_out_of_memory,
)
from lenstop.models.hub import cache_first, cached_snapshot, offline

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

DTYPES = ("float32", "float16", "bfloat16")

# HookedTransformer's load-time weight processing, which SAELens records per dictionary.
PROCESSING_FLAGS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)


@dataclass(frozen=True)
class Processing:
    """Which HookedTransformer weight processing the model runs with.

    All False means raw Hugging Face numerics. Anything True switches the bridge
    into compatibility mode with exactly these flags, so a dictionary sees the
    activations it was trained on (e.g. centred residuals for gpt2-small-res-jb).
    """

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False
    refactor_factored_attn_matrices: bool = False

    @property
    def is_raw(self) -> bool:
        return not any(self.__dict__.values())

    def describe(self) -> str:
        if self.is_raw:
            return "raw"
        return "hooked-transformer(" + ", ".join(k for k, v in self.__dict__.items() if v) + ")"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any] | None) -> Processing:
        """SAELens loads with `from_pretrained_no_processing(**kwargs)`: off unless a kwarg turns it on."""
        kwargs = kwargs or {}
        return cls(**{flag: bool(kwargs.get(flag, False)) for flag in PROCESSING_FLAGS})


def resolve_device(device: str) -> str:
    """`auto` picks cuda, then mps, then cpu; anything else is checked to exist."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    problem = device_problem(device)
    if problem is not None:
        raise UsageError(f"--device {device}: {problem}")
    return device


def device_problem(device: str) -> str | None:
    """Why `device` cannot be used here, or None when it can."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return "CUDA is not available here; use --device cpu or auto"
        index = device.partition(":")[2]
        if device != "cuda" and not index.isdigit():
            return "expected cuda or cuda:N"
        if int(index or 0) >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s) are visible"
        return None
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return "MPS is not available here; use --device cpu or auto"
        return None
    if device == "cpu":
        return None
    return "expected auto, cpu, cuda, cuda:N or mps"


def check_device_map(mapping: dict[str, str | int]) -> None:
    """Every device an explicit --device-map names exists here: accelerate's own failure for cuda:99 on a
    machine without CUDA is an AssertionError deep inside the load."""
    for module, target in mapping.items():
        device = f"cuda:{target}" if isinstance(target, int) else str(target)
        if device in ("disk", "meta"):
            problem: str | None = "lenstop keeps every weight in memory; offloading to disk or meta is not supported"
        else:
            problem = device_problem(device)
        if problem is not None:
            raise UsageError(f"--device-map {module}={target}: {problem}")


def resolve_dtype(dtype: str) -> torch.dtype:
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def parse_device_map(value: str | None) -> str | dict[str, str | int] | None:
    """`auto`, `balanced`, `sequential`, a JSON object, or `module=device,module=device`."""
    if value is None:
        return None
    value = value.strip()
    if value in ("auto", "balanced", "balanced_low_0", "sequential"):
        return value
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise UsageError(f"--device-map: not valid JSON ({err.msg})") from None
        if not isinstance(parsed, dict):
            raise UsageError("--device-map: the JSON must be an object of module -> device")
        return parsed
    mapping: dict[str, str | int] = {}
    for part in value.split(","):
        module, sep, target = part.partition("=")
        if not sep or not module.strip() or not target.strip():
            raise UsageError(
                f"--device-map {value!r}: expected auto, balanced, sequential, a JSON object "
                "or module=device pairs such as 'transformer.h.0=cuda:0,transformer.h.1=cuda:1'"
            )
        target = target.strip()
        mapping[module.strip()] = int(target) if target.isdigit() else target
    return mapping


def is_local_model(name: str) -> bool:
    return Path(name).expanduser().is_dir()


def looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else is meant as a path on disk."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    n_devices: int | None = None,
    device_map: str | dict[str, str | int] | None = None,
) -> TransformerBridge:
    """Boot `name` (a hub name, a local Hugging Face directory, or `demo`) through the bridge."""
    if name == DEMO_NAME:
        name = demo.require_built(demo.MODEL_DIR, "model")
    torch_dtype = resolve_dtype(dtype)
    placement = _placement(device, n_devices, device_map)

    from transformer_lens.model_bridge import TransformerBridge

    def boot(source: str) -> TransformerBridge:
        return TransformerBridge.boot_transformers(source, dtype=torch_dtype, **placement)

    if looks_like_path(name) and not is_local_model(name):
        raise NotFoundError(f"no model directory at {name}; pass a Hugging Face directory or a hub name")
    return _boot_local(name, boot) if is_local_model(name) else _boot_from_hub(name, boot)


def _placement(device: str, n_devices: int | None, device_map: str | dict[str, str | int] | None) -> dict[str, Any]:
    """The bridge's placement arguments: one device, or a device map across several."""
    if n_devices is not None and n_devices > 1 and device_map is None:
        import torch

        if torch.cuda.device_count() < n_devices:
            raise UsageError(f"--n-devices {n_devices}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if isinstance(device_map, dict):
        check_device_map(device_map)
    if device_map is not None or (n_devices is not None and n_devices > 1):
        return {"device_map": device_map or "auto", "n_devices": n_devices}
    return {"device": resolve_device(device)}


def _boot_local(name: str, boot: Callable[[str], TransformerBridge]) -> TransformerBridge:
    """A Hugging Face directory on disk, checked before it boots, with the hub out of reach."""
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise NotFoundError(f"{path} has no config.json: not a Hugging Face model directory")
    check_files(path, f"model {str(path)!r}")
    try:
        with offline():
            bridge = boot(str(path))
    except LenstopError:
        raise
    except Exception as err:
        _explain(str(path), err, path)
        raise
    check_loaded(bridge, f"model {str(path)!r}")
    return bridge


def _boot_from_hub(name: str, boot: Callable[[str], TransformerBridge]) -> TransformerBridge:
    """A hub model, from the cache first; its files are checked before the boot when cached, else just after."""
    folder = cached_snapshot(name)
    if folder is not None:
        check_files(folder, f"model {name!r}")
    try:
        bridge = cache_first(f"model {name!r}", lambda: boot(name))
    except LenstopError:
        raise
    except Exception as err:
        _explain(name, err, folder or cached_snapshot(name))
        raise
    if folder is None and (folder := cached_snapshot(name)) is not None:
        check_files(folder, f"model {name!r}")  # downloaded just now: checked as soon as it is on disk
    check_loaded(bridge, f"model {name!r}")
    return bridge


def check_files(folder: Path, what: str) -> None:
    """The folder's config.json, small files and safetensors headers, against each other, before anything
    loads (see models/checkpoint.py): a few milliseconds."""
    from lenstop.models import checkpoint

    checkpoint.check_small_files(folder, what)
    config = checkpoint.check_config(folder, what)
    tensors = checkpoint.checkpoint_tensors(folder, what)
    if tensors is not None:
        checkpoint.check_sizes_against(config, tensors, what)
        checkpoint.compare_with_model(folder, config, tensors, what)


def check_loaded(bridge: TransformerBridge, what: str) -> None:
    """What only the loaded model shows: NaN or infinite weights, and a tokenizer with no vocabulary."""
    from lenstop.models import checkpoint

    checkpoint.check_finite(bridge.named_parameters(), what)
    checkpoint.check_tokenizer(bridge.tokenizer, what)


def _explain(name: str, err: Exception, folder: Path | None = None) -> None:
    """Re-raise what transformers and TransformerLens raise as one line for the user, when we know it."""
    text = str(err)
    kind = type(err).__name__
    first = text.strip().splitlines()[0] if text.strip() else kind
    if (
        kind in ("RepositoryNotFoundError", "GatedRepoError")
        or "is not a local folder and is not a valid model" in text
    ):
        raise NotFoundError(
            f"no model named {name!r} on disk or on the hub; check the name or pass a local directory"
        ) from err
    if "could not determine supported architecture" in text.lower():
        found = re.search(r"Config architectures: \[([^\]]*)\]", text)
        architecture = found.group(1).replace("'", "") if found and found.group(1) else "its architecture"
        raise IncompatibleError(
            f"model {name!r}: {architecture} is not an architecture TransformerLens supports; "
            "pick a supported model (TransformerLens's docs list them) or convert this one"
        ) from err
    if "trust_remote_code" in text:
        raise IncompatibleError(
            f"model {name!r}: it needs code that comes with the model, and lenstop never runs code from a "
            "model's files; pick a model whose architecture transformers supports natively"
        ) from err
    if "Unrecognized model" in text:
        raise IncompatibleError(
            f"model {name!r}: its config.json names no model type this transformers knows (model_type); "
            "fix config.json or upgrade transformers"
        ) from err
    if (
        "not supported" in text.lower()
        or "unsupported architecture" in text.lower()
        or kind == "UnsupportedArchitectureError"
    ):
        raise IncompatibleError(f"model {name!r}: {first}") from err
    if kind == "UnpicklingError" or "weights only load failed" in text.lower():
        raise BadFileError(
            f"model {name!r}: its weights are a pickle that would run code to load, and lenstop loads only "
            "tensors; convert the checkpoint to safetensors"
        ) from err
    if corrupt_weights(err):
        raise BadFileError(f"model {name!r}: its weights are truncated or corrupt ({first}); re-download them") from err
    if "ignore_mismatched_sizes" in text or "size mismatch" in text:
        raise BadFileError(
            f"model {name!r}: its weights do not have the shapes its config.json implies; "
            "config.json does not match the weights"
        ) from err
    if kind == "StrictDataclassFieldValidationError" or "validation error for field" in text.lower():
        why = " ".join(line.strip() for line in text.splitlines()[1:2]) or first
        raise BadFileError(f"model {name!r}: its config.json has a field of the wrong type ({why})") from err
    if folder is not None and not is_out_of_memory(err) and not isinstance(err, (ImportError, NotImplementedError)):
        from lenstop.models.checkpoint import blame_a_file

        blame_a_file(folder, f"model {name!r}")  # a JSON file that does not parse or is no object: which one
    if kind == "JSONDecodeError":
        raise BadFileError(f"model {name!r}: one of its JSON files cannot be read ({first}); re-download it") from err
    if isinstance(err, (KeyError, TypeError, AttributeError, ValueError)) and _raised_in(err, "tokeniz"):
        raise BadFileError(
            f"model {name!r}: its tokenizer's files cannot be used ({kind}: {first[:80]}); re-download them"
        ) from err


def _raised_in(err: BaseException, part: str) -> bool:
    """Whether the failure came from code whose file name holds `part` (transformers' tokenization_*.py)."""
    frames = traceback.extract_tb(err.__traceback__)
    return any(part in Path(frame.filename).name for frame in frames)
