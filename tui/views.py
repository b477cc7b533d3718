"""What the screens show, as pure functions of the engine's results and the
selection: the inspector's header, summary line, pane titles, feature rows and
token shading, a feature's card (which the CLI prints too), and the circuit
view's nodes, drawing, patching grids, breadcrumb and settings line.

Nothing here touches a widget, so each is unit-tested without a pilot
(tests/test_views.py), and the screens only put the results on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text

from lenstop.models.circuits.results import Attribution, Circuit, HeadRoles, NodeScore, Patching
from lenstop.models.circuits.spec import Node
from lenstop.models.errors import LengthMismatchError
from lenstop.models.head_scores import HeadScores
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout, Intervention
from lenstop.models.prompts import escape
from lenstop.models.results import Analysis, LayerAttention, LayerFeatures, LogitLens, ModelInfo, TokenPrediction
from lenstop.models.safe_text import printable
from lenstop.models.tokens import visible
from lenstop.tui.failure import Failure
from lenstop.tui.format import clip, counted, percent, shade
from lenstop.tui.session import Entry

PANES = ("features", "heads", "predictions", "effects")


def quoted_token(token: str, width: int = 12) -> str:
    """A token for a title: whitespace visible, clipped, quoted."""
    return repr(clip(visible(token), width))


def header_text(
    info: ModelInfo | None,
    title: str,
    layer: int,
    at: tuple[int, str] | None,
    scope_all: bool,
    compact: bool,
) -> str:
    """The top line: the model, the layer strip (dictionary layers plain, others dotted), the token, the scope."""
    if info is None:
        return f" lenstop · {title} · loading…"
    pos = f" · pos {at[0]} {quoted_token(at[1])}" if at is not None else ""
    scope = "all positions" if scope_all else "this token"
    if compact:
        return f" lenstop {title} · L{layer}/{info.n_layers - 1}{pos} · @{scope}"
    dict_layers = {d.layer for d in info.dictionaries}
    strip = " ".join(
        f"[{n}]" if n == layer else (str(n) if n in dict_layers else f"·{n}") for n in range(info.n_layers)
    )
    kinds = sorted({d.architecture for d in info.dictionaries})
    dicts = f"dict {'/'.join(kinds)}×{len(info.dictionaries)}" if info.dictionaries else "no dict"
    return (
        f" lenstop · {title} · {counted(info.n_layers, 'layer')} · d={info.d_model} · {counted(info.n_heads, 'head')}"
        f" · {dicts}"
        f" · {info.device} {info.dtype} │ layer {strip}{pos} │ @ {scope}"
    )


def summary_text(analysis: Analysis, position: int, lens: LogitLens | None = None) -> str:
    """The compact layout's one line: the next-token guesses, the logit lens (once it has come), the KL."""
    nxt = "  ".join(
        f"{clip(visible(p.token), 8)} {percent(p.prob).strip()}" for p in analysis.predictions.at(position)[:3]
    )
    layers = lens_at(analysis, position, lens)
    shown = " ".join(f"L{n} {clip(visible(top[0].token), 6)}" for n, top in enumerate(layers) if top) if layers else "…"
    kl = f" · KL {float(analysis.kl[position]):.2f}" if analysis.kl is not None else ""
    return f" next {nxt} · lens {shown}{kl}"


def lens_at(analysis: Analysis, position: int, lens: LogitLens | None) -> tuple[tuple[TokenPrediction, ...], ...]:
    """Each layer's top tokens after `position`: from the analysis when it holds every position's, else from a
    `LogitLens` fetched for this position; empty while it is on its way."""
    if analysis.lens:
        return tuple(top.at(position) for top in analysis.lens)
    return lens.layers if lens is not None and lens.position == position else ()


def pane_tabs(active: str) -> str:
    """`[1 features] 2 heads 3 predictions 4 effects`: which pane the compact layout shows."""
    return " ".join(f"[{i} {p}]" if p == active else f"{i} {p}" for i, p in enumerate(PANES, 1))


def analysed_text(n_tokens: int, seconds: float | None, n_interventions: int) -> str:
    timing = f" in {seconds * 1000:.0f} ms" if seconds is not None else ""
    extra = f" · {counted(n_interventions, 'intervention')}" if n_interventions else ""
    return f"{counted(n_tokens, 'token')} · analysed{timing}{extra}"


def intervention_mark(intervention: Intervention) -> str:
    """One glyph per kind, for the lists: ✗ removes, ⇢ steers, = sets."""
    match intervention:
        case FeatureAblation() | HeadKnockout():
            return "✗"
        case FeatureSteer():
            return "⇢"
        case FeatureClamp():
            return "="


