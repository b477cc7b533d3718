"""lenstop's cache folder, and the digests that key what it holds by the content it was made from."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch


def cache_dir() -> Path:
    """`$LENSTOP_CACHE`, else `$XDG_CACHE_HOME/lenstop`, else `~/.cache/lenstop`."""
    if explicit := os.environ.get("LENSTOP_CACHE"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lenstop"


def tensor_digest(prefix: str, tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A digest of `prefix` and of each named tensor's shape and a strided sample of its values: cheap on
    weights of any size, on any device, and any retraining moves it."""
    digest = hashlib.sha256(prefix.encode())
    with torch.no_grad():
        for name, tensor in tensors:
            flat = tensor.detach().flatten()
            probe = flat[:: max(1, flat.numel() // 4096)].double()
            digest.update(
                f"{name}{tuple(tensor.shape)}{probe.sum().item():.10e}{probe.abs().sum().item():.10e}".encode()
            )
    return digest.hexdigest()[:24]
