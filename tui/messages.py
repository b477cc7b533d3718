"""Events the workers post to the app, named for what happened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class LoadProgressed(Message):
    step: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadProgressed)


@dataclass
class EngineLoaded(Message):
    engine: Any
    seconds: float


@dataclass
class LoadFailed(Message):
    error: str


@dataclass
class AnalysisFinished(Message):
    request: int
    analysis: Any
    seconds: float


@dataclass
class AnalysisFailed(Message):
    request: int
    error: str


@dataclass
class GenerationFinished(Message):
    generation: Any


@dataclass
class GenerationFailed(Message):
    error: str