def feature_of(intervention: Intervention) -> int | None:
    return None if isinstance(intervention, HeadKnockout) else intervention.feature


@dataclass(frozen=True)
class FeatureRow:
    feature: int
    act: float
    label: str | None
    mark: str  # the glyph of an active intervention on it, or a space


def feature_rows(lf: LayerFeatures, position: int, entries: Sequence[Entry]) -> list[FeatureRow]:
    """The token's top features at this layer, then any feature an intervention here names (an ablated
    feature reads 0 and leaves the top list, but stays listed so that it can be restored)."""
    acts = [(f.id, f.act) for f in lf.features(position)]
    listed = {f for f, _ in acts}
    for e in entries:
        feature = feature_of(e.intervention)
        if e.intervention.layer == lf.layer and feature is not None and feature not in listed:
            across = lf.activation_of(feature)
            acts.append((feature, float(across[position]) if across is not None else 0.0))
            listed.add(feature)
    marks = {  # reversed: the first intervention on a feature gives its mark
        feature: intervention_mark(e.intervention)
        for e in reversed(entries)
        if e.enabled and e.intervention.layer == lf.layer and (feature := feature_of(e.intervention)) is not None
    }
    return [FeatureRow(f, a, lf.labels.get(f), marks.get(f, " ")) for f, a in acts]


def knocked_heads(entries: Sequence[Entry], layer: int) -> frozenset[int]:
    return frozenset(
        e.intervention.head
        for e in entries
        if e.enabled and isinstance(e.intervention, HeadKnockout) and e.intervention.layer == layer
    )


def token_shading(lf: LayerFeatures | None, feature: int | None, n_tokens: int) -> tuple[list[float], str]:
    """What shades the tokens, and the pane's title: the selected feature's activation across the
    prompt, or else the dictionary's relative reconstruction error."""
    if lf is not None and feature is not None and (acts := lf.activation_of(feature)) is not None:
        label = lf.labels.get(feature)
        title = f"tokens · shaded by L{lf.layer} #{feature}" + (f" {label!r}" if label else "")
        return [float(v) for v in acts], title
    if lf is not None:
        return [float(v) for v in lf.relative_error], f"tokens · shaded by L{lf.layer} reconstruction error"
    return [0.0] * n_tokens, "tokens"


@dataclass(frozen=True, eq=False)  # by identity: it holds arrays, and a new one is always news
class Shown:
    """What the inspector's panes answer for at one moment. The screen owns it; each pane is bound to it
    and draws itself from what it needs of it."""

    info: ModelInfo | None
    title: str  # the model's name
    analysis: Analysis | None
    position: int
    layer: int
    feature: int | None
    head: int
    scope_all: bool
    entries: tuple[Entry, ...]
    compact: bool
    stale: bool  # the last analysis failed: what is shown is another prompt's or other interventions'
    lens: LogitLens | None
    # The layer's features and attention when the analysis did not read them, fetched apart; or why not.
    fetched_features: LayerFeatures | Failure | None
    fetched_attention: LayerAttention | Failure | None
    head_roles: HeadRoles | None

    @property
    def at(self) -> tuple[int, str] | None:
        """The selected token, once there is an analysis to select it in."""
        a = self.analysis
        return (
            (self.position, a.tokens[self.position]) if a is not None and 0 <= self.position < len(a.tokens) else None
        )

    @property
    def n_active(self) -> int:
        return sum(e.enabled for e in self.entries)

    def has_dictionary(self) -> bool:
        return self.info is not None and any(d.layer == self.layer for d in self.info.dictionaries)

    def features(self) -> LayerFeatures | None:
        """The layer's features: the analysis's, or those fetched for this layer."""
        f = self.fetched_features
        fetched = f if isinstance(f, LayerFeatures) and f.layer == self.layer else None
        return None if self.analysis is None else self.analysis.layer(self.layer) or fetched

    def attention(self) -> LayerAttention | None:
        a = self.fetched_attention
        fetched = a if isinstance(a, LayerAttention) and a.layer == self.layer else None
        return None if self.analysis is None else self.analysis.attention_at(self.layer) or fetched

    def features_empty(self) -> str:
        """What the features pane says when it has none to list."""
        if not self.has_dictionary():
            have = ", ".join(str(d.layer) for d in self.info.dictionaries) if self.info else ""
            return f"no dictionary at layer {self.layer} (dictionaries at: {have or 'none'})"
        why = self.fetched_features
        return f"features unavailable: {why.text}" if isinstance(why, Failure) else "reading features…"

    def attention_empty(self) -> str:
        why = self.fetched_attention
        return f"attention unavailable: {why.text}" if isinstance(why, Failure) else "reading attention…"

    def task_roles(self) -> tuple[HeadScores, ...]:
        """Each head of the layer's role on the standard task, once known."""
        roles = self.head_roles
        return tuple(roles.layers[self.layer]) if roles is not None and self.layer < len(roles.layers) else ()

    def caption(self, pane: str) -> str:
        """A pane's title, before any `stale ·`."""
        a = self.analysis
        if a is None:
            return pane
        match pane:
            case "tokens":
                return token_shading(self.features(), self.feature, len(a.tokens))[1]
            case "features":
                return f"features · L{self.layer} · pos {self.position} {quoted_token(a.tokens[self.position])}"
            case "heads":
                return f"heads · L{self.layer} · from pos {self.position}"
            case "predictions":
                return f"predictions · after pos {self.position}"
            case _:
                return f"effects · {self.n_active} active" if self.n_active else "effects"


