"""The clean prompt's block outputs, recorded and replayed.

An intervention at layer L changes nothing upstream of L: a pass under it can give blocks 0..L-1
the outputs they had on the clean prompt instead of computing them again. TransformerLens's
bridge cannot start a pass at a layer (`forward(start_at_layer=...)` raises NotImplementedError,
since Hugging Face's model owns the loop over its layers), so the loop still runs, but each
replayed block returns its recorded output at once. Every hook lenstop edits sits inside a block
(`dictionaries.layer_of`), so the replayed blocks would have computed exactly what they return;
hooks of one's own on those blocks (`Engine.hooks`) do not fire in a replayed pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

Outputs = dict[int, Any]  # layer -> what its block returned: a tensor, or a tuple led by one

# Hugging Face configuration fields of models whose layers hand state to later layers beyond what a block
# returns (Gemma 3n's and Gemma 4's keys and values shared across layers, AltUp's parallel streams): a
# replayed block would not hand it on. The engine also stops replaying if a replayed pass fails.
_CROSS_LAYER_STATE = ("num_kv_shared_layers", "altup_num_inputs")


def supported(model: Any) -> bool:
    """Whether the model's blocks can be replayed: none of them hands state on beside its output."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    configs = [c for c in (config, getattr(config, "text_config", None)) if c is not None]
    return not any(getattr(c, name, None) for c in configs for name in _CROSS_LAYER_STATE)


@contextmanager
def recording(blocks: Sequence[torch.nn.Module], into: Outputs) -> Iterator[None]:
    """Keep each block's output in `into`, by layer, for the duration of one pass."""
    handles = []
    for layer, block in enumerate(blocks):

        def keep(module: torch.nn.Module, args: Any, output: Any, layer: int = layer) -> None:
            into[layer] = output

        handles.append(block.register_forward_hook(keep))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replaying(blocks: Sequence[torch.nn.Module], outputs: Outputs, upto: int) -> Iterator[None]:
    """Blocks 0..upto-1 return their recorded outputs instead of running, for the duration of one pass."""
    with ExitStack() as stack:
        for layer in range(min(upto, len(blocks))):
            stack.enter_context(_returning(blocks[layer], outputs[layer]))
        yield


@contextmanager
def _returning(block: torch.nn.Module, output: Any) -> Iterator[None]:
    # Straight into the instance's __dict__: the bridge's components pass attribute writes on to the Hugging
    # Face module they wrap. Accelerate's device-map hooks may have set an instance forward: it is put back.
    own = block.__dict__.get("forward")
    object.__setattr__(block, "forward", lambda *args, **kwargs: output)
    try:
        yield
    finally:
        if own is None:
            object.__delattr__(block, "forward")
        else:
            object.__setattr__(block, "forward", own)


def resid_post(output: Any) -> torch.Tensor:
    """The residual stream a block's output carries, (seq, d_model)."""
    first = output[0] if isinstance(output, tuple) else output
    return first[0].detach()
