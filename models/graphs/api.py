"""`graph`: what `Engine.graph` and `lenstop graph` call, with tokens named as the user names them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lenstop.models.circuits.metric import token_id
from lenstop.models.errors import LenstopError, UsageError
from lenstop.models.graphs.attribution import GraphOptions, build_graph
from lenstop.models.graphs.result import AttributionGraph
from lenstop.models.runtime.handle import ModelHandle

if TYPE_CHECKING:
    from lenstop.models.circuits.results import Circuit
    from lenstop.models.feature_cards import Cards, FeatureCard


def graph(
    handle: ModelHandle,
    prompt: str,
    *,
    targets: Sequence[str] = (),
    wrong: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: float | None,
) -> AttributionGraph:
    """The attribution graph of `prompt` on the handle's transcoders (`--sae`): per-layer or cross-layer.

    `targets` are tokens (" first", or #ID) to explain instead of the salient next tokens; `wrong`, with one
    target, explains the logit difference target - wrong."""
    from dataclasses import replace

    from lenstop.models.dictionaries import replacement_of

    if wrong is not None and len(targets) != 1:
        raise UsageError("--wrong needs exactly one --target: the graph explains logit(target) - logit(wrong)")
    tokenizer = handle.model.tokenizer
    ids = tuple(token_id(tokenizer, t, "--target") for t in targets)
    wrong_id = token_id(tokenizer, wrong, "--wrong") if wrong is not None else None
    replacement = replacement_of(handle.dictionaries, handle.n_layers)

    def label(layer: int, feature: int) -> str:
        try:
            return cards_of(handle, replacement.kind, layer).label(feature) or ""
        except LenstopError:
            return ""

    known = set(GraphOptions.__dataclass_fields__) - {"targets", "wrong"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown graph options {unknown}; the options are {sorted(known)}")
    chosen = replace(GraphOptions(**options), targets=ids, wrong=wrong_id)  # type: ignore[arg-type]
    return build_graph(handle, replacement, prompt, chosen, label, progress)


def cards_of(handle: ModelHandle, kind: str, layer: int) -> Cards:
    """The cards of layer `layer`'s features: its transcoder's, or the cross-layer transcoder's for that layer."""
    clt = handle.dictionaries.cross_layer
    if kind != "transcoder_set" and clt is not None:
        return clt.cards(layer)
    return handle.dictionaries.at(layer).cards


def write_viewer_files(
    handle: ModelHandle, graph: AttributionGraph | Circuit, path: Path, neuronpedia: str | None = None
) -> list[Path]:
    """The graph (or a `lenstop circuit` circuit) for circuit-tracer's viewer at `path`, with a feature file for
    every feature node beside it (see `lenstop.models.graphs.export`, `lenstop.models.circuits.export`); or,
    with `neuronpedia` (`MODEL[:SOURCE_SET]`), the graph alone for Neuronpedia's upload."""

    from lenstop.models.circuits.results import Circuit
    from lenstop.models.graphs.export import NeuronpediaTarget

    target = NeuronpediaTarget.parse(neuronpedia) if neuronpedia is not None else None
    if isinstance(graph, Circuit):
        if target is not None:
            raise UsageError(
                "a circuit's heads and MLPs are nodes Neuronpedia has no type for; export an attribution graph "
                "for it (lenstop graph --out FILE --neuronpedia MODEL)"
            )
        from lenstop.models.circuits.export import write_viewer_files as write_circuit

        write_circuit(handle, graph, path)
        features = path.parent / f"{path.stem}-features"
        found = sorted(features.glob("*.json")) if features.is_dir() else []
        return [path, *found, path.parent / "graph-metadata.json"]

    from lenstop.models.cards.api import card
    from lenstop.models.graphs import export

    def feature_card(layer: int, feature: int) -> FeatureCard | None:
        return card(handle, layer, feature)

    return export.write_viewer_files(graph, path, feature_card, target)