# ---------------------------------------------------------------- circuits
def node_text(node: Node, tokens: Sequence[str] | None = None) -> str:
    """A node, short: `L1.H5@39`, `L1 #446@23`, `L0 err@20`, `emb '·range'@19`."""
    at = "" if node.position is None else f"@{node.position}"
    match node.kind:
        case "feature":
            return f"L{node.layer} #{node.feature}{at}"
        case "head":
            return f"L{node.layer}.H{node.head}{at or '@all'}"
        case "error":
            return f"L{node.layer} err{at}"
        case "mlp":
            return f"L{node.layer} mlp{at or '@all'}"
        case _:
            token = f" {quoted_token(tokens[node.position], 10)}" if tokens and node.position is not None else ""
            return f"emb{token}{at}"


def signed_short(value: float) -> str:
    return f"{value:+.2f}" if abs(value) < 100 else f"{value:+.0f}"


def circuit_text(circuit: Circuit, width: int = 100) -> Text:
    """The circuit by layer, the metric on top and the inputs at the bottom; within a layer, by position.
    Then its edges, strongest first: `source → target weight`."""
    out = Text()
    m = circuit.metric
    out.append("metric  ", style="bold")
    out.append(f"{m.describe()} = {m.clean:.3f}  (p {percent(circuit.target_prob).strip()})\n")
    layers: dict[int | None, list[NodeScore]] = {}
    for s in circuit.nodes:
        layers.setdefault(s.node.layer, []).append(s)
    order = sorted((k for k in layers if k is not None), reverse=True) + ([None] if None in layers else [])
    for layer in order:
        label = "emb" if layer is None else f"L{layer}"
        out.append(f"{label:<8}", style="bold")
        items = sorted(layers[layer], key=lambda s: (s.node.position or 0, -abs(s.attribution)))
        line = "   ".join(f"{node_text(s.node, circuit.tokens)} {signed_short(s.attribution)}" for s in items)
        out.append(clip(line, max(20, width - 8)) + "\n")
    if circuit.edges:
        out.append("edges   ", style="bold")
        strongest = sorted(circuit.edges, key=lambda e: -abs(e.weight))
        parts = [
            f"{node_text(e.source)} → {'metric' if e.target is None else node_text(e.target)} {signed_short(e.weight)}"
            for e in strongest
        ]
        out.append(clip(" · ".join(parts), max(20, 3 * width - 8)))
    return out


def grid_text(
    grid: np.ndarray, rows: Sequence[str], columns: Sequence[str] | None = None, mark: tuple[int, int] | None = None
) -> Text:
    """A heatmap of shares (1.0 is all of the difference) in `·░▒▓█`, `−` where a cell works against it;
    reads without colour. `mark` brackets one cell."""
    out = Text()
    label = max((len(r) for r in rows), default=0)
    if columns is not None:
        out.append(" " * (label + 1) + "".join(c[:1] for c in columns) + "\n", style="dim")
    for r, name in enumerate(rows):
        out.append(f"{name:<{label}} ", style="bold")
        for c, value in enumerate(grid[r]):
            v = float(value)
            glyph = "−" if v <= -0.05 else shade(min(1.0, max(0.0, v)))
            out.append(glyph, style="reverse" if mark == (r, c) else ("bold" if abs(v) >= 0.5 else ""))
        out.append("\n")
    return out


def crumbs_text(path: Sequence[Node], tokens: Sequence[str]) -> str:
    """`metric › L1.H5@23 › L0.H0@12`: the way back."""
    return " › ".join(["metric", *(node_text(n, tokens) for n in path)])


