"""circuit-tracer's transcoder files (a folder with `config.yaml`), read into lenstop's types.

`config.yaml` says which kind the folder holds:
- `model_kind: transcoder_set`: one transcoder per layer, `transcoders:` listing the files in layer order
  (paths relative to the config's folder, or absolute; without the list, `layer_0.safetensors`,
  `layer_1.safetensors`, ... beside it). Each file holds `W_enc` (d_transcoder, d_model), transposed
  against SAELens's (d_in, d_sae), `b_enc`, `W_dec` (d_transcoder, d_model), `b_dec`, and optionally
  `activation_function.threshold` (JumpReLU, else ReLU) and `W_skip` (d_model, d_model; skip = x @ W_skip.T).
  Each layer becomes a SAELens transcoder (`Transcoder`, `SkipTranscoder`, `JumpReLUTranscoder`,
  `JumpReLUSkipTranscoder`) wrapped as a `Dictionary`, so reading and interventions treat it like one
  loaded from SAELens's own format.
- `model_kind: cross_layer_transcoder`: `W_enc_{i}.safetensors` and `W_dec_{i}.safetensors` beside the
  config, read by `cross_layer.load_cross_layer` into a `CrossLayerTranscoder`.

Feature cards, where a folder has them, sit beside the weights under names no circuit-tracer loader reads:
`layer_0.feature_cards.json.gz` and `layer_0.feature_labels.json` for `layer_0.safetensors` (named after each
listed file), and `layer_{i}.` ones in a cross-layer folder (`Cards.named`).

`feature_input_hook` and `feature_output_hook` name hooks relative to `blocks.L` (`mlp.hook_in`,
`mlp.hook_out`); `bridge_hook` turns them into the TransformerBridge's names. `scan` is the identifier
circuit-tracer's viewer fetches feature pages under; without one, the folder's path.

A folder may also be a hub repository, `owner/name[/subfolder][@revision]` as circuit-tracer names them
(`hub_folder`): its config and weights come from the local Hugging Face cache first, the hub only when the
cache misses and the hub answers (`lenstop.models.hub.cache_first`); `hf://owner/name/file` references in a
config's list are fetched the same way. Its scan is the reference, as circuit-tracer sets it.

Only safe loaders: `yaml.safe_load` for the config, safetensors for the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenstop.models.dictionaries.dictionary import Dictionary
from lenstop.models.errors import BadFileError, IncompatibleError, NotFoundError, UsageError, check_size
from lenstop.models.feature_cards import Cards

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE

    from lenstop.models.checkpoint import Tensor

CONFIG = "config.yaml"
CONFIG_LIMIT = 2**20  # bytes: a config is a few hundred
TRANSCODER_SET = "transcoder_set"
CROSS_LAYER = "cross_layer_transcoder"
KINDS = (TRANSCODER_SET, CROSS_LAYER)
# Hooks the bridge has under another name, or fires only when asked (hook_mlp_in needs use_hook_mlp_in).
_BRIDGE_NAMES = {"hook_mlp_in": "mlp.hook_in"}
THRESHOLD = "activation_function.threshold"


@dataclass(frozen=True)
class TracerConfig:
    """What a circuit-tracer `config.yaml` says, checked."""

    folder: Path  # where config.yaml is
    kind: str  # TRANSCODER_SET or CROSS_LAYER
    input_hook: str  # relative to blocks.L, as the file writes it
    output_hook: str
    scan: str
    transcoders: tuple[str, ...] | None  # the per-layer files as listed; None: layer_i.safetensors beside it
    label: str | None = None  # how a hub reference names it; None: by its folder

    @property
    def name(self) -> str:
        """What the dictionaries' keys start with: the folder's name, or the hub reference."""
        return self.label or self.folder.name

    def hook_in(self, layer: int) -> str:
        return bridge_hook(self.input_hook, layer)

    def hook_out(self, layer: int) -> str:
        return bridge_hook(self.output_hook, layer)

    @property
    def what(self) -> str:
        return f"transcoders {self.label or self.folder}"

    def layer_files(self) -> list[Path]:
        """The per-layer files in layer order, resolved against the config's folder."""
        if self.transcoders is None:
            found = sorted(self.folder.glob("layer_*.safetensors"))
            files = [self.folder / f"layer_{i}.safetensors" for i in range(len(found))]
        else:
            files = [_resolved(self.folder, ref, self.what) for ref in self.transcoders]
        if not files:
            raise NotFoundError(f"{self.what}: its {CONFIG} lists no transcoders and no layer_0.safetensors is there")
        for layer, file in enumerate(files):
            if not file.is_file():
                raise NotFoundError(
                    f"{self.what}: layer {layer}'s {file.name} is missing; copy or download the whole folder"
                )
        return files


