"""Activation patching between a clean and a corrupted prompt, beside attribution
patching, its linear estimate (Nanda 2023), cell for cell.

With `clean->corrupt` the corrupted prompt runs and one activation at a time takes
its clean value: a cell is the share of the clean-minus-corrupted difference of
the metric it restores. With `corrupt->clean` the clean prompt runs and one
activation takes its corrupted value: a cell is the share it destroys. Grids:
each layer's residual stream (resid_pre) at each position, each head's output at
every position and at each position, and the features whose estimate is largest.
Every cell is its own batch row; `progress` hears the share done and `cancelled`
is asked between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from lenstop.models.circuits.metric import metric_value, resolve
from lenstop.models.circuits.results import FeaturePatch, MetricValue, Patching
from lenstop.models.circuits.spec import DIRECTIONS, Direction, Metric
from lenstop.models.circuits.tracing import (
    Edit,
    SetFeature,
    SetSite,
    Trace,
    Values,
    chunks,
    rows_within,
    run_rows,
    trace,
)
from lenstop.models.errors import CancelledError, UsageError
from lenstop.models.results import frozen_array

if TYPE_CHECKING:
    from lenstop.models.engine import Engine

ROWS = 32
Progress = Callable[[float], None]


class _Rows:
    """Runs edits in batches, each row's metric turned into its share of the clean-minus-corrupted difference."""

    def __init__(
        self,
        engine: Engine,
        tokens: torch.Tensor,
        metric: MetricValue,
        m_clean: float,
        m_corrupt: float,
        direction: Direction,
        total: int,
        progress: Progress | None,
        cancelled: Callable[[], bool] | None,
    ) -> None:
        self.engine, self.tokens, self.metric = engine, tokens, metric
        self.m_clean, self.m_corrupt, self.direction = m_clean, m_corrupt, direction
        self.total, self.done = max(1, total), 0
        self.progress, self.cancelled = progress, cancelled

    def share(self, patched: torch.Tensor) -> np.ndarray:
        diff = self.m_clean - self.m_corrupt
        moved = patched - self.m_corrupt if self.direction == "clean->corrupt" else self.m_clean - patched
        return (moved / diff).cpu().numpy()

    def run(self, make: Callable[[int, int], Edit], n: int) -> np.ndarray:
        """`make(row, cell)` is the edit of cell `cell` in batch row `row`; one share per cell."""
        out: list[np.ndarray] = []
        for cells in chunks(n, rows_within(self.engine, self.tokens.shape[-1], ROWS)):
            if self.cancelled is not None and self.cancelled():
                raise CancelledError("patching cancelled")
            edits = [make(row, cell) for row, cell in enumerate(cells)]
            logits = run_rows(self.engine, self.tokens, len(cells), edits)
            out.append(self.share(metric_value(logits, self.metric)))
            self.done += len(cells)
            if self.progress is not None:
                self.progress(self.done / self.total)
        return np.concatenate(out) if out else np.zeros(0)


