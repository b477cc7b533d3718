"""Each head's role on a standard task, the way the induction-head papers measure it:
sequences of random tokens repeated once, where a previous-token head attends to the
token before, a duplicate-token head to the earlier copy of the current token, and an
induction head to the token after that copy.

Computed once per model (its name, weight processing and a fingerprint of its
weights) and kept in the user's cache directory, written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lenstop.models.circuits.results import HeadRoles
from lenstop.models.digests import tensor_digest
from lenstop.models.errors import LenstopError, read_json
from lenstop.models.files import cache_dir, write_json
from lenstop.models.head_scores import HeadScores, head_scores
from lenstop.models.runtime import hook_names

if TYPE_CHECKING:
    from lenstop.models.runtime.handle import ModelHandle

SEQUENCES, SPAN, SEED = 8, 30, 0
VERSION = 1  # of the task and the file: a change makes old files stale
CACHE_LIMIT = 16 * 2**20  # bytes: a model of 200 layers of 200 heads writes about 2 MB


def fingerprint(handle: ModelHandle) -> str:
    """A digest of what the roles depend on: the model's name, its weight processing, and its weights."""
    prefix = f"v{VERSION}|{handle.name}|{handle.processing.describe()}|{handle.prepend_bos}"
    return tensor_digest(prefix, handle.model.named_parameters())


def compute(handle: ModelHandle, sequences: int = SEQUENCES, span: int = SPAN, seed: int = SEED) -> HeadRoles:
    """Run the task: `sequences` of `span` random tokens repeated once, after BOS when the model uses one."""
    tokenizer = handle.model.tokenizer
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    picks = allowed[torch.stack([torch.randperm(len(allowed), generator=generator)[:span] for _ in range(sequences)])]
    tokens = torch.cat([picks, picks], dim=1)
    bos = tokenizer.bos_token_id
    if handle.prepend_bos and bos is not None:
        tokens = torch.cat([torch.full((sequences, 1), bos), tokens], dim=1)
    tokens = tokens[:, : handle.n_ctx].to(handle.model.cfg.device)
    patterns: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Any:
        def hook(x: torch.Tensor, hook: Any) -> None:
            patterns[layer] = x.detach().float().cpu()

        return hook

    hooks = [(hook_names.pattern(layer), keep(layer)) for layer in range(handle.n_layers)]
    with handle.hooks(hooks):
        handle.model(tokens)
    layers = []
    for layer in range(handle.n_layers):
        per_sequence = [
            head_scores(patterns[layer][b].numpy().astype(np.float32), tokens[b].tolist()) for b in range(sequences)
        ]
        layers.append(tuple(_mean([s[h] for s in per_sequence]) for h in range(handle.n_heads)))
    return HeadRoles(handle.name, tuple(layers), sequences, span)


def _mean(scores: list[HeadScores]) -> HeadScores:
    def avg(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    return HeadScores(
        avg([s.previous for s in scores]), avg([s.duplicate for s in scores]), avg([s.induction for s in scores])
    )


def read(path: Path) -> HeadRoles | None:
    """The cached roles, or None when the file is missing, unreadable, of the wrong shape or from another
    version: a cache is only ever a shortcut, so a bad one is computed again and overwritten, never a crash."""
    try:
        doc = read_json(path, "", what=f"head-roles cache {path}", limit=CACHE_LIMIT)
    except LenstopError:
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        return None
    layers, model, sequences, span = doc.get("layers"), doc.get("model"), doc.get("sequences"), doc.get("span")
    if not (isinstance(layers, list) and isinstance(model, str) and isinstance(sequences, int)):
        return None
    if not (isinstance(span, int) and _whole(sequences) and _whole(span)):
        return None
    try:
        found = tuple(tuple(HeadScores(*_scores(scores)) for scores in layer) for layer in layers)
    except (TypeError, ValueError):
        return None
    return HeadRoles(model, found, sequences, span)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _scores(scores: object) -> tuple[float | None, ...]:
    """A head's three scores, each a number or null; anything else is a ValueError."""
    if not isinstance(scores, list) or len(scores) != 3:
        raise ValueError("not three scores")
    if not all(s is None or (isinstance(s, int | float) and not isinstance(s, bool)) for s in scores):
        raise ValueError("a score is not a number")
    try:
        return tuple(None if s is None else float(s) for s in scores)
    except OverflowError:  # an integer beyond any float (10**400): not a score lenstop wrote
        raise ValueError("a score is out of range") from None


def write(path: Path, roles: HeadRoles) -> None:
    """Atomically, so that two sessions computing the same roles never leave half a file."""
    doc = {
        "version": VERSION,
        "model": roles.model,
        "sequences": roles.sequences,
        "span": roles.span,
        "layers": [[[s.previous, s.duplicate, s.induction] for s in layer] for layer in roles.layers],
    }
    write_json(path, doc)


def head_roles(handle: ModelHandle, *, refresh: bool = False) -> tuple[HeadRoles, Path]:
    """The model's head roles from the cache, or computed (and cached) when missing, stale or `refresh`."""
    path = cache_dir() / "head-roles" / f"{fingerprint(handle)}.json"
    cached = None if refresh else read(path)
    if cached is not None and [len(layer) for layer in cached.layers] == [handle.n_heads] * handle.n_layers:
        return cached, path
    roles = compute(handle)
    try:
        write(path, roles)
    except OSError:
        pass  # a read-only home: the roles are still right, only not kept
    return roles, path
