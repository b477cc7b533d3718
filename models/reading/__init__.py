"""Reading prompts on a model handle: `Reader`, with the one cache of what it keeps for reuse."""

from lenstop.models.reading.reader import Reader

__all__ = ["Reader"]
