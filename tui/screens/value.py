"""One-line prompts: a number (a steering strength, a clamp value), or a text (a token, a prompt)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from lenstop.models.safe_text import printable
from lenstop.tui.safe import SafeLabel
from lenstop.tui.widgets.field import Field


class ValueScreen(ModalScreen[float | None]):
    BINDINGS = [Binding("escape", "cancel", "cancel", id="value.cancel")]
    DEFAULT_CSS = """
    ValueScreen { align: center middle; }
    ValueScreen > Vertical { width: 60; height: auto; border: round $accent; padding: 0 1; background: $surface; }
    ValueScreen #value-error { color: $error; }
    """

    def __init__(self, question: str, default: float) -> None:
        super().__init__()
        self.question, self.default = question, default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield SafeLabel(self.question)
            yield Field(value=f"{self.default:g}", id="value-input")
            yield SafeLabel("enter to apply · esc to cancel", id="value-error")

    def on_mount(self) -> None:
        field = self.query_one("#value-input", Input)
        field.focus()
        field.select_all()  # typing replaces the default

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            value = float(event.value)
        except ValueError:
            self.query_one("#value-error", Label).update(f"{event.value!r} is not a number")
            return
        if value != value or value in (float("inf"), float("-inf")):
            self.query_one("#value-error", Label).update("the value must be a finite number")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[str | None]):
    """A one-line prompt for a text (a token, a corrupted prompt); empty means none."""

    BINDINGS = [Binding("escape", "cancel", "cancel", id="text.cancel")]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > Vertical {
        width: 90%; max-width: 100; height: auto; border: round $accent; padding: 0 1; background: $surface;
    }
    """

    def __init__(self, question: str, default: str = "", hint: str = "enter to apply · esc to cancel") -> None:
        super().__init__()
        self.question, self.default, self.hint = question, default, hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield SafeLabel(self.question)
            yield Field(value=self.default, id="text-input")
            yield SafeLabel(self.hint, classes="hint")

    def on_mount(self) -> None:
        self.query_one("#text-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PositionScreen(ValueScreen):
    """`#`: a token to go to, by its position; negative counts from the end, as `@POS` does in the CLI."""

    def __init__(self, n_tokens: int, current: int) -> None:
        super().__init__(f"go to position: 0..{n_tokens - 1}, or -1..-{n_tokens} from the end", current)
        self.n_tokens = n_tokens

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.prevent_default()  # not ValueScreen's: a position is a whole number in range
        text = event.value.strip()
        try:
            position = int(text)
        except ValueError:
            position = None
        if position is None or not -self.n_tokens <= position < self.n_tokens:
            why = f"{printable(text)!r} is not a position of this prompt (0..{self.n_tokens - 1})"
            self.query_one("#value-error", Label).update(Text(why))
            return
        self.dismiss(float(position % self.n_tokens))


class ConfirmScreen(ModalScreen[bool]):
    """A yes-or-no question: y says yes; n or esc says no."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "no", id="confirm.no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; height: auto; border: round $warning; padding: 0 1; background: $surface; }
    ConfirmScreen Label { width: 100%; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield SafeLabel(self.question)
            yield SafeLabel(Text("y: yes · n or esc: no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
