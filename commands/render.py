"""Rich tables for the CLI's human-readable output (the --json output is the results' own).

Everything is printed by `console`, a `SafeConsole`: labels, tokens, prompts, hooks and file
names come from files that strangers write, and a terminal obeys what is in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderHook, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
from lenstop.models.feature_cards import FeatureCard, FeatureHit
from lenstop.models.results import Analysis, Generation, LogitLens, ModelInfo, TopTokens
from lenstop.models.safe_text import UNSAFE_BESIDE_NEWLINES, glyphs, printable
from lenstop.models.tokens import visible
from lenstop.tui.card_text import card_text
from lenstop.tui.format import percent, plain
from lenstop.tui.views import circuit_text, grid_text, node_text

if TYPE_CHECKING:
    from lenstop.models.graphs import AttributionGraph


class _ShownSafely:
    """A renderable drawn as it would be, with any control character left in its text shown (`glyphs`):
    the last net, under the text builders that sanitise what they put in."""

    def __init__(self, renderable: ConsoleRenderable) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.renderable, options):
            if segment.control or UNSAFE_BESIDE_NEWLINES.search(segment.text) is None:
                yield segment
            else:  # a segment's own line breaks are Rich's layout, not data
                yield Segment(glyphs(segment.text, keep_newlines=True), segment.style)


class _SafeOutput(RenderHook):
    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_ShownSafely(r) for r in renderables]


class SafeConsole(Console):
    """A console that draws data and never obeys it: strings are never read as markup or emoji codes,
    and their control characters are shown (`printable`) before Rich measures them, so tables line up.
    lenstop's own styling is built as `Text` with styles, never as markup in a string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)
        self.push_render_hook(_SafeOutput())

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(printable(text), **kwargs)


console = SafeConsole()


def _line(*parts: str | tuple[str, str]) -> Text:
    """One line of lenstop's own words and data: a part is a plain string, or (text, style)."""
    out = Text()
    for part in parts:
        text, style = (part, "") if isinstance(part, str) else part
        out.append(printable(text), style=style)
    return out


def _predictions(top: TopTokens, position: int, n: int = 5) -> str:
    return "  ".join(f"{visible(p.token)} {percent(p.prob).strip()}" for p in top.at(position)[:n])