def patch(
    engine: Engine,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    metric: Metric,
    *,
    direction: Direction = "clean->corrupt",
    head_positions: bool = True,
    features: int = 50,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[MetricValue, float, float, dict[str, np.ndarray], list[FeaturePatch]]:
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r}: expected {' or '.join(DIRECTIONS)}")
    found_clean, found_corrupt = (
        trace(engine, clean, differentiable=False),
        trace(engine, corrupt, differentiable=False),
    )
    assert isinstance(found_clean, Values) and isinstance(found_corrupt, Values)
    assert found_clean.logits is not None and found_corrupt.logits is not None
    mv = resolve(metric, engine.model.tokenizer, found_clean.logits, engine.token_strings)
    m_clean, m_corrupt = mv.clean, float(metric_value(found_corrupt.logits, mv)[0])
    if abs(m_clean - m_corrupt) < 1e-6:
        raise UsageError(
            f"{mv.describe()} is the same on both prompts ({m_clean:.4f}): there is no difference to patch"
        )
    base_tokens, base, source = (
        (corrupt, found_corrupt, found_clean) if direction == "clean->corrupt" else (clean, found_clean, found_corrupt)
    )
    layers, heads, seq = engine.n_layers, engine.n_heads, clean.shape[-1]

    # Attribution patching: the gradient at the base run, dotted with (source - base), as a share.
    tr = trace(engine, base_tokens, resid_leaves=True)
    assert isinstance(tr, Trace)
    grads = tr.grads(metric_value(tr.logits, mv)[0], keep_graph=False)
    del tr  # the graph holds a whole forward pass: not through every patching batch
    sign = 1.0 if direction == "clean->corrupt" else -1.0
    scale = sign / (m_clean - m_corrupt)

    def estimate(g: torch.Tensor, src: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return ((g.float() * (src - at).float()).sum(-1) * scale).cpu()  # layers may sit on other devices

    grids: dict[str, np.ndarray] = {
        "resid_estimate": torch.stack(
            [estimate(grads.resid[lay], source.resid[lay], base.resid[lay]) for lay in range(layers)]
        )
        .cpu()
        .numpy(),
    }
    per_head = torch.stack([estimate(grads.heads[lay], source.heads[lay], base.heads[lay]) for lay in range(layers)])
    grids["heads_estimate"] = per_head.sum(1).cpu().numpy()  # (layers, heads)
    grids["head_positions_estimate"] = per_head.permute(0, 2, 1).cpu().numpy()  # (layers, heads, seq)

    candidates: list[tuple[float, str, int, int, int]] = []
    for d in engine.dictionaries:
        f_src, f_base = source.feats[d.key], base.feats[d.key]
        est = (grads.feats[d.key].float() * (f_src - f_base).float()) * scale
        for pos, feature in ((f_src != 0) | (f_base != 0)).nonzero().tolist():
            candidates.append((float(est[pos, feature]), d.key, d.layer, pos, feature))
    candidates.sort(key=lambda c: -abs(c[0]))
    chosen = candidates[:features]

    cells = layers * seq + layers * heads + (layers * heads * seq if head_positions else 0) + len(chosen)
    rows = _Rows(engine, base_tokens, mv, m_clean, m_corrupt, direction, cells, progress, cancelled)
    grids["resid"] = rows.run(
        lambda row, c: SetSite("resid_pre", c // seq, row, c % seq, source.resid[c // seq][c % seq]), layers * seq
    ).reshape(layers, seq)
    grids["heads"] = rows.run(
        lambda row, c: SetSite("z", c // heads, row, None, source.heads[c // heads][:, c % heads], head=c % heads),
        layers * heads,
    ).reshape(layers, heads)
    if head_positions:

        def one(row: int, c: int) -> Edit:
            layer, rest = divmod(c, heads * seq)
            head, pos = divmod(rest, seq)
            return SetSite("z", layer, row, pos, source.heads[layer][pos, head], head=head)

        grids["head_positions"] = rows.run(one, layers * heads * seq).reshape(layers, heads, seq)
    restored = rows.run(
        lambda row, c: SetFeature(
            chosen[c][1], row, chosen[c][3], chosen[c][4], float(source.feats[chosen[c][1]][chosen[c][3], chosen[c][4]])
        ),
        len(chosen),
    )
    labels = {d.key: d.cards for d in engine.dictionaries}

    def act(run: Values, key: str, pos: int, feature: int) -> float:
        return float(run.feats[key][pos, feature])

    patches = [
        FeaturePatch(
            layer,
            pos,
            feature,
            float(r),
            est,
            labels[key].label(feature),
            act(found_clean, key, pos, feature),
            act(found_corrupt, key, pos, feature),
        )
        for (est, key, layer, pos, feature), r in zip(chosen, restored, strict=True)
    ]
    return mv, m_clean, m_corrupt, grids, patches


def as_result(
    engine: Engine,
    clean_prompt: str,
    corrupt_prompt: str,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    direction: Direction,
    found: tuple[MetricValue, float, float, dict[str, np.ndarray], list[FeaturePatch]],
) -> Patching:
    mv, m_clean, m_corrupt, grids, patches = found

    def grid(name: str) -> np.ndarray:
        return frozen_array(grids[name], np.float32)

    positions = "head_positions" in grids
    return Patching(
        clean_prompt=clean_prompt,
        corrupt_prompt=corrupt_prompt,
        tokens=tuple(engine.token_strings(clean[0].tolist())),
        corrupt_tokens=tuple(engine.token_strings(corrupt[0].tolist())),
        metric=mv,
        clean_metric=m_clean,
        corrupt_metric=m_corrupt,
        direction=direction,
        resid=grid("resid"),
        resid_estimate=grid("resid_estimate"),
        heads=grid("heads"),
        heads_estimate=grid("heads_estimate"),
        head_positions=grid("head_positions") if positions else None,
        head_positions_estimate=grid("head_positions_estimate") if positions else None,
        features=tuple(patches),
    )
