"""circuit-tracer 0.5.0 in a venv of its own, the reference lenstop's attribution graphs
are compared with, and planted transcoders in its file format.

circuit-tracer pins transformers <= 4.57.3 and lenstop needs >= 5.9, so the two cannot
share a venv: the reference runs as a subprocess (ct_graph.py) with the venv's python
and answers with an .npz. Standard library only at import time, so any test can import
this; plant_transcoders needs torch, safetensors, yaml and tokenizers, which lenstop's venv has.

    python = ensure_venv()              # builds <repo>/.reference/circuit-tracer once
    result = run_reference("--model", model_dir, "--transcoders", tc_dir, "--tokens", "0,5,9")
    result["arrays"]["adjacency_matrix"]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REFERENCE_DIR = ROOT / ".reference"  # gitignored
VENV = REFERENCE_DIR / "circuit-tracer"
REQUIREMENTS = HERE / "circuit-tracer-requirements.txt"
RUNNER = HERE / "ct_graph.py"
TORCH = "torch==2.13.0"  # installed first: the CPU build from local disk, not a CUDA build from PyPI
STAMP_NAME = "lenstop-stamp.json"
PIP_TIMEOUT_S = 3600


class CircuitTracerError(RuntimeError):
    """The reference could not be built or did not run; the message says why."""


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), so parallel test workers
    build a reference once and the others wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp() -> dict[str, str]:
    return {
        "requirements_sha256": hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest(),
        "python": ".".join(map(str, sys.version_info[:3])),
    }


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run_logged(command: list[str], log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise CircuitTracerError(f"{what} failed (exit {done.returncode}); full log {log}; last lines:\n{tail}")


def ensure_venv() -> Path:
    """The circuit-tracer venv's python, building the venv first if its stamp does not
    match the pinned requirements. Idempotent and safe to call from parallel workers.

    Raises CircuitTracerError with pip's last lines when the build fails (tests should fail,
    not skip: a reference that cannot be built is a broken check)."""
    python = _python(VENV)
    stamp_path = VENV / STAMP_NAME
    with locked(REFERENCE_DIR / "circuit-tracer.lock"):
        if python.exists() and stamp_path.exists():
            with contextlib.suppress(ValueError):
                if json.loads(stamp_path.read_text()) == _stamp():
                    return python
        shutil.rmtree(VENV, ignore_errors=True)
        log = REFERENCE_DIR / "circuit-tracer-build.log"
        log.write_text("")
        _run_logged([sys.executable, "-m", "venv", str(VENV)], log, "creating the venv")
        pip = [str(python), "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
        _run_logged([*pip, TORCH], log, f"pip install {TORCH}")
        _run_logged([*pip, "-r", str(REQUIREMENTS)], log, f"pip install -r {REQUIREMENTS.name}")
        check = "import circuit_tracer, torch, transformers; print(torch.__version__, transformers.__version__)"
        _run_logged([str(python), "-c", check], log, "importing circuit_tracer in its venv")
        stamp_path.write_text(json.dumps(_stamp()))  # last: a half-built venv has no stamp
        return python


def run_reference(*script_args: str | os.PathLike[str], timeout_s: float = 1800) -> dict[str, Any]:
    """Run ct_graph.py with the reference venv's python. `script_args` are its command
    line without --out, which this adds (a temporary file) unless given.

    Returns {"npz": Path, "arrays": {name: numpy array}, "meta": dict} where meta is the
    JSON the script wrote beside the npz (timings, scores, what was run). Raises
    CircuitTracerError with the script's last lines if it fails."""
    import numpy as np

    python = ensure_venv()
    args = [str(a) for a in script_args]
    if "--out" not in args:
        out_dir = Path(tempfile.mkdtemp(prefix="ct-graph-"))
        args += ["--out", str(out_dir / "graph.npz")]
    out = Path(args[args.index("--out") + 1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # lenstop's tests put tests/ there; the reference must not see it
    done = subprocess.run([str(python), str(RUNNER), *args], capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise CircuitTracerError(f"ct_graph.py {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    with np.load(out) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(out.with_suffix(".json").read_text())
    return {"npz": out, "arrays": arrays, "meta": meta, "log": done.stderr}


def gpt2_mlp_inputs(model_dir: str | os.PathLike[str], tokens: Any) -> dict[int, Any]:
    """Each layer's MLP input (ln_2's output) for `tokens` (batch, pos), from a plain-torch
    GPT-2 forward over model.safetensors: {layer: (batch * pos, d_model)}. Enough to
    calibrate planted thresholds without transformers."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    stored = load_file(str(model_dir / "model.safetensors"))
    weights = {name.removeprefix("transformer."): tensor.float() for name, tensor in stored.items()}
    eps, n_head = config.get("layer_norm_epsilon", 1e-5), config["n_head"]
    batch, n_pos = tokens.shape
    x = weights["wte.weight"][tokens] + weights["wpe.weight"][:n_pos]

    def ln(h: Any, name: str) -> Any:
        return F.layer_norm(h, h.shape[-1:], weights[f"{name}.weight"], weights[f"{name}.bias"], eps)

    out = {}
    with torch.no_grad():
        for layer in range(config["n_layer"]):
            p = f"h.{layer}."
            qkv = ln(x, p + "ln_1") @ weights[p + "attn.c_attn.weight"] + weights[p + "attn.c_attn.bias"]
            q, k, v = (t.reshape(batch, n_pos, n_head, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
            x = x + attn @ weights[p + "attn.c_proj.weight"] + weights[p + "attn.c_proj.bias"]
            mlp_in = ln(x, p + "ln_2")
            out[layer] = mlp_in[:, 1:].reshape(-1, x.shape[-1])  # not position 0, which circuit-tracer zeroes
            hidden = F.gelu(mlp_in @ weights[p + "mlp.c_fc.weight"] + weights[p + "mlp.c_fc.bias"], approximate="tanh")
            x = x + hidden @ weights[p + "mlp.c_proj.weight"] + weights[p + "mlp.c_proj.bias"]
    return out


def calibration_tokens(model_dir: str | os.PathLike[str], n_seqs: int = 16, n_pos: int = 64) -> Any:
    """(n_seqs, 1 + n_pos) token ids, BOS first: the standard library's json/decoder.py and
    json/encoder.py (Python code, like the demo's corpus, and fixed for a Python version)
    tokenized by the model's tokenizer.json. Random ids would be no good: on them the demo's
    MLP inputs sit elsewhere, and thresholds set there fire 3 to 4 times too often on code."""
    import json.decoder
    import json.encoder

    import torch
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    text = "".join(Path(module.__file__ or "").read_text() for module in (json.decoder, json.encoder))
    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids
    n_seqs = min(n_seqs, len(ids) // n_pos)
    body = torch.tensor(ids[: n_seqs * n_pos]).reshape(n_seqs, n_pos)
    bos = json.loads((model_dir / "config.json").read_text()).get("bos_token_id") or 0
    return torch.cat([torch.full((n_seqs, 1), bos), body], dim=1)


def _encoder(n_features: int, fire_rate: float, calibration: Any, generator: Any) -> tuple[Any, Any, Any]:
    """W_enc (n_features, d_model) of unit rows, b_enc and a JumpReLU threshold chosen so
    each feature fires on `fire_rate` of the calibration MLP inputs (n, d_model)."""
    import torch

    w_enc = torch.randn(n_features, calibration.shape[1], generator=generator)
    w_enc /= w_enc.norm(dim=1, keepdim=True)
    pre = calibration.float() @ w_enc.T
    b_enc = -pre.mean(0)
    threshold = torch.quantile(pre + b_enc, 1 - fire_rate, dim=0)
    return w_enc.contiguous(), b_enc.contiguous(), threshold.clamp(min=1e-3).contiguous()


def plant_transcoders(
    directory: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    kind: str = "transcoder_set",
    n_features: int = 256,
    seed: int = 0,
    fire_rate: float = 0.06,
    calibration: dict[int, Any] | None = None,
    scan: str | None = None,
) -> Path:
    """Write random JumpReLU transcoders for the GPT-2 in `model_dir` into `directory`,
    in circuit-tracer's file format, and return `directory`.

    kind "transcoder_set": config.yaml plus layer_{L}.safetensors (W_enc, W_dec of shape
    (n_features, d_model), b_enc, b_dec, activation_function.threshold), one per layer.
    kind "cross_layer_transcoder": config.yaml plus W_enc_{L}.safetensors (W_enc_L, b_enc_L,
    b_dec_L, threshold_L) and W_dec_{L}.safetensors (W_dec_L of shape
    (n_features, n_layers - L, d_model)), as CrossLayerTranscoder.to_safetensors writes.
    Both read blocks.L.mlp.hook_in (ln_2's output) and write blocks.L.mlp.hook_out.

    Thresholds make each feature fire on `fire_rate` of the calibration tokens (0.06 of 256
    is about 15 a token): `calibration` {layer: (n, d_model) MLP inputs} when given, else
    the model's own MLP inputs on calibration_tokens(model_dir)."""
    import torch
    import yaml
    from safetensors.torch import save_file

    if kind not in ("transcoder_set", "cross_layer_transcoder"):
        raise ValueError(f"unknown kind {kind!r}: transcoder_set or cross_layer_transcoder")
    directory, model_dir = Path(directory), Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    n_layers = json.loads((model_dir / "config.json").read_text())["n_layer"]
    generator = torch.Generator().manual_seed(seed)
    if calibration is None:
        calibration = gpt2_mlp_inputs(model_dir, calibration_tokens(model_dir))
    config: dict[str, Any] = {
        "model_kind": kind,
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "scan": scan or f"planted-{kind}-seed{seed}",
    }
    files = []
    for layer in range(n_layers):
        w_enc, b_enc, threshold = _encoder(n_features, fire_rate, calibration[layer], generator)
        d_model = w_enc.shape[1]
        b_dec = 0.01 * torch.randn(d_model, generator=generator)
        if kind == "transcoder_set":
            w_dec = 0.05 * torch.randn(n_features, d_model, generator=generator)
            name = f"layer_{layer}.safetensors"
            tensors = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
            save_file({**tensors, "activation_function.threshold": threshold}, str(directory / name))
            files.append(name)
        else:
            w_dec = 0.05 * torch.randn(n_features, n_layers - layer, d_model, generator=generator)
            enc = {f"W_enc_{layer}": w_enc, f"b_enc_{layer}": b_enc, f"b_dec_{layer}": b_dec}
            save_file({**enc, f"threshold_{layer}": threshold}, str(directory / f"W_enc_{layer}.safetensors"))
            save_file({f"W_dec_{layer}": w_dec.contiguous()}, str(directory / f"W_dec_{layer}.safetensors"))
    if files:
        config["transcoders"] = files  # relative to the config; ct_graph.py resolves them
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory
