"""TransformerLens hook names, spelled in one place.

Every part of lenstop that hooks the model names the point through these
functions, so a change of naming (or a model family whose points differ) is one
edit, and a typo is a NameError rather than a hook that never fires.
"""

from __future__ import annotations

FINAL_SCALE = "ln_final.hook_scale"  # the final LayerNorm's scale, frozen by direct attribution


def resid_pre(layer: int) -> str:
    """The residual stream entering block `layer`."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    """The residual stream leaving block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def mlp_in(layer: int) -> str:
    """What block `layer`'s MLP reads (its norm's output): a transcoder's input."""
    return f"blocks.{layer}.mlp.hook_in"


def mlp_out(layer: int) -> str:
    """What block `layer`'s MLP writes to the residual stream."""
    return f"blocks.{layer}.hook_mlp_out"


def z(layer: int) -> str:
    """Each head's output before the output projection, (batch, seq, heads, d_head)."""
    return f"blocks.{layer}.attn.hook_z"


def v(layer: int) -> str:
    """Each head's values, (batch, seq, kv heads, d_head)."""
    return f"blocks.{layer}.attn.hook_v"


def pattern(layer: int) -> str:
    """Each head's attention pattern, (batch, heads, query, key)."""
    return f"blocks.{layer}.attn.hook_pattern"