def bridge_hook(relative: str, layer: int) -> str:
    """`mlp.hook_in`, 3 -> `blocks.3.mlp.hook_in`: circuit-tracer's hook names are relative to the block."""
    return f"blocks.{layer}.{_BRIDGE_NAMES.get(relative, relative)}"


def is_tracer_folder(path: Path) -> bool:
    return (path / CONFIG).is_file()


def _resolved(folder: Path, ref: str, what: str) -> Path:
    if ref.startswith("hf://"):
        return _hub_file(ref, what)
    path = Path(ref).expanduser()
    return path if path.is_absolute() else folder / path


def _hub_file(uri: str, what: str) -> Path:
    """An `hf://owner/name/path/in/repo[?revision=R]` file, from the cache first."""
    from urllib.parse import parse_qs, urlparse

    from huggingface_hub import hf_hub_download

    from lenstop.models.hub import cache_first

    parsed = urlparse(uri)
    owner_name, _, filename = parsed.path.lstrip("/").partition("/")
    if not (parsed.netloc and owner_name and filename):
        raise BadFileError(f"{what}: its {CONFIG} names {uri!r}, not hf://owner/name/file; fix it")
    revision = parse_qs(parsed.query).get("revision", [None])[0]
    repo_id = f"{parsed.netloc}/{owner_name}"
    return Path(cache_first(uri, lambda: hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)))


def is_hub_reference(spec: str) -> bool:
    """`owner/name[/subfolder][@revision]`: a hub repository id, as no SAELens release and no local path is."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    head = spec.partition("@")[0]
    parts = head.split("/")
    if len(parts) < 2 or ":" in spec or head.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id("/".join(parts[:2]))
    except HFValidationError:
        return False
    return True


def hub_folder(ref: str) -> TracerConfig:
    """A circuit-tracer hub repository's config, with its weights in the local cache (fetched if the cache
    misses and the hub answers): the folder is the cached snapshot's, the scan the reference."""
    from dataclasses import replace

    from huggingface_hub import hf_hub_download, snapshot_download

    from lenstop.models.hub import cache_first

    head, _, revision = ref.partition("@")
    parts = head.split("/")
    repo_id, subfolder, rev = "/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None
    what = f"transcoders {ref}"
    found = cache_first(
        what, lambda: hf_hub_download(repo_id=repo_id, filename=CONFIG, subfolder=subfolder, revision=rev)
    )
    config = replace(read_config(Path(found).parent), scan=ref, label=ref)
    if config.transcoders is None:  # the weights sit beside the config: fetch them all
        pattern = "layer_*.safetensors" if config.kind == TRANSCODER_SET else "*.safetensors"
        patterns = [f"{subfolder}/{pattern}" if subfolder else pattern]
        cache_first(what, lambda: snapshot_download(repo_id=repo_id, revision=rev, allow_patterns=patterns))
    return config


