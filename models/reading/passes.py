"""The forward passes reading makes: with a run plan's hooks, recording the clean prompt's block outputs
or replaying them (models/replay.py), or cut short once a hook has read what it came for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from lenstop.models.errors import LenstopError
from lenstop.models.interventions import Intervention
from lenstop.models.reading.cache import ReadingCache, kept_for
from lenstop.models.replay import Outputs, recording, replaying, supported
from lenstop.models.runtime.handle import EnoughRead, ModelHandle, check_finite_output
from lenstop.models.runtime.run_plan import RunPlan

Replay = tuple[Outputs, int]  # the clean prompt's block outputs, and the layer before which they are replayed


class Passes:
    """Forward passes over the handle's model, the clean prompt's block outputs replayed where they serve."""

    def __init__(self, handle: ModelHandle, cache: ReadingCache) -> None:
        self.handle = handle
        self.cache = cache
        self.replay_ok = supported(handle.model)  # see models/replay.py

    def run(
        self,
        tokens: torch.Tensor,
        interventions: Sequence[Intervention],
        *,
        lens: bool = False,
        record: Outputs | None = None,
        replay: Replay | None = None,
        **plan: Any,
    ) -> tuple[torch.Tensor, RunPlan]:
        """One pass with the hooks of a plan (`RunPlan`'s options); returns the logits (seq, vocab) and the
        plan with what it captured, each layer's residual stream among it with `lens`. `record` keeps each
        block's output; `replay` (outputs, L) gives blocks 0..L-1 those outputs instead."""
        n_layers = self.handle.n_layers
        run = RunPlan.on(
            self.handle, interventions, tokens.shape[-1], resid_layers=range(n_layers) if lens else (), **plan
        )
        logits = self.forward(tokens, run.hooks, record=record, replay=replay)[0]
        return check_finite_output(logits, interventions), run

    def forward(
        self,
        tokens: torch.Tensor,
        hooks: Sequence[tuple[str, Callable[..., Any]]],
        *,
        record: Outputs | None = None,
        replay: Replay | None = None,
    ) -> Any:
        """The model's output on `tokens` with `hooks`, recording or replaying blocks as asked. A replayed pass
        that fails (the model's blocks hand something on that a replayed one does not) runs again with every
        block, and replay is off from then on: the hooks fire again in full, overwriting what they captured."""
        try:
            with self.handle.guard(tokens.shape[-1]), self.handle.hooks(hooks), self._blocks(record, replay):
                return self.handle.model(tokens)
        except Exception as err:
            if replay is None or isinstance(err, LenstopError | EnoughRead):
                raise
            self.replay_off()
            return self.forward(tokens, hooks, record=record)

    def _blocks(self, record: Outputs | None, replay: Replay | None) -> AbstractContextManager[None]:
        if record is not None:
            return recording(self.handle.model.blocks, record)
        if replay is not None:
            return replaying(self.handle.model.blocks, *replay)
        return nullcontext()

    def replay(self, ids: tuple[int, ...], upto: int) -> Replay | None:
        """The clean prompt's block outputs to replay before layer `upto`, if the last clean analysis was of `ids`."""
        recorded = kept_for(self.cache.blocks, ids)
        if not self.replay_ok or recorded is None or upto <= 0:
            return None
        return recorded, upto

    def replay_off(self) -> None:
        self.replay_ok, self.cache.blocks = False, None

    def read_at(
        self,
        tokens: torch.Tensor,
        ids: tuple[int, ...],
        layer: int,
        upstream: Sequence[Intervention],
        stops: Sequence[tuple[str, Callable[..., Any]]] = (),
        **plan: Any,
    ) -> tuple[RunPlan, object]:
        """One pass under the `upstream` interventions that a hook at `layer` (the plan's, or one of `stops`,
        which fire after it) ends by raising `EnoughRead`; the blocks before the first layer it touches replay
        the clean prompt's outputs. Returns the plan, with what it captured, and what the hook carried out."""
        run = RunPlan.on(self.handle, upstream, tokens.shape[-1], **plan)
        replay = self.replay(ids, min([layer, *(iv.layer for iv in upstream)]))
        try:
            self.forward(tokens, [*run.hooks, *stops], replay=replay)
        except EnoughRead as enough:
            return run, enough.args[0]
        raise RuntimeError(f"the pass ended without reaching what it came to read at layer {layer}")
