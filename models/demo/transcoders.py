"""The demo's transcoders on disk, in circuit-tracer's format, and what they do.

Two kinds, both JumpReLU (`a = z * (z > threshold)`, `z = x @ W_enc.T + b_enc`):

- a per-layer set (`artifacts/transcoders/`): layer L's transcoder reads what layer
  L's MLP receives (`blocks.L.mlp.hook_in`, the output of `ln_2`) and writes that
  MLP's output (`blocks.L.mlp.hook_out`). One `layer_{L}.safetensors` a layer:
  `W_enc` (d_transcoder, d_model), `b_enc` (d_transcoder), `W_dec` (d_transcoder,
  d_model), `b_dec` (d_model), `activation_function.threshold` (d_transcoder) and
  `W_skip` (d_model, d_model), a linear skip path (`x @ W_skip.T` is added to the
  reconstruction; Paulo et al. 2025, "Transcoders beat sparse autoencoders"), as
  circuit-tracer's `SingleLayerTranscoder.to_safetensors` writes them.
- a cross-layer transcoder (`artifacts/clt/`): a feature at layer i reads layer i's
  MLP input and writes to the MLP outputs of layers i..n_layers-1. Per
  `CrossLayerTranscoder.to_safetensors`: `W_enc_{i}.safetensors` holds `W_enc_{i}`
  (d_transcoder, d_model), `b_enc_{i}`, `b_dec_{i}` (the bias of output layer i) and
  `threshold_{i}`; `W_dec_{i}.safetensors` holds `W_dec_{i}` (d_transcoder,
  n_layers - i, d_model), whose `[:, L - i]` writes to layer L.

Loading them in circuit-tracer (0.5.0), which reads these files unchanged:
- the set: `load_transcoders(circuit_tracer_config(TRANSCODER_ROOT))`; the config.yaml
  lists its files relative to its own folder, and circuit-tracer opens the listed
  paths as they are (relative to the working directory), so the caller makes them
  absolute, which is all `circuit_tracer_config` does;
- the CLT: `load_clt(str(CLT_ROOT), feature_input_hook=..., feature_output_hook=...,
  scan=..., dtype=torch.float32)` with the values in its config.yaml; circuit-tracer's
  `load_transcoders` would fetch a cross-layer transcoder from the Hugging Face hub
  (`snapshot_download(config["repo_id"])`) and has no local path for one.
- both expect the model as circuit-tracer builds it (`fold_ln=False`,
  `center_writing_weights=False`), where `mlp.hook_in` is `ln_2`'s output with its
  weights applied, as here.

Everything here is plain torch and safetensors, so tests need neither circuit-tracer
nor SAELens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONFIG = "config.yaml"
INPUT_HOOK = "mlp.hook_in"  # relative to blocks.L, as circuit-tracer names them
OUTPUT_HOOK = "mlp.hook_out"
TRANSCODER_SCAN = "lenstop-demo-transcoders"
CLT_SCAN = "lenstop-demo-clt"


# ---------------------------------------------------------------- the weights
@dataclass
class CrossLayerJumpReLU:
    """JumpReLU features at each of `n_layers` layers; those at layer i write to layers i..n-1.

    A per-layer transcoder set is the same object with `cross=False`: each layer's
    features write to their own layer only (W_dec[i] is then (d_transcoder, 1, d_model)),
    and it may have a skip path, `W_skip` (n_layers, d_model out, d_model in).
    """

    W_enc: torch.Tensor  # (n_layers, d_transcoder, d_model)
    b_enc: torch.Tensor  # (n_layers, d_transcoder)
    threshold: torch.Tensor  # (n_layers, d_transcoder), positive
    W_dec: list[torch.Tensor]  # [i]: (d_transcoder, n_out_i, d_model); n_out_i = n_layers - i, or 1
    b_dec: torch.Tensor  # (n_layers, d_model)
    cross: bool
    W_skip: torch.Tensor | None = None  # (n_layers, d_model, d_model): skip = x @ W_skip[L].T

    @property
    def n_layers(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_transcoder(self) -> int:
        return self.W_enc.shape[1]

    def encode_layer(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """(..., d_model) MLP input of `layer` -> (..., d_transcoder) feature activations."""
        z = x @ self.W_enc[layer].T + self.b_enc[layer]
        return z * (z > self.threshold[layer])

    def decode_layer(self, acts: list[torch.Tensor], layer: int) -> torch.Tensor:
        """The reconstruction of `layer`'s MLP output from the activations of every layer up to it.

        `acts[i]` is (..., d_transcoder) for layers i <= layer (only `acts[layer]` is read
        when the set is per-layer).
        """
        out = self.b_dec[layer]
        sources = range(layer + 1) if self.cross else (layer,)
        for i in sources:
            out = out + acts[i] @ self.W_dec[i][:, layer - i if self.cross else 0]
        return out

    def reconstruct(self, acts: list[torch.Tensor], x: torch.Tensor, layer: int) -> torch.Tensor:
        """`decode_layer` plus the skip path from `x`, `layer`'s MLP input."""
        out = self.decode_layer(acts, layer)
        return out if self.W_skip is None else out + x @ self.W_skip[layer].T

    def to(self, device: Any) -> CrossLayerJumpReLU:
        return CrossLayerJumpReLU(
            self.W_enc.to(device),
            self.b_enc.to(device),
            self.threshold.to(device),
            [w.to(device) for w in self.W_dec],
            self.b_dec.to(device),
            self.cross,
            None if self.W_skip is None else self.W_skip.to(device),
        )