def render_trace(analysis: Analysis, lens: LogitLens | None = None) -> None:
    """Each dictionary's table, the predictions after the last token, and each layer's top token there: from
    `lens` (the engine's `logit_lens` at the last position), or else from the analysis's own lens."""
    for layer in analysis.layers:
        table = Table(
            title=f"layer {layer.layer} · {layer.hook} · {layer.dictionary}",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("pos", justify="right", style="dim", min_width=3, no_wrap=True)
        table.add_column("token", min_width=8, max_width=16, no_wrap=True, overflow="ellipsis")
        table.add_column("top features (id act)", no_wrap=True)
        budget = max(20, console.width - 3 - 16 - 3 - 5 - 4 * 3)  # what the other columns leave
        table.add_column("L0", justify="right", style="dim", min_width=2, no_wrap=True)
        table.add_column("err", justify="right", style="dim", min_width=4, no_wrap=True)
        for pos, token in enumerate(analysis.tokens):
            feats = Text()
            for f in layer.features(pos):
                label = layer.labels.get(f.id)
                feats.append(f"#{f.id}", style="bold")
                feats.append(f" {f.act:.2f}")
                if label:
                    feats.append(f" {printable(label)}", style="italic")
                feats.append("  ")
            feats.truncate(budget, overflow="ellipsis")
            table.add_row(str(pos), visible(token), feats, str(int(layer.l0[pos])), f"{layer.relative_error[pos]:.2f}")
        console.print(table)
        console.print()
    last = len(analysis.tokens) - 1
    after = repr(visible(analysis.tokens[last]))
    console.print(_line(("next token", "bold"), f" after {after}: {_predictions(analysis.predictions, last)}"))
    if analysis.clean_predictions is not None and analysis.kl is not None:
        console.print(_line(("clean", "dim"), f"      {_predictions(analysis.clean_predictions, last)}"))
        console.print(_line(("KL(clean‖intervened) at the last token", "dim"), f" {float(analysis.kl[last]):.4f} nats"))
        _interventions(analysis.interventions)
    tops = [top[0] for top in lens.layers] if lens is not None else [top.at(last)[0] for top in analysis.lens]
    if tops:
        shown = "  ".join(f"L{layer} {visible(top.token)}" for layer, top in enumerate(tops))
        console.print(_line(("logit lens", "bold"), f" {shown}"))


def _interventions(interventions: Iterable[Any]) -> None:
    console.print(_line(("interventions:", "dim"), " " + "; ".join(i.describe() for i in interventions)))


def render_generation(result: Generation) -> None:
    table = Table(show_edge=False, pad_edge=False, show_lines=True)
    table.add_column("run", style="bold")
    table.add_column("continuation")
    table.add_row("prompt", plain(result.prompt, style="dim"))
    table.add_row("clean", plain(result.clean.text))
    if result.intervened is not None:
        table.add_row("intervened", plain(result.intervened.text))
    console.print(table)
    if result.interventions:
        _interventions(result.interventions)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


def render_info(info: ModelInfo) -> None:
    table = Table(show_header=False, show_edge=False, pad_edge=False, title=info.name, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("architecture", info.architecture),
        ("layers", str(info.n_layers)),
        ("width (d_model)", str(info.d_model)),
        ("heads", f"{info.n_heads} × d_head {info.d_head}"),
        ("context", f"{info.n_ctx} tokens"),
        ("vocabulary", str(info.d_vocab)),
        ("parameters", f"{info.n_params:,}"),
        ("device", info.device),
        ("dtype", info.dtype),
        ("memory", _bytes(info.memory_bytes)),
        ("weights", info.processing),
        ("prepend BOS", "yes" if info.prepend_bos else "no"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if info.dictionaries:
        dicts = Table(title="dictionaries", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("key", "layer", "hook", "d_in", "features", "architecture", "L0"):
            dicts.add_column(column, justify="right" if column in ("layer", "d_in", "features", "L0") else "left")
        for d in info.dictionaries:
            hook = d.hook if d.hook_out == d.hook else f"{d.hook} → {d.hook_out}"
            l0 = "?" if d.l0 is None else f"{d.l0:.1f}"
            dicts.add_row(d.key, str(d.layer), hook, str(d.d_in), str(d.d_sae), d.architecture, l0)
        console.print()
        console.print(dicts)


def render_card(layer: int, card: FeatureCard) -> None:
    console.print(card_text(layer, card.id, card, width=console.width))


def render_hits(hits: Sequence[FeatureHit]) -> None:
    """What `lenstop features` found, best first; a card opens with `lenstop card LAYER:FEATURE`."""
    if not hits:
        console.print(_line(("no feature found", "dim")))
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("feature", "dictionary", "score", "label", "why"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for h in hits:
        table.add_row(f"{h.layer}:{h.feature}", h.dictionary, f"{h.score:.3f}", h.label or "", h.why)
    console.print(table)


# ---------------------------------------------------------------- circuits
def render_attribution(found: Attribution) -> None:
    target = "the metric" if found.target is None else node_text(found.target, found.tokens)
    console.print(_line((found.metric.describe(), "bold"), f" = {found.metric.clean:.4f}"))
    baseline = f"corrupted prompt {found.corrupt_prompt!r}" if found.corrupt_prompt else "zero"
    console.print(
        _line((f"explaining {target} ({found.target_value:+.4f}); baseline {baseline}; {found.method}", "dim"))
    )
    table = Table(show_edge=False, pad_edge=False)
    acts = ("activation", "corrupt act") if found.corrupt_prompt else ("activation",)  # and on the baseline run
    for column in ("node", "token", "attribution", "real", *acts, "label"):
        table.add_column(column, justify="right" if column in ("attribution", "real", *acts) else "left")
    for s in found.nodes:
        pos = s.node.position
        token = visible(found.tokens[pos]) if pos is not None else ""
        table.add_row(
            node_text(s.node),
            token,
            f"{s.attribution:+.4f}",
            "" if s.real is None else f"{s.real:+.4f}",
            _act(s.activation),
            *((_act(s.corrupt_activation),) if found.corrupt_prompt else ()),
            s.label or "",
        )
    console.print(table)
    if found.correlation is not None:
        console.print(_line((f"predicted and real effects correlate at r = {found.correlation:.2f}", "dim")))


def render_direct(found: DirectAttribution) -> None:
    console.print()
    console.print(_line(("direct logit attribution", "bold"), f" of {found.metric.describe()} = {found.total:.4f}"))
    rows = [f"L{layer}" for layer in range(found.heads.shape[0])]
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("layer")
    for head in range(found.heads.shape[1]):
        table.add_column(f"H{head}", justify="right")
    table.add_column("mlp", justify="right")
    for layer, name in enumerate(rows):
        table.add_row(name, *(f"{v:+.2f}" for v in found.heads[layer]), f"{found.mlps[layer]:+.2f}")
    console.print(table)
    parts = f"embeddings {found.embed:+.3f} · biases {found.bias:+.3f}"
    if found.normaliser:
        parts += f" · -logsumexp {found.normaliser:+.3f}"
    console.print(_line((f"{parts}; the parts add up to the metric", "dim")))


def render_patching(found: Patching) -> None:
    metric = f": clean {found.clean_metric:.4f}, corrupted {found.corrupt_metric:.4f}"
    console.print(_line((found.metric.describe(), "bold"), metric))
    carries = "restores to the corrupted run" if found.measure == "restored" else "takes from the clean run"
    share = f"direction {found.direction}: each cell is the share of the difference patching it {carries}"
    console.print(_line((share, "dim")))
    console.print(_line((f"positions: {' '.join(f'{i}:{visible(t)}' for i, t in enumerate(found.tokens))}", "dim")))
    layers = [f"L{layer}" for layer in range(found.resid.shape[0])]
    console.print()
    console.print(_line(("residual stream", "bold"), " (layer × position)"))
    console.print(grid_text(found.resid, layers, [str(i % 10) for i in range(found.resid.shape[1])]))
    console.print(_line(("heads", "bold"), " (layer × head, every position)"))
    console.print(grid_text(found.heads, layers, [str(h % 10) for h in range(found.heads.shape[1])]))
    table = Table(show_edge=False, pad_edge=False, title="strongest heads", title_justify="left")
    for column in ("head", found.measure, "estimate"):
        table.add_column(column, justify="left" if column == "head" else "right")
    order = np.argsort(-np.abs(found.heads), axis=None)[:8]
    for index in order:
        layer, head = np.unravel_index(index, found.heads.shape)
        table.add_row(
            f"L{layer}.H{head}", f"{found.heads[layer, head]:+.3f}", f"{found.heads_estimate[layer, head]:+.3f}"
        )
    console.print(table)
    if found.features:
        features = Table(show_edge=False, pad_edge=False, title="features", title_justify="left")
        numbers = (found.measure, "estimate", "clean act", "corrupt act")
        for column in ("feature", *numbers, "label"):
            features.add_column(column, justify="right" if column in numbers else "left")
        for f in found.features[:15]:
            features.add_row(
                f"L{f.layer} #{f.feature}@{f.position}",
                f"{f.restored:+.3f}",
                f"{f.estimate:+.3f}",
                _act(f.clean_act),
                _act(f.corrupt_act),
                f.label or "",
            )
        console.print(features)
    agreement = ", ".join(f"{k} {v:.2f}" for k, v in found.agreement().items() if v is not None)
    console.print(_line((f"attribution patching agrees with patching at r = {agreement}", "dim")))


def _act(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render_heads(roles: HeadRoles) -> None:
    table = Table(show_edge=False, pad_edge=False, title=f"head roles of {roles.model}", title_justify="left")
    for column in ("head", "previous-token", "duplicate-token", "induction", "role"):
        table.add_column(column, justify="left" if column in ("head", "role") else "right")
    for layer, scores in enumerate(roles.layers):
        for head, s in enumerate(scores):
            role = s.role()
            table.add_row(
                f"L{layer}.H{head}",
                *(f"{v:.2f}" if v is not None else "" for v in (s.previous, s.duplicate, s.induction)),
                f"{role[0]} {role[1]:.2f}" if role else "",
            )
    console.print(table)
    console.print(_line((f"{roles.sequences} sequences of {roles.span} random tokens, each repeated once", "dim")))


def render_circuit(found: Circuit) -> None:
    console.print(circuit_text(found, console.width))


def render_graph(found: AttributionGraph) -> None:
    from lenstop.tui.graph_text import graph_text

    console.print(graph_text(found, console.width))
