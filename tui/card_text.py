"""A feature's card as text: what the app's card screen shows and `lenstop card` prints, each part saying where
it comes from (the weights, the text a corpus pass read, the labels' source). It reads without colour: the
peak of a context is bracketed, strong tokens reversed, the histogram drawn in blocks."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from lenstop.models.feature_cards import Context, FeatureCard, FromWeights
from lenstop.models.safe_text import printable
from lenstop.models.tokens import visible
from lenstop.tui.format import block, percent, wrap_tokens

SPARK = " ▁▂▃▄▅▆▇█"


def card_text(
    layer: int,
    feature: int,
    card: FeatureCard | None,
    prompt_tokens: Sequence[str] = (),
    prompt_acts: Sequence[float] | None = None,
    width: int = 100,
) -> Text:
    """A feature's card: label and its source, density and histogram, its activation across the prompt (when
    given), top contexts and examples by activation band, the tokens it promotes and suppresses, its nearest
    features."""
    out = Text()
    out.append(f"L{layer} #{feature}  ", style="bold")
    out.append((printable(card.label) if card and card.label else "(no label)") + "\n", style="italic")
    if card is None:
        out.append("This dictionary has no feature cards; pass --labels for labels.\n", style="dim")
        return out
    if card.label and card.label_source:
        out.append(f"label from {printable(card.label_source)}\n", style="dim")
    if card.frequency is not None:
        read = f"the corpus: {printable(card.corpus)}" if card.corpus else "held-out text"
        out.append(
            f"fires on {percent(card.frequency).strip()} of tokens · mean {card.mean_act or 0:.2f} "
            f"· max {card.max_act or 0:.2f}   (from {read})\n"
        )
    if card.histogram is not None and any(card.histogram.counts):
        counts = list(card.histogram.counts)
        used = max(i for i, c in enumerate(counts) if c) + 1  # the grid only doubles: its top bins may be empty
        top = card.histogram.hi * used / len(counts)
        out.append(f"activations 0 {sparkline(counts[:used])} {top:.3g}   (a histogram of where it fires)\n")
    if prompt_acts is not None:
        _prompt(out, prompt_tokens, prompt_acts, width)
    if card.contexts:
        out.append("\ntop contexts\n", style="bold")
        for c in card.contexts:
            _context(out, c)
    elif card.frequency is None:
        out.append("no contexts yet: lenstop cards --sae ... --corpus PATH reads them from text\n", style="dim")
    for q in card.quantiles:
        out.append(f"\nactivations {q.low:.2f} to {q.high:.2f}\n", style="bold")
        for c in q.contexts:
            _context(out, c)
    if card.promoted:
        out.append("\npromotes   ", style="bold")
        out.append("  ".join(f"{visible(t)} {v:+.2f}" for t, v in card.promoted) + "\n")
        out.append("suppresses ", style="bold")
        out.append("  ".join(f"{visible(t)} {v:+.2f}" for t, v in card.suppressed) + "\n")
    if card.weights is not None:
        _from_weights(out, card.weights)
    return out


def _from_weights(out: Text, w: FromWeights) -> None:
    out.append(
        f"from the weights, through the unembedding; {w.left_out:,} tokens the model never produces left out"
        f" · decoder norm {w.decoder_norm:.3g}\n",
        style="dim",
    )
    if w.neighbours:
        out.append("nearest    ", style="bold")
        out.append(
            " · ".join(
                f"L{n.layer} #{n.feature} {n.cosine:.2f}" + (f" {printable(n.label)}" if n.label else "")
                for n in w.neighbours[:6]
            )
            + "  (by decoder cosine)\n"
        )


def sparkline(counts: Sequence[int]) -> str:
    """Counts as blocks, the largest full; an empty bin is a space, a nonzero one at least the lowest block."""
    top = max(counts, default=0)
    if top <= 0:
        return ""
    return "".join(" " if c == 0 else SPARK[max(1, round(c / top * (len(SPARK) - 1)))] for c in counts)


def _context(out: Text, c: Context) -> None:
    """One context: the peak bracketed and reversed, the tokens at half its activation or more reversed, the
    other active ones bold (so it reads without colour)."""
    out.append(f"{c.act:7.2f}  ", style="dim")
    for i, (tok, act) in enumerate(zip(c.tokens, c.acts, strict=True)):
        if i == c.focus:
            out.append(f"⟦{visible(tok)}⟧", style="bold reverse")
        elif act >= 0.5 * c.act and act > 0:
            out.append(visible(tok), style="reverse")
        else:
            out.append(visible(tok), style="bold" if act > 0 else "")
    out.append("\n")


def _prompt(out: Text, tokens: Sequence[str], acts: Sequence[float], width: int) -> None:
    out.append("\nthis prompt\n", style="bold")
    top = max(acts, default=0.0)
    cells = [visible(t) for t in tokens]
    for row in wrap_tokens(cells, width):
        for i in row:
            act = acts[i]
            strong = act > 0 and act >= 0.5 * top
            out.append(cells[i], style="bold reverse" if strong else ("bold" if act > 0 else "dim"))
            out.append(" ")
        out.append("\n")
        out.append(" ".join(block(acts[i], top).center(len(cells[i])) for i in row) + "\n")