# ---------------------------------------------------------------- circuit-tracer's format
def read_config(root: Path) -> dict:
    import yaml  # type: ignore[import-untyped]  # PyYAML, which huggingface-hub requires; no stubs here

    return yaml.safe_load((root / CONFIG).read_text())


def _write_config(root: Path, config: dict) -> None:
    import yaml

    (root / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def _config(model_kind: str, scan: str, extra: dict) -> dict:
    return {
        "model_kind": model_kind,
        "scan": scan,
        "feature_input_hook": INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        **extra,
    }


def save_transcoder_set(tc: CrossLayerJumpReLU, root: Path, scan: str = TRANSCODER_SCAN) -> None:
    from safetensors.torch import save_file

    assert not tc.cross
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for layer in range(tc.n_layers):
        name = f"layer_{layer}.safetensors"
        weights = {
            "W_enc": tc.W_enc[layer].contiguous(),
            "b_enc": tc.b_enc[layer].contiguous(),
            "W_dec": tc.W_dec[layer][:, 0].contiguous(),
            "b_dec": tc.b_dec[layer].contiguous(),
            "activation_function.threshold": tc.threshold[layer].contiguous(),
        }
        if tc.W_skip is not None:
            weights["W_skip"] = tc.W_skip[layer].contiguous()
        save_file(weights, root / name)
        files.append(name)
    config = _config("transcoder_set", scan, {"transcoders": files})
    _write_config(root, config)


def save_clt(clt: CrossLayerJumpReLU, root: Path, scan: str = CLT_SCAN) -> None:
    from safetensors.torch import save_file

    assert clt.cross
    root.mkdir(parents=True, exist_ok=True)
    for i in range(clt.n_layers):
        save_file(
            {
                f"W_enc_{i}": clt.W_enc[i].contiguous(),
                f"b_enc_{i}": clt.b_enc[i].contiguous(),
                f"b_dec_{i}": clt.b_dec[i].contiguous(),
                f"threshold_{i}": clt.threshold[i].contiguous(),
            },
            root / f"W_enc_{i}.safetensors",
        )
        save_file({f"W_dec_{i}": clt.W_dec[i].contiguous()}, root / f"W_dec_{i}.safetensors")
    # circuit-tracer's load_clt takes the folder itself (clt_path); these say how to call it.
    config = _config("cross_layer_transcoder", scan, {"n_layers": clt.n_layers, "d_transcoder": clt.d_transcoder})
    _write_config(root, config)


def circuit_tracer_config(root: Path) -> dict:
    """`root`'s config.yaml with its transcoder files made absolute, for circuit-tracer's `load_transcoders`."""
    config = read_config(root)
    if "transcoders" in config:
        config["transcoders"] = [str((root / p).resolve()) for p in config["transcoders"]]
    return config


def load_transcoder_set(root: Path) -> CrossLayerJumpReLU:
    """The per-layer set from `root` (config.yaml's files, in order), with plain safetensors."""
    from safetensors.torch import load_file

    config = read_config(root)
    layers = [load_file(root / name) for name in config["transcoders"]]
    return CrossLayerJumpReLU(
        W_enc=torch.stack([t["W_enc"] for t in layers]),
        b_enc=torch.stack([t["b_enc"] for t in layers]),
        threshold=torch.stack([t["activation_function.threshold"] for t in layers]),
        W_dec=[t["W_dec"][:, None] for t in layers],
        b_dec=torch.stack([t["b_dec"] for t in layers]),
        cross=False,
        W_skip=torch.stack([t["W_skip"] for t in layers]) if all("W_skip" in t for t in layers) else None,
    )


def load_clt(root: Path) -> CrossLayerJumpReLU:
    from safetensors.torch import load_file

    n_layers = len(list(root.glob("W_enc_*.safetensors")))
    enc = [load_file(root / f"W_enc_{i}.safetensors") for i in range(n_layers)]
    return CrossLayerJumpReLU(
        W_enc=torch.stack([e[f"W_enc_{i}"] for i, e in enumerate(enc)]),
        b_enc=torch.stack([e[f"b_enc_{i}"] for i, e in enumerate(enc)]),
        threshold=torch.stack([e[f"threshold_{i}"] for i, e in enumerate(enc)]),
        W_dec=[load_file(root / f"W_dec_{i}.safetensors")[f"W_dec_{i}"] for i in range(n_layers)],
        b_dec=torch.stack([e[f"b_dec_{i}"] for i, e in enumerate(enc)]),
        cross=True,
    )


# ---------------------------------------------------------------- activations and figures
@torch.no_grad()
def mlp_activations(model: Any, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's MLP input (ln_2's output) and output on `tokens`: two lists of (batch, seq, d_model)."""
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def keep(module: Any, args: Any, output: Any) -> None:
        ins.append(args[0])
        outs.append(output)

    handles = [block.mlp.register_forward_hook(keep) for block in model.transformer.h]
    try:
        model(tokens.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return ins, outs


@dataclass(frozen=True)
class TranscoderQuality:
    layer: int
    fvu: float  # of the MLP output, around its mean over the evaluated tokens
    mean_l0: float  # features active a token, at this layer
    dead_fraction: float  # never active on the evaluated tokens
    loss_spliced: float  # next-token loss with this layer's MLP output replaced by the reconstruction


@dataclass(frozen=True)
class TranscoderFigures:
    layers: list[TranscoderQuality]
    loss_clean: float
    loss_all_spliced: float  # every layer's MLP output replaced at once


def _splice(model: Any, tc: CrossLayerJumpReLU, layers: set[int]) -> list[Any]:
    """Hooks that replace the MLP output of `layers` with the reconstruction (position 0 kept, as measured)."""
    acts: dict[int, torch.Tensor] = {}

    def hook(layer: int) -> Any:
        def replace(module: Any, args: Any, output: Any) -> Any:
            acts[layer] = tc.encode_layer(args[0], layer)
            if layer not in layers:
                return None
            recon = tc.reconstruct(
                [acts.get(i, torch.zeros_like(acts[layer])) for i in range(layer + 1)], args[0], layer
            )
            return torch.cat([output[:, :1], recon[:, 1:]], dim=1)

        return replace

    return [block.mlp.register_forward_hook(hook(layer)) for layer, block in enumerate(model.transformer.h)]


def _loss_with(model: Any, tc: CrossLayerJumpReLU, layers: set[int], batches: list[torch.Tensor]) -> float:
    from lenstop.models.demo import metrics

    handles = _splice(model, tc, layers)
    try:
        return metrics.mean_loss(model, batches)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def quality(model: Any, tc: CrossLayerJumpReLU, batches: list[torch.Tensor]) -> TranscoderFigures:
    """FVU, L0 and dead features of `tc` on `batches` (BOS-first windows), each layer's MLP
    output reconstructed from the clean MLP inputs; position 0 (BOS) is left out, as in
    training and as circuit-tracer zeroes features there."""
    from lenstop.models.demo import metrics

    model.eval()
    tc = tc.to(next(model.parameters()).device)
    n = tc.n_layers
    sq_err, l0 = [0.0] * n, [0.0] * n
    ys: list[list[torch.Tensor]] = [[] for _ in range(n)]
    fired = [torch.zeros(tc.d_transcoder, dtype=torch.bool) for _ in range(n)]
    n_tokens = 0
    for tokens in batches:
        ins, outs = mlp_activations(model, tokens)
        acts = [tc.encode_layer(x[:, 1:], i) for i, x in enumerate(ins)]
        for layer in range(n):
            y = outs[layer][:, 1:]
            sq_err[layer] += (y - tc.reconstruct(acts, ins[layer][:, 1:], layer)).pow(2).sum().item()
            l0[layer] += (acts[layer] > 0).sum().item()
            fired[layer] |= (acts[layer] > 0).flatten(0, 1).any(0).cpu()
            ys[layer].append(y.flatten(0, 1))
        n_tokens += acts[0].shape[0] * acts[0].shape[1]
    rows = []
    for layer in range(n):
        y = torch.cat(ys[layer])
        variance = (y - y.mean(0)).pow(2).sum().item()
        rows.append(
            TranscoderQuality(
                layer=layer,
                fvu=sq_err[layer] / variance,
                mean_l0=l0[layer] / n_tokens,
                dead_fraction=1.0 - fired[layer].float().mean().item(),
                loss_spliced=_loss_with(model, tc, {layer}, batches),
            )
        )
    return TranscoderFigures(rows, metrics.mean_loss(model, batches), _loss_with(model, tc, set(range(n)), batches))


def replacement_scores(model_dir: Path, root: Path, prompts: list[str]) -> dict[str, float]:
    """circuit-tracer's replacement and completeness scores of the transcoders at `root`, averaged over
    attribution graphs of `prompts` (held-out text): the share of the tokens' influence on the salient
    next tokens that flows through features rather than error nodes, and the influence-weighted share of
    each node's input that does not come from an error. lenstop's graphs equal circuit-tracer's
    (tests/test_graph_circuit_tracer.py)."""
    from lenstop.models.dictionaries import replacement_of
    from lenstop.models.engine import Engine
    from lenstop.models.graphs import build_graph, graph_tokens

    handle = Engine.load(str(model_dir), [str(root)], device="cpu").handle
    replacement = replacement_of(handle.dictionaries, handle.n_layers)
    graphs = [build_graph(handle, replacement, graph_tokens(handle, p)[: handle.n_ctx]) for p in prompts]
    return {
        "replacement_score": sum(g.replacement_score for g in graphs) / len(graphs),
        "completeness_score": sum(g.completeness_score for g in graphs) / len(graphs),
        "graphs": len(graphs),
        "tokens": sum(g.n_pos for g in graphs) / len(graphs),
    }


def held_out_prompts(joined: str, n: int = 16, n_chars: int = 160, seed: int = 5) -> list[str]:
    """`n` stretches of held-out text of `n_chars` characters (about 50 tokens), drawn reproducibly; from the
    shipped held-out sample, so a test can draw them again."""
    import random

    rng = random.Random(seed)
    return [joined[start : start + n_chars] for start in (rng.randrange(0, len(joined) - n_chars) for _ in range(n))]
