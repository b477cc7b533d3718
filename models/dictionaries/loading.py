"""Dictionaries (SAEs and transcoders) and where they attach to the model.

A `--sae` spec is one of:
- `RELEASE:SAE_ID`  one SAE of a SAELens pretrained release;
- `RELEASE`         every SAE of that release (e.g. one per layer);
- a directory with `cfg.json` and `sae_weights.safetensors` (SAELens's disk format);
- a directory of such directories;
- a directory with circuit-tracer's `config.yaml`: per-layer transcoders (`transcoder_set`) or a
  cross-layer transcoder (`cross_layer_transcoder`), see `circuit_tracer_format`;
- `OWNER/NAME[/SUBFOLDER][@REVISION]`  such a folder in a hub repository (the cache first);
- `demo`            the bundled demo's dictionaries, one per layer;
- `demo:transcoders`, `demo:clt`  the bundled demo's per-layer transcoders and its cross-layer transcoder.
SAELens's files are loaded by SAELens itself (safetensors only), so every architecture
it supports for inference works: standard, TopK, JumpReLU, gated, transcoders. circuit-tracer's
per-layer files become SAELens transcoders too; a cross-layer transcoder is no SAE and travels
as `Dictionaries.cross_layer`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenstop.models import demo
from lenstop.models.demo import DEMO_NAME
from lenstop.models.dictionaries import circuit_tracer_format as tracer
from lenstop.models.dictionaries.collection import Dictionaries
from lenstop.models.dictionaries.dictionary import Dictionary
from lenstop.models.errors import (
    BadFileError,
    IncompatibleError,
    LenstopError,
    NotFoundError,
    UsageError,
    corrupt_weights,
    is_out_of_memory,
    json_shown,
    read_json,
)
from lenstop.models.feature_cards import Cards
from lenstop.models.hub import cache_first
from lenstop.models.loading import Processing

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"


def layer_of(hook: str) -> int:
    """`blocks.3.hook_resid_pre` -> 3."""
    match = _BLOCK.match(hook)
    if not match:
        raise IncompatibleError(
            f"hook {hook!r} is not inside a block (blocks.N.*); lenstop attaches dictionaries to layers"
        )
    return int(match.group(1))


def _from_sae(sae: SAE, key: str, source: str, declared_l0: float | None, cards: Cards | None = None) -> Dictionary:
    meta = sae.cfg.metadata
    hook_in = meta.hook_name
    if not hook_in:
        raise IncompatibleError(f"dictionary {key}: its config names no hook (metadata.hook_name)")
    hook_out = meta.hook_name_out or hook_in
    return Dictionary(
        key=key,
        sae=sae,
        hook_in=hook_in,
        hook_out=hook_out,
        layer=layer_of(hook_in),
        source=source,
        declared_l0=declared_l0,
        cards=cards or Cards(),
    )


def _topk_l0(sae: SAE) -> float | None:
    k = getattr(sae.cfg, "k", None)
    return float(k) if k else None


def load_directory(path: Path, *, device: str, dtype: str) -> Dictionary:
    """One SAELens disk directory."""
    from sae_lens import SAE

    check_field_types(path)
    check_weights_header(path)
    try:
        sae = SAE.load_from_disk(path, device=device, dtype=dtype)
    except FileNotFoundError as err:
        missing = Path(err.filename).name if err.filename else SAE_WEIGHTS
        raise NotFoundError(f"dictionary {path}: {missing} is missing; copy or download the whole directory") from err
    except (OSError, MemoryError, LenstopError):
        raise
    except Exception as err:  # what SAELens and safetensors raise for a bad file varies
        if is_out_of_memory(err):
            raise  # Engine.load names it, with the size
        raise BadFileError(f"dictionary {path}: {_unreadable(err)}; fix or re-download it") from err
    check_finite(sae, str(path))
    declared = _topk_l0(sae)
    sparsity_file = path / SPARSITY
    if declared is None and sparsity_file.is_file():
        from safetensors.torch import load_file

        log_freq = load_file(sparsity_file)["sparsity"]
        declared = float((10 ** log_freq.float()).sum())
    return _from_sae(sae, key=path.name, source=str(path), declared_l0=declared, cards=Cards.beside(path))


# The cfg.json fields lenstop relies on, at the top level or under "metadata", and what each must be.
FIELD_TYPES: dict[str, tuple[type, str]] = {
    "d_in": (int, "a positive whole number"),
    "d_sae": (int, "a positive whole number"),
    "k": (int, "a positive whole number"),
    "architecture": (str, "a string"),
    "hook_name": (str, "a string"),
    "hook_point": (str, "a string"),
    "dtype": (str, "a string"),
    "apply_b_dec_to_input": (bool, "true or false"),
    "prepend_bos": (bool, "true or false"),
}


def check_field_types(path: Path) -> None:
    """Name a cfg.json field of the wrong type before SAELens trips over it somewhere inside torch; the file
    is read bounded, so a nested or huge one is a bad file, not a RecursionError."""

    if not (path / SAE_CONFIG).is_file():
        return  # SAE.load_from_disk says it is missing, below
    cfg = read_json(path / SAE_CONFIG, "", what=f"dictionary {path}: its {SAE_CONFIG}")
    if not isinstance(cfg, dict):
        raise BadFileError(f"dictionary {path}: its {SAE_CONFIG} is not a JSON object; fix or re-download it")
    meta: dict[str, Any] = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}
    places: tuple[tuple[str, dict[str, Any]], ...] = (("", cfg), ("metadata.", meta))
    for name, (kind, words) in FIELD_TYPES.items():
        for where, fields in places:
            if name not in fields or fields[name] is None:
                continue
            value = fields[name]
            good = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if good and kind is int and value <= 0:
                good = False
            if not good:
                raise BadFileError(
                    f"dictionary {path}: its {SAE_CONFIG} field {where}{name} is {json_shown(value)}, "
                    f"not {words}; fix or re-download it"
                )
    _check_architecture(path, cfg.get("architecture"))
    k, d_sae = cfg.get("k"), cfg.get("d_sae")
    if isinstance(k, int) and isinstance(d_sae, int) and k > d_sae:
        raise BadFileError(
            f"dictionary {path}: its {SAE_CONFIG} field k is {k}, more than its {d_sae} features (d_sae); "
            "a TopK dictionary keeps at most d_sae; fix or re-download it"
        )


def _check_architecture(path: Path, architecture: object) -> None:
    """An architecture SAELens does not load for inference (a TopK transcoder, which SAELens 6 lacks), named as
    such rather than as the KeyError SAELens raises."""
    import sae_lens  # registers its architectures
    from sae_lens.registry import SAE_CLASS_REGISTRY

    if isinstance(architecture, str) and architecture not in SAE_CLASS_REGISTRY:
        known = ", ".join(sorted(SAE_CLASS_REGISTRY))
        raise IncompatibleError(
            f"dictionary {path}: its architecture {architecture!r} is not one SAELens {sae_lens.__version__} "
            f"loads ({known})"
        )


def check_weights_header(path: Path) -> None:
    """SAELens's loader casts int8 or bool weights to float without a word: refuse them from the file's header,
    before anything is read. A truncated or missing file is left to SAE.load_from_disk, which names it."""
    from lenstop.models.checkpoint import not_float, safetensors_header

    weights = path / SAE_WEIGHTS
    try:
        tensors = safetensors_header(weights, f"dictionary {path}: its {SAE_WEIGHTS}")
    except (OSError, BadFileError):
        return
    not_float(tensors, f"dictionary {path}")


def _unreadable(err: Exception) -> str:
    """What was wrong with a dictionary's files, in words, from what the loaders raised."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    kind = type(err).__name__
    if corrupt_weights(err):
        return f"{SAE_WEIGHTS} is truncated or corrupt ({text})"
    if "size mismatch" in str(err) or "state_dict" in text:
        sizes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        return f"its weights do not have the shapes its {SAE_CONFIG} declares ({(sizes or [text])[0]})"
    if isinstance(err, KeyError):
        return f"its {SAE_CONFIG} lacks the field {text}"
    if isinstance(err, (TypeError, ValueError)):
        return f"its {SAE_CONFIG} has a field of the wrong type or value ({kind}: {text})"
    return f"cannot be read ({kind}: {text})"