def read_config(folder: Path) -> TracerConfig:
    """The folder's config.yaml, read bounded with `yaml.safe_load`, or a one-line error naming what is wrong."""
    path = folder / CONFIG
    what = f"transcoders {folder}"
    raw = _load_yaml(path, what)
    if not isinstance(raw, dict):
        raise BadFileError(f"{what}: its {CONFIG} is not a mapping of fields; fix or re-download it")
    kind = raw.get("model_kind")
    if kind not in KINDS:
        raise BadFileError(
            f"{what}: its {CONFIG} field model_kind is {kind!r}, not {' or '.join(KINDS)}; fix or re-download it"
        )
    hooks = [_hook_field(raw, name, what) for name in ("feature_input_hook", "feature_output_hook")]
    scan = raw.get("scan")
    if isinstance(scan, list) and all(isinstance(s, str) for s in scan):
        scan = ",".join(scan)
    if scan is not None and not isinstance(scan, str):
        raise BadFileError(f"{what}: its {CONFIG} field scan is not a string; fix or re-download it")
    listed = raw.get("transcoders")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(p, str) for p in listed)):
        raise BadFileError(f"{what}: its {CONFIG} field transcoders is not a list of file paths; fix it")
    if kind == CROSS_LAYER and listed is not None:
        raise IncompatibleError(
            f"{what}: its {CONFIG} lists a cross-layer transcoder file by file (Gemma Scope 2's layout), which is "
            "not supported; lenstop reads circuit-tracer's W_enc_i/W_dec_i files beside it"
        )
    return TracerConfig(
        folder=folder,
        kind=str(kind),
        input_hook=hooks[0],
        output_hook=hooks[1],
        scan=scan or str(folder),
        transcoders=None if listed is None else tuple(listed),
    )


