"""Digests that key what lenstop caches by the content it was made from (the folder is `files.cache_dir`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


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