def check_finite(sae: SAE, source: str) -> None:
    """NaN or infinite weights would turn every analysis into NaN, and integer ones are no dictionary: refuse
    them when loading, by name."""
    from lenstop.models.checkpoint import nonfinite

    for name, tensor in sae.state_dict().items():
        if not tensor.is_floating_point():
            raise BadFileError(
                f"dictionary {source}: its weights' {name} is {str(tensor.dtype).removeprefix('torch.')}, "
                "not floating point; re-download it"
            )
        if bad := nonfinite(tensor):
            raise BadFileError(f"dictionary {source}: {name} holds {bad} NaN or infinite values; re-download it")


def directories_in(path: Path) -> list[Path]:
    """The SAE directories a path names: itself, or its children that hold a cfg.json."""
    if (path / SAE_CONFIG).is_file():
        return [path]
    children = sorted(p for p in path.iterdir() if (p / SAE_CONFIG).is_file())
    if not children:
        raise NotFoundError(
            f"{path}: no {SAE_CONFIG} in it or in its subdirectories, and no {tracer.CONFIG}; "
            "not a SAELens dictionary or circuit-tracer's transcoders"
        )
    return children


def release_ids(release: str) -> list[str]:
    """Every SAE id of a SAELens pretrained release, or a NotFoundError naming close matches."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see SAELens's list of pretrained SAEs"
        raise NotFoundError(f"no SAELens release or directory named {release!r}{hint}")
    return list(directory[release].saes_map)


def load_pretrained(release: str, sae_id: str, *, device: str, dtype: str) -> Dictionary:
    """One SAE of a SAELens release, from the cache if it is there, else the hub."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    ids = release_ids(release)
    if sae_id not in ids:
        close = difflib.get_close_matches(sae_id, ids, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {len(ids)} ids, e.g. {ids[0]}"
        raise NotFoundError(f"release {release!r} has no SAE {sae_id!r}{hint}")
    sae, _cfg, log_sparsity = cache_first(
        f"SAE {release}:{sae_id}",
        lambda: SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device=device, dtype=dtype),
    )
    check_finite(sae, f"{release}:{sae_id}")
    declared = _topk_l0(sae) or get_pretrained_saes_directory()[release].expected_l0.get(sae_id)
    if declared is None and log_sparsity is not None:
        declared = float((10 ** log_sparsity.float()).sum())
    return _from_sae(sae, key=f"{release}:{sae_id}", source=f"{release}:{sae_id}", declared_l0=declared)


