"""Independent references: the Hugging Face model itself, TransformerLens's own
run_with_cache, and SAELens's own encode, each driven directly by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def hf_model(path: Path) -> Any:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")
    return model.eval()


def bridge(path: Path) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(path), device="cpu")


def load_sae(path: Path) -> Any:
    from sae_lens import SAE

    return SAE.load_from_disk(path).eval()


def hf_residuals(model: Any, tokens: torch.Tensor) -> list[torch.Tensor]:
    """resid_pre of every block, then resid_post of the last block (before ln_f), from HF's own forward.

    HF's last hidden state has ln_f applied, so the final residual is recovered
    with a forward hook on ln_f's input instead.
    """
    seen: dict[str, torch.Tensor] = {}
    handle = model.transformer.ln_f.register_forward_pre_hook(lambda m, a: seen.__setitem__("final", a[0]))
    with torch.no_grad():
        out = model(tokens, output_hidden_states=True)
    handle.remove()
    return [h[0] for h in out.hidden_states[:-1]] + [seen["final"][0]]


def hf_logits_with_resid_edit(model: Any, tokens: torch.Tensor, layer: int, edit: Any) -> torch.Tensor:
    """Logits when `edit(resid)` replaces the residual entering block `layer`."""
    return hf_with_resid_edit(model, tokens, layer, edit).logits[0]


def hf_with_resid_edit(model: Any, tokens: torch.Tensor, layer: int, edit: Any, **kwargs: Any) -> Any:
    """The model's output (`kwargs` ask for more, e.g. attentions) when `edit(resid)` replaces the residual
    entering block `layer`."""

    def pre(module: Any, args: tuple, kwargs: dict) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        edited = edit(hidden[0].clone()).unsqueeze(0)
        if args:
            return (edited, *args[1:]), kwargs
        kwargs["hidden_states"] = edited
        return args, kwargs

    handle = model.transformer.h[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            return model(tokens, **kwargs)
    finally:
        handle.remove()
