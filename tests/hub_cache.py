"""Plant a Hugging Face hub cache by hand, in the layout `huggingface_hub` itself writes.

The hub is unreachable here, so the hub loaders are proven on a cache that holds
what a user's cache holds after `from_pretrained`: `models--OWNER--NAME/` with
`blobs/` named by content hash, `snapshots/<commit>/` of relative symlinks into
them, and `refs/main` naming the commit. The repositories mimic real ones file
for file (`gpt2`; SAELens's `gpt2-small-res-jb` release, which lives in
`jbloom/GPT2-Small-SAEs-Reformatted`), with random weights of the real shapes
and a made-up tokenizer of GPT-2's vocabulary size, since GPT-2's own merges are
not on this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

GPT2_COMMIT = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
RES_JB_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
RES_JB_COMMIT = "8b3f8a9e0f2c4d51a6e7b9c0d1e2f3a4b5c6d7e8"

GPT2_CONFIG: dict[str, Any] = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


def _repo(cache: Path, repo_id: str, commit: str) -> Path:
    """Create `models--owner--name` with `refs/main` pointing at `commit`; return the snapshot folder."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _add(snapshot: Path, filename: str, write: object) -> None:
    """Write one file as the hub does: the bytes in `blobs/<sha256>`, a relative symlink in the snapshot."""
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    staging = blobs / f".{filename.replace('/', '_')}.incomplete"
    if isinstance(write, bytes):
        staging.write_bytes(write)
    else:
        write(staging)  # type: ignore[operator]
    digest = hashlib.sha256()
    with staging.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    blob = blobs / digest.hexdigest()
    staging.replace(blob)
    link = snapshot / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in its vocabulary's order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]


def gpt2_tokenizer_files() -> dict[str, bytes]:
    """GPT-2's tokenizer files and vocabulary size (50,257), with made-up merges: every byte pair."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = byte_symbols()
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for first in alphabet:
        for second in alphabet:
            if len(merges) == 50000:
                break
            merges.append((first, second))
            vocab[first + second] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == GPT2_CONFIG["vocab_size"]

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return {
        "tokenizer.json": tokenizer.to_str().encode(),
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
        "merges.txt": merges_txt.encode(),
        "tokenizer_config.json": _json({"model_max_length": 1024}),
    }


def plant_gpt2(cache: Path, seed: int = 0) -> None:
    """The `gpt2` repository as `from_pretrained` leaves it: config, safetensors weights, tokenizer."""
    snapshot = _repo(cache, "gpt2", GPT2_COMMIT)
    _add(snapshot, "config.json", _json(GPT2_CONFIG))
    _add(
        snapshot,
        "generation_config.json",
        _json({"_from_model_config": True, "bos_token_id": 50256, "eos_token_id": 50256}),
    )
    for name, content in gpt2_tokenizer_files().items():
        _add(snapshot, name, content)

    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    model = GPT2Model(GPT2Config(**GPT2_CONFIG))
    # The hub's file is a GPT2Model's state dict (no `transformer.` prefix, tied unembedding), causal masks included.
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    mask = torch.tril(torch.ones(1024, 1024, dtype=torch.float32)).view(1, 1, 1024, 1024)
    for layer in range(GPT2_CONFIG["n_layer"]):
        weights.setdefault(f"h.{layer}.attn.bias", mask.clone())
    _add(snapshot, "model.safetensors", lambda path: save_file(weights, str(path), metadata={"format": "pt"}))


def res_jb_cfg(layer: int, d_in: int = 768, d_sae: int = 24576) -> dict[str, object]:
    """The cfg.json that the release's folders hold: a pre-6.0 SAELens training config (of other widths, for a
    smaller model)."""
    hook = f"blocks.{layer}.hook_resid_pre"
    return {
        "model_name": "gpt2-small",
        "hook_point": hook,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/{hook}",
        "d_in": d_in,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "mps",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": 32,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae,
        "tokens_per_buffer": 67108864,
        "run_name": "24576-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }


def plant_res_jb(
    cache: Path, layers: tuple[int, ...] = (8,), seed: int = 0, d_in: int = 768, d_sae: int = 24576
) -> None:
    """The folders of `gpt2-small-res-jb` asked for: cfg.json, sae_weights.safetensors, sparsity.safetensors;
    of GPT-2 small's widths unless others are asked for (the demo model's, to load the release on it)."""
    snapshot = _repo(cache, RES_JB_REPO, RES_JB_COMMIT)
    generator = torch.Generator().manual_seed(seed)
    for layer in layers:
        folder = f"blocks.{layer}.hook_resid_pre"
        _add(snapshot, f"{folder}/cfg.json", _json(res_jb_cfg(layer, d_in, d_sae)))
        w_dec = torch.randn(d_sae, d_in, generator=generator)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        weights = {
            "W_enc": w_dec.T.contiguous(),
            "b_enc": -0.7 - 0.1 * torch.rand(d_sae, generator=generator),
            "W_dec": w_dec,
            "b_dec": 0.05 * torch.randn(d_in, generator=generator),
        }
        _add(snapshot, f"{folder}/sae_weights.safetensors", lambda path, w=weights: save_file(w, str(path)))
        sparsity = {"sparsity": -3.0 - torch.rand(d_sae, generator=generator)}
        _add(snapshot, f"{folder}/sparsity.safetensors", lambda path, s=sparsity: save_file(s, str(path)))
