"""Factories for tiny models and dictionaries built on the fly: no downloads.

`build_model` saves a random GPT-2-style model as a local Hugging Face directory
(config.json, model.safetensors, tokenizer files), the same shape of thing a user
points lenstop at. `build_sae` saves a random SAE in SAELens's own disk format
from SAELens's own config classes. `assert_same_analysis` compares two analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenstop.models.errors import ExitCode
from lenstop.models.results import Analysis

CORPUS = [
    "def add(first, second):\n    return first + second\n",
    "import os\nimport sys\nfrom pathlib import Path\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "for i in range(10):\n    print(i, i * i)\n",
]


def build_tokenizer(vocab_size: int = 320) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def build_model(
    path: Path, *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 64, seed: int = 0
) -> Path:
    """A random GPT-2 saved as a local Hugging Face directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_ctx,
        n_ctx=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    # Random LayerNorm gains and biases, so that folding and centring change something.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name:
                param.add_(0.3 * torch.randn_like(param))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_sae(
    path: Path,
    *,
    hook: str,
    d_in: int,
    d_sae: int = 64,
    architecture: str = "standard",
    hook_out: str | None = None,
    d_out: int | None = None,
    model_from_pretrained_kwargs: dict[str, Any] | None = None,
    model_class_name: str | None = "HookedTransformer",
    prepend_bos: bool = True,
    normalize_activations: str = "none",
    seed: int = 0,
) -> Path:
    """A random SAELens dictionary saved with `save_model`; about a third of its features fire."""
    from sae_lens import SAE
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(
        model_name="tiny",
        hook_name=hook,
        prepend_bos=prepend_bos,
        model_class_name=model_class_name,
        model_from_pretrained_kwargs=model_from_pretrained_kwargs or {},
    )
    if hook_out is not None:
        metadata.hook_name_out = hook_out
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "normalize_activations": normalize_activations,
        "metadata": metadata.to_dict(),
    }
    if architecture == "topk":
        cfg["k"] = 8
    if architecture in ("transcoder", "skip_transcoder", "jumprelu_transcoder"):
        cfg["d_out"] = d_out or d_in
        cfg["apply_b_dec_to_input"] = False
    if hook.endswith("hook_z"):
        cfg["reshape_activations"] = "hook_z"
    torch.manual_seed(seed)
    sae = SAE.from_dict(cfg)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name == "threshold":
                param.fill_(0.05)
            elif name.startswith("b_") or name.startswith("r_"):
                param.normal_(0, 0.05)
            else:
                param.normal_(0, 1.0 / param.shape[0] ** 0.5)
    sae.save_model(path)
    return path


def assert_same_analysis(a: Analysis, b: Analysis) -> None:
    """Two analyses read the same: tokens, features, predictions, attention and KL."""
    assert a.tokens == b.tokens
    for la, lb in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(la.top_ids, lb.top_ids)
        np.testing.assert_allclose(la.top_acts, lb.top_acts, atol=1e-6)
    np.testing.assert_array_equal(a.predictions.ids, b.predictions.ids)
    np.testing.assert_allclose(a.predictions.probs, b.predictions.probs, atol=1e-6)
    for xa, xb in zip(a.attention, b.attention, strict=True):
        np.testing.assert_allclose(xa.weights, xb.weights, atol=1e-6)
    if a.kl is not None or b.kl is not None:
        assert a.kl is not None and b.kl is not None
        np.testing.assert_allclose(a.kl, b.kl, atol=1e-6)


def one_line(result: Any, code: ExitCode, *words: str) -> str:
    """A CliRunner result that failed with `code` and one line on stderr holding each of `words`; that line."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenstop: error:"), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