def load_spec(spec: str, *, device: str = "cpu", dtype: str = "float32", progress: Any = None) -> Dictionaries:
    """Every dictionary a `--sae` spec names (see the module docstring)."""
    if spec == DEMO_NAME:
        spec = demo.require_built(demo.SAE_ROOT, "dictionaries")
    elif spec in DEMO_TRANSCODERS:
        spec = _demo_transcoders(spec)
    path = Path(spec).expanduser()
    if path.is_dir() and tracer.is_tracer_folder(path):
        return load_tracer_folder(path, device=device, dtype=dtype, progress=progress)
    if path.is_dir():
        dirs = directories_in(path)
        return Dictionaries(
            _step(progress, i, len(dirs), d.name, lambda d=d: load_directory(d, device=device, dtype=dtype))
            for i, d in enumerate(dirs)
        )
    if path.exists():
        raise UsageError(
            f"--sae {spec}: a file, but a dictionary is a directory holding {SAE_CONFIG} and {SAE_WEIGHTS}"
        )
    if tracer.is_hub_reference(spec):
        return load_tracer_folder(tracer.hub_folder(spec), device=device, dtype=dtype, progress=progress)
    release, sep, sae_id = spec.partition(":")
    if sep:
        return Dictionaries(
            [_step(progress, 0, 1, spec, lambda: load_pretrained(release, sae_id, device=device, dtype=dtype))]
        )
    ids = release_ids(release)
    return Dictionaries(
        _step(
            progress,
            i,
            len(ids),
            f"{release}:{i_d}",
            lambda i_d=i_d: load_pretrained(release, i_d, device=device, dtype=dtype),
        )
        for i, i_d in enumerate(ids)
    )


