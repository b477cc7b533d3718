"""The seam between the engine and its front ends is typed all the way down:
no `Any` in what a front end may ask (`EngineProtocol`), in what it gets back
(the result types, recursively), in how it loads an engine (`EngineSpec`), or in
the messages the app's workers post. And the public API is importable as documented."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import pathlib
import subprocess
import sys
import typing
from types import UnionType

import numpy as np
import pytest

import lenstop.models as api
from lenstop.models import feature_cards, graphs, head_scores, interventions, results
from lenstop.models.cards import spec as card_spec
from lenstop.models.cards.texts import Corpus
from lenstop.models.circuits import results as circuit_results
from lenstop.models.circuits import spec as circuit_spec
from lenstop.models.engine_spec import EngineSpec
from lenstop.models.graphs import result as graph_result
from lenstop.models.protocol import EngineProtocol
from lenstop.tui import messages

NAMESPACE = {
    **vars(collections.abc),
    **vars(circuit_results),
    **vars(circuit_spec),
    **vars(results),
    **vars(interventions),
    **vars(feature_cards),
    **vars(head_scores),
    **vars(graphs),
    **vars(graph_result),
    **vars(card_spec),
    "Corpus": Corpus,
    "Path": pathlib.Path,
    "EngineSpec": EngineSpec,
    "EngineProtocol": EngineProtocol,
    "typing": typing,
}


def _any_in(hint: object, seen: set[object], where: str) -> list[str]:
    """Every place under `hint` where Any is, following dataclasses from lenstop into their fields."""
    if hint is typing.Any:
        return [where]
    origin = typing.get_origin(hint)
    if origin is np.ndarray:  # NDArray[...]: the shape is always Any in numpy's stubs; the dtype must be named
        return _any_in(typing.get_args(hint)[1], seen, where + "[dtype]")
    if origin is not None:
        return [p for i, arg in enumerate(typing.get_args(hint)) for p in _any_in(arg, seen, f"{where}[{i}]")]
    if isinstance(hint, UnionType):
        return [p for arg in typing.get_args(hint) for p in _any_in(arg, seen, where)]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint.__module__.startswith("lenstop"):
        if hint in seen:
            return []
        seen.add(hint)
        hints = typing.get_type_hints(hint, NAMESPACE)
        return [p for f in dataclasses.fields(hint) for p in _any_in(hints[f.name], seen, f"{hint.__name__}.{f.name}")]
    return []


def test_the_engine_protocol_has_no_any() -> None:
    found: list[str] = []
    for name, method in inspect.getmembers(EngineProtocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        for arg, hint in typing.get_type_hints(method, NAMESPACE).items():
            found += _any_in(hint, set(), f"EngineProtocol.{name}({arg})")
    assert found == []
    names = {n for n, _ in inspect.getmembers(EngineProtocol)}
    assert {"info", "analyse", "generate", "card", "attribute", "patch", "circuit", "head_roles"} <= names


@pytest.mark.parametrize(
    "cls",
    [
        EngineSpec,
        messages.EngineLoaded,
        messages.AnalysisFinished,
        messages.AnalysisFailed,
        messages.GenerationFinished,
        messages.LoadProgressed,
        messages.AttributionFinished,
        messages.CircuitFinished,
        messages.PatchFinished,
        messages.HeadRolesFound,
    ],
    ids=lambda c: c.__name__,
)
def test_what_crosses_into_the_app_has_no_any(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls, {**NAMESPACE, **vars(messages)})
    found = [p for f in dataclasses.fields(cls) for p in _any_in(hints[f.name], set(), f"{cls.__name__}.{f.name}")]
    assert found == []


def test_the_checker_would_find_an_any() -> None:
    @dataclasses.dataclass
    class Leaky:
        values: dict[str, typing.Any]

    Leaky.__module__ = "lenstop.example"
    assert _any_in(Leaky, set(), "Leaky") == ["Leaky.values[1]"]


def test_results_are_frozen() -> None:
    for cls in (results.Analysis, results.LayerFeatures, results.TopTokens, results.Generation, results.ModelInfo):
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_the_public_api_is_importable_from_lenstop_models() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None
    assert api.FeatureAblation is interventions.FeatureAblation and api.Analysis is results.Analysis
    with pytest.raises(AttributeError):
        api.NoSuchThing  # noqa: B018 - the lookup itself is what must fail


def test_importing_lenstop_models_is_cheap() -> None:
    probe = (
        "import sys, lenstop.models\n"
        "from lenstop.models import FeatureSteer, EngineSpec\n"
        "print([m for m in ('torch', 'numpy', 'transformer_lens') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
