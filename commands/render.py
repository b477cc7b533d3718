"""Rich tables for the CLI's human-readable output (the --json output is the results' own)."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lenstop.models.circuits.results import Attribution, Circuit, DirectAttribution, HeadRoles, Patching
from lenstop.models.feature_cards import FeatureCard
from lenstop.models.results import Analysis, Generation, ModelInfo, TopTokens
from lenstop.models.tokens import visible
from lenstop.tui.format import percent
from lenstop.tui.views import card_text, circuit_text, grid_text, node_text

console = Console()


def _predictions(top: TopTokens, position: int, n: int = 5) -> str:
    return "  ".join(f"{visible(p.token)} {percent(p.prob).strip()}" for p in top.at(position)[:n])


def render_trace(analysis: Analysis) -> None:
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
                    feats.append(f" {label}", style="italic")
                feats.append("  ")
            feats.truncate(budget, overflow="ellipsis")
            table.add_row(str(pos), visible(token), feats, str(int(layer.l0[pos])), f"{layer.relative_error[pos]:.2f}")
        console.print(table)
        console.print()
    last = len(analysis.tokens) - 1
    console.print(
        f"[bold]next token[/] after {visible(analysis.tokens[last])!r}: {_predictions(analysis.predictions, last)}"
    )
    if analysis.clean_predictions is not None and analysis.kl is not None:
        console.print(f"[dim]clean[/]      {_predictions(analysis.clean_predictions, last)}")
        console.print(f"[dim]KL(clean‖intervened) at the last token[/] {float(analysis.kl[last]):.4f} nats")
        console.print("[dim]interventions:[/] " + "; ".join(i.describe() for i in analysis.interventions))
    lens = "  ".join(f"L{layer} {visible(top.at(last)[0].token)}" for layer, top in enumerate(analysis.lens))
    if lens:
        console.print(f"[bold]logit lens[/] {lens}")


def render_generation(result: Generation) -> None:
    table = Table(show_edge=False, pad_edge=False, show_lines=True)
    table.add_column("run", style="bold")
    table.add_column("continuation")
    table.add_row("prompt", Text(result.prompt, style="dim"))
    table.add_row("clean", Text(result.clean.text))
    if result.intervened is not None:
        table.add_row("intervened", Text(result.intervened.text))
    console.print(table)
    if result.interventions:
        console.print("[dim]interventions:[/] " + "; ".join(i.describe() for i in result.interventions))


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


# ---------------------------------------------------------------- circuits
def render_attribution(found: Attribution) -> None:
    target = "the metric" if found.target is None else node_text(found.target, found.tokens)
    console.print(f"[bold]{found.metric.describe()}[/] = {found.metric.clean:.4f}", highlight=False)
    baseline = f"corrupted prompt {found.corrupt_prompt!r}" if found.corrupt_prompt else "zero"
    console.print(f"[dim]explaining {target} ({found.target_value:+.4f}); baseline {baseline}; {found.method}[/]")
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
        console.print(f"[dim]predicted and real effects correlate at r = {found.correlation:.2f}[/]")


def render_direct(found: DirectAttribution) -> None:
    console.print(f"\n[bold]direct logit attribution[/] of {found.metric.describe()} = {found.total:.4f}")
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
    console.print(f"[dim]{parts}; the parts add up to the metric[/]")


def render_patching(found: Patching) -> None:
    console.print(
        f"[bold]{found.metric.describe()}[/]: clean {found.clean_metric:.4f}, corrupted {found.corrupt_metric:.4f}"
    )
    carries = "restores to the corrupted run" if found.measure == "restored" else "takes from the clean run"
    console.print(
        f"[dim]direction {found.direction}: each cell is the share of the difference patching it {carries}[/]"
    )
    console.print(f"[dim]positions: {' '.join(f'{i}:{visible(t)}' for i, t in enumerate(found.tokens))}[/]")
    layers = [f"L{layer}" for layer in range(found.resid.shape[0])]
    console.print("\n[bold]residual stream[/] (layer × position)")
    console.print(grid_text(found.resid, layers, [str(i % 10) for i in range(found.resid.shape[1])]))
    console.print("[bold]heads[/] (layer × head, every position)")
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
    console.print(f"[dim]attribution patching agrees with patching at r = {agreement}[/]")


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
    console.print(f"[dim]{roles.sequences} sequences of {roles.span} random tokens, each repeated once[/]")


def render_circuit(found: Circuit) -> None:
    console.print(circuit_text(found, console.width))