# `--sae` names for the bundled demo's circuit-tracer folders: the attribute of lenstop.models.demo and words.
DEMO_TRANSCODERS = {
    f"{DEMO_NAME}:transcoders": ("TRANSCODER_ROOT", "per-layer transcoders are"),
    f"{DEMO_NAME}:clt": ("CLT_ROOT", "cross-layer transcoder is"),
}


def _demo_transcoders(spec: str) -> str:
    attribute, words = DEMO_TRANSCODERS[spec]
    root = Path(getattr(demo, attribute))
    if not tracer.is_tracer_folder(root):
        raise NotFoundError(
            f"the bundled demo's {words} missing ({root / tracer.CONFIG}); "
            "build them with python -m lenstop.models.demo.build"
        )
    return str(root)


def load_tracer_folder(
    path: Path | tracer.TracerConfig, *, device: str, dtype: str, progress: Any = None
) -> Dictionaries:
    """A circuit-tracer folder (or its config, read): its per-layer transcoders as dictionaries, or its
    cross-layer transcoder."""
    config = path if isinstance(path, tracer.TracerConfig) else tracer.read_config(path)
    if config.kind == tracer.CROSS_LAYER:
        from lenstop.models.dictionaries.cross_layer import load_cross_layer

        if progress is not None:
            progress(f"loading cross-layer transcoder ({config.folder.name})")
        return Dictionaries(cross_layer=load_cross_layer(config, device=device, dtype=dtype))
    return Dictionaries(tracer.load_transcoder_set(config, device=device, dtype=dtype, progress=progress))


def _step(progress: Any, index: int, total: int, name: str, load: Any) -> Dictionary:
    if progress is not None:
        progress(f"loading dictionary {index + 1}/{total} ({name})")
    return load()


def agreed_processing(dictionaries: list[Dictionary]) -> Processing:
    """The one weight processing every dictionary was trained with, or an error naming two that differ."""
    if not dictionaries:
        return Processing()
    first = dictionaries[0]
    for other in dictionaries[1:]:
        if other.processing() != first.processing():
            raise IncompatibleError(
                f"dictionaries {first.key} ({first.processing().describe()}) and {other.key} "
                f"({other.processing().describe()}) expect differently processed model weights; load them separately"
            )
    return first.processing()


def agreed_prepend_bos(dictionaries: list[Dictionary]) -> bool | None:
    """Whether the dictionaries were trained with a BOS token; None when there are none."""
    values = {d.prepend_bos for d in dictionaries}
    if len(values) > 1:
        raise IncompatibleError("the dictionaries disagree on prepend_bos; load them separately")
    return values.pop() if values else None


def validate(dictionaries: list[Dictionary], widths: dict[str, int], model_name: str) -> None:
    """Every hook exists in the model and every width matches, or one line saying which does not."""
    for d in dictionaries:
        for hook, want, what in ((d.hook_in, d.d_in, "d_in"), (d.hook_out, d.d_out, "d_out")):
            if hook not in widths:
                hint = "; the bridge fires it only with use_hook_mlp_in: name mlp.hook_in, the same activation"
                raise IncompatibleError(
                    f"dictionary {d.key}: hook {hook!r} does not exist in {model_name} "
                    f"(it was trained on {d.metadata.model_name or 'an unknown model'})"
                    + (hint if hook.endswith(".hook_mlp_in") else "")
                )
            if widths[hook] != want:
                raise IncompatibleError(
                    f"dictionary {d.key}: {what} is {want} but {hook} of {model_name} is {widths[hook]} wide "
                    f"(it was trained on {d.metadata.model_name or 'an unknown model'})"
                )


def flat_width(tensor: torch.Tensor, hook: str) -> int:
    """The width a dictionary sees at `hook`: heads are flattened for hook_z."""
    if hook.endswith("hook_z") and tensor.dim() == 4:
        return int(tensor.shape[-1] * tensor.shape[-2])
    return int(tensor.shape[-1])
