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
from dataclasses import dataclass

import numpy as np
import torch

from lenstop.models.circuits.metric import metric_value
from lenstop.models.circuits.passes import Values, differentiable_pass
from lenstop.models.circuits.results import FeaturePatch, Patching
from lenstop.models.circuits.rows import Edit, SetFeature, SetSite, chunks, rows_within, run_rows
from lenstop.models.circuits.setup import Setup
from lenstop.models.circuits.spec import DIRECTIONS, Direction
from lenstop.models.errors import CancelledError, UsageError
from lenstop.models.results import frozen_array

ROWS = 32
Progress = Callable[[float], None]
Candidate = tuple[float, str, int, int, int]  # a feature's estimate, its dictionary's key, layer, position, feature


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction {direction!r}: expected {' or '.join(DIRECTIONS)}")


@dataclass(frozen=True)
class _Runs:
    """The two runs as the direction orients them: `base` runs, and `source` gives the values patched in."""

    tokens: torch.Tensor
    base: Values
    source: Values
    direction: Direction

    @classmethod
    def of(cls, s: Setup, direction: Direction) -> _Runs:
        assert s.prompts.corrupt is not None
        if direction == "clean->corrupt":
            return cls(s.prompts.corrupt, s.base, s.values, direction)
        return cls(s.tokens, s.values, s.base, direction)


