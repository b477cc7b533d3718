"""A feature's card: label, how often it fires, its top contexts with the
activation on every token, the tokens it promotes and suppresses, and its
activation across the current prompt."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from lenstop.models.cards import FeatureCard
from lenstop.tui.format import block, percent, visible, wrap_tokens


def card_text(
    layer: int,
    feature: int,
    card: FeatureCard | None,
    prompt_tokens: Sequence[str],
    prompt_acts: Sequence[float] | None,
    width: int = 100,
) -> Text:
    out = Text()
    out.append(f"L{layer} #{feature}  ", style="bold")
    out.append((card.label if card and card.label else "(no label)") + "\n", style="italic")
    if card is None:
        out.append("This dictionary has no feature cards; pass --labels for labels.\n", style="dim")
    elif card.frequency is not None:
        out.append(
            f"fires on {percent(card.frequency).strip()} of held-out tokens · mean {card.mean_act or 0:.2f} · max {card.max_act or 0:.2f}\n"
        )
    if prompt_acts is not None:
        out.append("\nthis prompt\n", style="bold")
        top = max(prompt_acts, default=0.0)
        cells = [visible(t) for t in prompt_tokens]
        for row in wrap_tokens(cells, width):
            for i in row:
                act = prompt_acts[i]
                out.append(
                    cells[i], style="bold reverse" if act > 0 and act >= 0.5 * top else ("bold" if act > 0 else "dim")
                )
                out.append(" ")
            out.append("\n")
            out.append(" ".join(block(prompt_acts[i], top).center(len(cells[i])) for i in row) + "\n")
    if card is not None and card.contexts:
        out.append("\ntop contexts\n", style="bold")
        for c in card.contexts:
            out.append(f"{c.act:7.2f}  ", style="dim")
            for i, (tok, act) in enumerate(zip(c.tokens, c.acts, strict=True)):
                if i == c.focus:  # brackets as well as reverse video, so it reads without colour
                    out.append(f"⟦{visible(tok)}⟧", style="bold reverse")
                else:
                    out.append(visible(tok), style="bold" if act > 0 else "")
            out.append("\n")
    if card is not None and card.promoted:
        out.append("\npromotes   ", style="bold")
        out.append("  ".join(f"{visible(t)} {v:+.2f}" for t, v in card.promoted) + "\n")
        out.append("suppresses ", style="bold")
        out.append("  ".join(f"{visible(t)} {v:+.2f}" for t, v in card.suppressed) + "\n")
    return out


class CardScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,enter", "dismiss", "close", id="card.close"),
        Binding("j,down", "scroll(1)", "scroll down", show=False, id="card.down"),
        Binding("k,up", "scroll(-1)", "scroll up", show=False, id="card.up"),
    ]
    DEFAULT_CSS = """
    CardScreen { align: center middle; }
    CardScreen > VerticalScroll { width: 95%; height: 90%; border: round $accent; padding: 0 1; background: $surface; }
    """

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="card-scroll"):
            yield Static(self.text, id="card-text")

    def action_scroll(self, step: int) -> None:
        self.query_one("#card-scroll", VerticalScroll).scroll_relative(y=step, animate=False)
