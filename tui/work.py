"""Engine calls off the UI thread, one way for every screen.

`EngineWork.start` runs a call in a thread worker of its kind's group (exclusive: a new request of a
kind replaces the worker before it), numbers the request, and posts what the call returns, a typed
message, or on any error the typed failure message `failed` makes of a `Failure`. A thread cannot be
stopped, so a superseded one runs on: its message carries its number, and a screen acts on it only when
`is_latest` says it is the newest of its kind. Between steps a call can ask `Job.stale()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker, get_current_worker

from lenstop.tui.failure import Failure


class Kind(StrEnum):
    """What a request is for; also its worker group (the app's quit and a screen's cancel read groups)."""

    LOAD = "load"
    ANALYSIS = "analysis"
    LENS = "lens"
    LAYER = "layer"
    GENERATE = "generate"
    CARD = "card"
    HEAD_ROLES = "head-roles"
    ATTRIBUTION = "attribution"
    CIRCUIT = "circuit"
    PATCHING = "patching"
    EFFECTS = "effects"
    GRAPH = "graph"
    GRAPH_SCORES = "graph-scores"
    GRAPH_PRUNE = "graph-prune"
    GRAPH_INTERVENE = "graph-intervene"
    GRAPH_EXPORT = "graph-export"
    FIND = "find"


Failed = Callable[[int, Failure], Message]  # the request's number and why it failed, as a message


@dataclass(frozen=True)
class Job:
    """One request, as its worker sees it."""

    kind: Kind
    request: int
    work: EngineWork
    worker: Worker[Any]

    def stale(self) -> bool:
        """A newer request of this kind was made (or the worker was cancelled): what this one finds is not wanted."""
        return self.worker.is_cancelled or not self.work.is_latest(self.kind, self.request)

    def post(self, message: Message) -> None:
        self.work.node.post_message(message)

    def step(self, call: Callable[[], Message | None], failed: Failed | None) -> None:
        """Run `call` and post the message it returns; if it raises, post `failed`'s (with no `failed`, nothing).
        Whatever went wrong is said on screen, never raised: the app stays up."""
        try:
            message = call()
        except BaseException as err:  # anything: an engine's error, lenstop's own, an interrupt in the thread
            if failed is not None:
                self.post(failed(self.request, Failure.of(err)))
            return
        if message is not None:
            self.post(message)


class EngineWork:
    """A screen's engine calls, and the latest request of each kind."""

    def __init__(self, node: DOMNode) -> None:
        self.node = node
        self._latest: dict[Kind, int] = {}

    def latest(self, kind: Kind) -> int:
        return self._latest.get(kind, 0)

    def is_latest(self, kind: Kind, request: int) -> bool:
        return request == self.latest(kind)

    def supersede(self, kind: Kind) -> int:
        """A new request of `kind`, made without a call: whatever of it is on its way is no longer wanted."""
        self._latest[kind] = self.latest(kind) + 1
        return self._latest[kind]

    def start(self, kind: Kind, call: Callable[[Job], Message | None], failed: Failed | None = None) -> int:
        """Run `call` in a thread worker as the newest request of `kind`, and post its message; its number."""
        request = self.supersede(kind)

        def body() -> None:
            job = Job(kind, request, self, get_current_worker())
            job.step(lambda: call(job), failed)

        self.node.run_worker(body, name=kind.value, group=kind.value, exclusive=True, thread=True, exit_on_error=False)
        return request