def patch(
    s: Setup,
    *,
    direction: Direction = "clean->corrupt",
    head_positions: bool = True,
    features: int = 50,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Patching:
    """Every cell patched, beside its estimate; `s` is the clean prompt's set-up with the corrupted one for
    baseline."""
    mv = s.metric  # 1. the metric on both prompts, which must differ
    assert s.base.logits is not None
    m_clean, m_corrupt = mv.clean, float(metric_value(s.base.logits, mv)[0])
    if abs(m_clean - m_corrupt) < 1e-6:
        raise UsageError(
            f"{mv.describe()} is the same on both prompts ({m_clean:.4f}): there is no difference to patch"
        )
    runs = _Runs.of(s, direction)  # 2. which run is patched, from which
    sign = 1.0 if direction == "clean->corrupt" else -1.0
    grids, candidates = _estimates(s, runs, sign / (m_clean - m_corrupt))  # 3. attribution patching
    chosen = sorted(candidates, key=lambda c: -abs(c[0]))[:features]
    layers, heads, seq = s.handle.n_layers, s.handle.n_heads, s.prompts.seq
    cells = layers * seq + layers * heads + (layers * heads * seq if head_positions else 0) + len(chosen)
    rows = _Rows(s, runs, m_clean, m_corrupt, cells, progress, cancelled)  # 4. activation patching, cell by cell
    grids.update(_patched_sites(rows, runs.source, head_positions))
    patches = _patched_features(rows, runs.source, chosen)
    return _result(s, direction, m_corrupt, grids, patches)  # 5. packaged


def _estimates(s: Setup, runs: _Runs, scale: float) -> tuple[dict[str, np.ndarray], list[Candidate]]:
    """Attribution patching: the gradient at the base run dotted with (source - base), as a share; the grids'
    estimates, and every feature active on either run with its own."""
    tr = differentiable_pass(s.handle, runs.tokens, resid_leaves=True)
    grads = tr.grads(metric_value(tr.logits, s.metric)[0], keep_graph=False)
    del tr  # the graph holds a whole forward pass: not through every patching batch
    source, base, layers = runs.source, runs.base, range(s.handle.n_layers)

    def estimate(g: torch.Tensor, src: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return ((g.float() * (src - at).float()).sum(-1) * scale).cpu()  # layers may sit on other devices

    grids: dict[str, np.ndarray] = {
        "resid_estimate": torch.stack(
            [estimate(grads.resid[lay], source.resid[lay], base.resid[lay]) for lay in layers]
        )
        .cpu()
        .numpy(),
    }
    per_head = torch.stack([estimate(grads.heads[lay], source.heads[lay], base.heads[lay]) for lay in layers])
    grids["heads_estimate"] = per_head.sum(1).cpu().numpy()  # (layers, heads)
    grids["head_positions_estimate"] = per_head.permute(0, 2, 1).cpu().numpy()  # (layers, heads, seq)
    candidates: list[Candidate] = []
    for d in s.handle.dictionaries:
        f_src, f_base = source.feats[d.key], base.feats[d.key]
        est = (grads.feats[d.key].float() * (f_src - f_base).float()) * scale
        for pos, feature in ((f_src != 0) | (f_base != 0)).nonzero().tolist():
            candidates.append((float(est[pos, feature]), d.key, d.layer, pos, feature))
    return grids, candidates


def _patched_sites(rows: _Rows, source: Values, head_positions: bool) -> dict[str, np.ndarray]:
    """Each layer's residual stream at each position, and each head at every position and at each, patched."""
    layers, heads, seq = rows.s.handle.n_layers, rows.s.handle.n_heads, rows.s.prompts.seq
    grids: dict[str, np.ndarray] = {
        "resid": rows.run(
            lambda row, c: SetSite("resid_pre", c // seq, row, c % seq, source.resid[c // seq][c % seq]), layers * seq
        ).reshape(layers, seq),
        "heads": rows.run(
            lambda row, c: SetSite("z", c // heads, row, None, source.heads[c // heads][:, c % heads], head=c % heads),
            layers * heads,
        ).reshape(layers, heads),
    }
    if head_positions:

        def one(row: int, c: int) -> Edit:
            layer, rest = divmod(c, heads * seq)
            head, pos = divmod(rest, seq)
            return SetSite("z", layer, row, pos, source.heads[layer][pos, head], head=head)

        grids["head_positions"] = rows.run(one, layers * heads * seq).reshape(layers, heads, seq)
    return grids


def _patched_features(rows: _Rows, source: Values, chosen: list[Candidate]) -> list[FeaturePatch]:
    """The chosen features patched, each beside its estimate and its activation on both runs."""

    def one(row: int, c: int) -> Edit:
        _, key, _, pos, feature = chosen[c]
        return SetFeature(key, row, pos, feature, float(source.feats[key][pos, feature]))

    restored = rows.run(one, len(chosen))
    s = rows.s
    cards = {d.key: d.cards for d in s.handle.dictionaries}
    return [
        FeaturePatch(
            layer,
            pos,
            feature,
            float(r),
            est,
            cards[key].label(feature),
            float(s.values.feats[key][pos, feature]),
            float(s.base.feats[key][pos, feature]),
        )
        for (est, key, layer, pos, feature), r in zip(chosen, restored, strict=True)
    ]


class _Rows:
    """Runs edits in batches, each row's metric turned into its share of the clean-minus-corrupted difference."""

    def __init__(
        self,
        s: Setup,
        runs: _Runs,
        m_clean: float,
        m_corrupt: float,
        total: int,
        progress: Progress | None,
        cancelled: Callable[[], bool] | None,
    ) -> None:
        self.s, self.runs = s, runs
        self.m_clean, self.m_corrupt = m_clean, m_corrupt
        self.total, self.done = max(1, total), 0
        self.progress, self.cancelled = progress, cancelled

    def share(self, patched: torch.Tensor) -> np.ndarray:
        diff = self.m_clean - self.m_corrupt
        moved = patched - self.m_corrupt if self.runs.direction == "clean->corrupt" else self.m_clean - patched
        return (moved / diff).cpu().numpy()

    def run(self, make: Callable[[int, int], Edit], n: int) -> np.ndarray:
        """`make(row, cell)` is the edit of cell `cell` in batch row `row`; one share per cell."""
        out: list[np.ndarray] = []
        for cells in chunks(n, rows_within(self.s.handle, self.s.prompts.seq, ROWS)):
            if self.cancelled is not None and self.cancelled():
                raise CancelledError("patching cancelled")
            edits = [make(row, cell) for row, cell in enumerate(cells)]
            logits = run_rows(self.s.handle, self.runs.tokens, len(cells), edits)
            out.append(self.share(metric_value(logits, self.s.metric)))
            self.done += len(cells)
            if self.progress is not None:
                self.progress(self.done / self.total)
        return np.concatenate(out) if out else np.zeros(0)


def _result(
    s: Setup, direction: Direction, m_corrupt: float, grids: dict[str, np.ndarray], patches: list[FeaturePatch]
) -> Patching:
    def grid(name: str) -> np.ndarray:
        return frozen_array(grids[name], np.float32)

    assert s.prompts.corrupt is not None and s.prompts.corrupt_text is not None
    positions = "head_positions" in grids
    return Patching(
        clean_prompt=s.prompts.text,
        corrupt_prompt=s.prompts.corrupt_text,
        tokens=tuple(s.handle.token_strings(s.tokens[0].tolist())),
        corrupt_tokens=tuple(s.handle.token_strings(s.prompts.corrupt[0].tolist())),
        metric=s.metric,
        clean_metric=s.metric.clean,
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