def settings_text(
    attribution: Attribution | None, corrupt: str | None, steps: int, kinds: str, ignored: int = 0
) -> str:
    """How the attribution was made; `ignored` counts the inspector's interventions it does not apply."""
    clean = f"clean model ({counted(ignored, 'intervention')} not applied) · " if ignored else ""
    baseline = f"corrupted {clip(printable(escape(corrupt)), 30)!r}" if corrupt else "zero"
    method = f"integrated gradients ({steps})" if steps else "gradient"
    measured = attribution.correlation if attribution is not None else None
    r = f" · predicted vs real r {measured:.2f}" if measured is not None else ""
    return f"{clean}baseline {baseline} · {method} · showing {kinds}{r}"


def metric_text(attribution: Attribution) -> str:
    m = attribution.metric
    line = f"{m.describe()} = {m.clean:.3f}"
    if attribution.target is not None:
        line += f" · explaining {node_text(attribution.target, attribution.tokens)} = {attribution.target_value:+.3f}"
    return line


def patching_text(patching: Patching) -> Text:
    """The two grids, with the positions' tokens as a legend, the strongest heads, and the strongest features
    with their activation on both runs. Each cell is the share restored (clean->corrupt), or the share of the
    damage done (corrupt->clean), as the first line says."""
    out = Text()
    out.append(f"patching {patching.direction}: ", style="bold")
    out.append(f"clean {patching.clean_metric:.2f} · corrupted {patching.corrupt_metric:.2f}\n")
    carries = "restored to the corrupted run" if patching.measure == "restored" else "damage done to the clean run"
    out.append(f"each cell: the share of the difference {carries}\n", style="dim")
    layers = [f"L{layer}" for layer in range(patching.resid.shape[0])]
    out.append("residual stream, layer × position\n", style="bold")
    out.append_text(grid_text(patching.resid, layers, [str(i % 10) for i in range(patching.resid.shape[1])]))
    out.append("heads, layer × head\n", style="bold")
    out.append_text(grid_text(patching.heads, layers, [str(h % 10) for h in range(patching.heads.shape[1])]))
    ranked = sorted(
        (
            (float(patching.heads[lay, h]), lay, h)
            for lay in range(patching.heads.shape[0])
            for h in range(patching.heads.shape[1])
        ),
        reverse=True,
    )[:4]
    out.append(f"strongest ({patching.measure})  " + "  ".join(f"L{lay}.H{h} {v:.2f}" for v, lay, h in ranked) + "\n")
    if patching.features:
        out.append(f"features ({patching.measure}, act clean→corrupted)\n", style="bold")
        for f in sorted(patching.features, key=lambda f: -abs(f.restored))[:4]:
            acts = "" if f.clean_act is None or f.corrupt_act is None else f"  {f.clean_act:.2f}→{f.corrupt_act:.2f}"
            out.append(f"  L{f.layer} #{f.feature}@{f.position} {f.restored:+.2f}{acts}")
            out.append(f"  {clip(printable(f.label), 30)}\n" if f.label else "\n", style="italic")
    agreement = ", ".join(f"{k} {v:.2f}" for k, v in patching.agreement().items() if v is not None)
    out.append(f"estimate agrees: {agreement}\n", style="dim")
    out.append(" ".join(f"{i}:{clip(visible(t), 8)}" for i, t in enumerate(patching.tokens)), style="dim")
    return out


@dataclass(frozen=True, eq=False)
class Drawn:
    """What the circuit view's right pane draws: the circuit (or why there is none), and the patching (or
    why there is none, or the two prompts' tokens when they do not line up)."""

    circuit: Circuit | None
    circuit_error: Failure | None
    patching: Patching | None
    patch_error: Failure | None
    corrupt: str | None
    mismatch: LengthMismatchError | None


def drawing_text(found: Drawn, width: int) -> Text:
    out = Text()
    if found.circuit is not None:
        out.append_text(circuit_text(found.circuit, width))
    elif found.circuit_error is not None:
        out.append(f"no circuit: {printable(found.circuit_error.text)}", style="bold")
    if found.mismatch is not None:
        out.append("\n\nthe two prompts, token by token:\n", style="bold")
        out.append("\n".join(line.rstrip() for line in found.mismatch.alignment(width)))
        out.append("\n\np: a corrupted prompt of the same token length", style="dim")
    elif found.patching is not None:
        out.append("\n\n")
        out.append_text(patching_text(found.patching))
    elif found.corrupt and found.patch_error:
        out.append(f"\n\nno patching: {printable(found.patch_error.text)}", style="bold")
    elif found.corrupt:
        out.append("\n\npatching…", style="italic")
    else:
        out.append("\n\np: set a corrupted prompt of the same length to patch", style="dim")
    return out