def _load_yaml(path: Path, what: str) -> Any:
    import importlib

    yaml: Any = importlib.import_module("yaml")  # PyYAML ships no type information

    check_size(path, f"{what}: its {CONFIG}", CONFIG_LIMIT)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadFileError(f"{what}: its {CONFIG} is not UTF-8 text; fix or re-download it") from None
    except OSError as err:
        raise BadFileError(f"{what}: its {CONFIG} cannot be read ({err.strerror or err})") from None
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError:
        raise BadFileError(
            f"{what}: its {CONFIG} holds a tag that builds objects (such as !!python/...), which lenstop does not "
            "load; write plain fields"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadFileError(f"{what}: its {CONFIG} is not valid YAML{where}; fix or re-download it") from None
    except RecursionError:
        raise BadFileError(f"{what}: its {CONFIG} is nested too deeply; fix or re-download it") from None


def _hook_field(raw: dict[str, Any], name: str, what: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise BadFileError(f"{what}: its {CONFIG} has no {name} (a hook such as mlp.hook_in); fix it")
    if value.startswith("blocks."):
        raise BadFileError(
            f"{what}: its {CONFIG} field {name} is {value!r}; circuit-tracer names hooks relative to blocks.L "
            "(mlp.hook_in); fix it"
        )
    return value


# ---------------------------------------------------------------- per-layer transcoders
def load_transcoder_set(config: TracerConfig, *, device: str, dtype: str, progress: Any = None) -> list[Dictionary]:
    """Every layer of a transcoder_set folder, as SAELens transcoders wrapped as dictionaries."""
    files = config.layer_files()
    loaded = []
    for layer, file in enumerate(files):
        if progress is not None:
            progress(f"loading transcoder {layer + 1}/{len(files)} ({file.name})")
        loaded.append(load_tracer_layer(config, layer, file, device=device, dtype=dtype))
    return loaded


def load_tracer_layer(config: TracerConfig, layer: int, file: Path, *, device: str, dtype: str) -> Dictionary:
    """One circuit-tracer per-layer file as a SAELens transcoder: its encoder transposed into SAELens's
    (d_in, d_sae), the rest as it is."""
    from safetensors.torch import load_file

    from lenstop.models.dictionaries.loading import check_finite

    what = f"{config.what}: {file.name}"
    d_features, d_model, d_out = _layer_shapes(file, what)
    weights = load_file(str(file), device="cpu")
    if THRESHOLD in weights:
        weights[THRESHOLD] = weights[THRESHOLD].reshape(d_features)
        if (low := float(weights[THRESHOLD].min())) < 0:
            raise IncompatibleError(
                f"{what}: a JumpReLU threshold is below 0 ({low:.4g}); lenstop reads JumpReLU as SAELens does "
                "(relu(x) where x > threshold), which differs from circuit-tracer's x there"
            )
    sae = _saelens_transcoder(config, layer, weights, d_model=d_model, d_out=d_out, d_features=d_features)
    sae.to(device=device, dtype=_torch_dtype(dtype))
    sae.eval()
    check_finite(sae, what)
    return Dictionary(
        key=f"{config.name}/{file.stem}",
        sae=sae,
        hook_in=config.hook_in(layer),
        hook_out=config.hook_out(layer),
        layer=layer,
        source=str(file),
        cards=Cards.named(file.parent, file.stem),
    )


def _layer_shapes(file: Path, what: str) -> tuple[int, int, int]:
    """(d_features, d_model, d_out) from the file's header, or a one-line error naming the tensor that is
    missing or of the wrong shape."""
    from lenstop.models.checkpoint import not_float, safetensors_header

    tensors = safetensors_header(file, what)
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise BadFileError(f"{what} lacks {', '.join(missing)}; not a circuit-tracer transcoder; re-download it")
    not_float(tensors, what)
    enc, dec = tensors["W_enc"].shape, tensors["W_dec"].shape
    if len(enc) != 2 or len(dec) != 2 or dec[0] != enc[0]:
        raise BadFileError(
            f"{what}: W_enc is {_shape(tensors['W_enc'])} and W_dec {_shape(tensors['W_dec'])}; both should be "
            "(d_transcoder, d_model); re-download it"
        )
    d_features, d_model, d_out = enc[0], enc[1], dec[1]
    want = {"b_enc": (d_features,), "b_dec": (d_out,), "W_skip": (d_out, d_model)}
    for name, shape in want.items():
        if name in tensors and tensors[name].shape != shape:
            raise BadFileError(f"{what}: {name} is {_shape(tensors[name])}, not {shape}; re-download it")
    if THRESHOLD in tensors and _numel(tensors[THRESHOLD]) != d_features:
        raise BadFileError(
            f"{what}: {THRESHOLD} is {_shape(tensors[THRESHOLD])}, not {d_features} thresholds; re-download it"
        )
    return d_features, d_model, d_out


def _shape(tensor: Tensor) -> str:
    return "(" + ", ".join(str(n) for n in tensor.shape) + ")"


def _numel(tensor: Tensor) -> int:
    count = 1
    for n in tensor.shape:
        count *= n
    return count


def _saelens_transcoder(
    config: TracerConfig, layer: int, weights: dict[str, torch.Tensor], *, d_model: int, d_out: int, d_features: int
) -> SAE:
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import (
        JumpReLUSkipTranscoder,
        JumpReLUTranscoder,
        SkipTranscoder,
        Transcoder,
    )

    jump, skip = THRESHOLD in weights, "W_skip" in weights
    cls = {
        (False, False): Transcoder,
        (False, True): SkipTranscoder,
        (True, False): JumpReLUTranscoder,
        (True, True): JumpReLUSkipTranscoder,
    }[(jump, skip)]
    metadata = SAEMetadata(
        model_name=None,
        hook_name=config.hook_in(layer),
        hook_name_out=config.hook_out(layer),
        prepend_bos=True,  # circuit-tracer always puts BOS first
        model_class_name=None,  # its TransformerLens model is loaded unprocessed (fold_ln and centring off)
        model_from_pretrained_kwargs={},
        scan=config.scan,
    )
    cfg = {
        "d_in": d_model,
        "d_out": d_out,
        "d_sae": d_features,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": metadata.to_dict(),
    }
    sae = cls.from_dict(cfg)
    state = {
        "W_enc": weights["W_enc"].T.contiguous(),  # circuit-tracer's (d_transcoder, d_model) -> (d_in, d_sae)
        "b_enc": weights["b_enc"],
        "W_dec": weights["W_dec"],
        "b_dec": weights["b_dec"],
    }
    if jump:
        state["threshold"] = weights[THRESHOLD]
    if skip:
        state["W_skip"] = weights["W_skip"]  # (d_out, d_in) in both: skip = x @ W_skip.T
    sae.load_state_dict({k: v.float() for k, v in state.items()})
    return sae


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    found = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r}; expected float32, float16 or bfloat16")
    return found
