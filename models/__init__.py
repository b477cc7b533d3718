"""lenstop's engine: language models, their dictionaries (SAEs, transcoders), and
everything lenstop computes over them, with no user interface.

The public API, for notebooks and scripts::

    from lenstop.models import Engine, FeatureAblation, FeatureSteer

    engine = Engine.load("demo")                      # or "gpt2", saes=["gpt2-small-res-jb"]
    analysis = engine.analyse("def f(x):\\n    return x")
    analysis.layer(1).features(-1)                    # the last token's top features at layer 1
    engine.analyse(prompt, [FeatureAblation(1, 446)]).kl
    engine.generate(prompt, [FeatureSteer(1, 446, 8.0)], max_new_tokens=20)

    graph = Engine.load("demo", saes=["demo:transcoders"]).graph(prompt)   # an attribution graph

Names are imported on first use (PEP 562), so `import lenstop.models.errors`,
the CLI's `--help` and the app's first screen do not pay for torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "Engine": "engine",
    "EngineSpec": "engine_spec",
    "EngineProtocol": "protocol",
    "FeatureAblation": "interventions",
    "FeatureSteer": "interventions",
    "FeatureClamp": "interventions",
    "HeadKnockout": "interventions",
    "Intervention": "interventions",
    "Analysis": "results",
    "Generation": "results",
    "ModelInfo": "results",
    "FeatureCard": "feature_cards",
    "LenstopError": "errors",
    "ExitCode": "errors",
    "AttributionGraph": "graphs",
}

__all__ = [
    "Analysis",
    "AttributionGraph",
    "Engine",
    "EngineProtocol",
    "EngineSpec",
    "ExitCode",
    "FeatureAblation",
    "FeatureCard",
    "FeatureClamp",
    "FeatureSteer",
    "Generation",
    "HeadKnockout",
    "Intervention",
    "LenstopError",
    "ModelInfo",
]

if TYPE_CHECKING:
    from lenstop.models.engine import Engine
    from lenstop.models.engine_spec import EngineSpec
    from lenstop.models.errors import ExitCode, LenstopError
    from lenstop.models.feature_cards import FeatureCard
    from lenstop.models.graphs import AttributionGraph
    from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout, Intervention
    from lenstop.models.protocol import EngineProtocol
    from lenstop.models.results import Analysis, Generation, ModelInfo


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenstop.models' has no attribute {name!r}")
    value = getattr(import_module(f"lenstop.models.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
