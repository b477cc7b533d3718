"""The inspector's keys: its bindings, and the footer's choice of them, most used first.

Every binding has an id (`~/.config/lenstop/keys.json` remaps keys by it); the description says what a key
does in `?` and the palette, the tooltip is the palette's line under it."""

from __future__ import annotations

from collections.abc import Iterable

from textual.binding import Binding, BindingType

from lenstop.tui.widgets.effects import InterventionTable
from lenstop.tui.widgets.features import FeatureTable
from lenstop.tui.widgets.footer import FooterKey
from lenstop.tui.widgets.heads import HeadsView

_TOKEN = "move the selection along the prompt"
_LAYER = "step through the layers"
_SCOPE = "new interventions act at every position, or at the selected token only"
_PANE = "go to the pane (1-4; tab cycles)"
_SPLIT = "move the split between the columns"
# The footer's keys, most used first: as many as fit, then "? every key" (tui/widgets/footer.py).
FOOTER = (
    FooterKey(("token.previous", "token.next"), "token"),
    FooterKey(("layer.previous", "layer.next"), "layer"),
    FooterKey(("ablate",), "ablate"),
    FooterKey(("steer",), "steer"),
    FooterKey(("knockout",), "head"),
    FooterKey(("generate",), "generate"),
    FooterKey(("circuit",), "circuit"),
    FooterKey(("prompt",), "prompt"),
    FooterKey(("pane.zoom",), "zoom"),
    FooterKey(("undo",), "undo"),
    FooterKey(("session.save",), "save"),
    FooterKey(("graph",), "graph"),
    FooterKey(("find",), "find"),
    FooterKey(("features.card",), "card"),
    FooterKey(("effects.toggle",), "on/off"),
    FooterKey(("effects.remove",), "remove"),
    FooterKey(("effects.edit",), "edit"),
    FooterKey(("effects.clear",), "clear all"),
    FooterKey(("clamp",), "clamp"),
    FooterKey(("scope",), "scope"),
    FooterKey(("token.go",), "go to"),
    FooterKey(("quit",), "quit"),
)
HINT = ("?", "more")
EDITING = (
    FooterKey(("prompt.leave",), "back to the keys"),
    FooterKey((), "analyse now", "⏎"),
    FooterKey((), "newline", r"\n"),
)
EDITING_HINT = ("esc ?", "every key")


# The description says what a key does in `?` and the palette, the tooltip is the palette's line under
# it; the footer shows these keys in its own order (FOOTER). key_display draws a pair in the footer.
BINDINGS: list[BindingType] = [
    Binding("q", "app.quit", "quit", id="quit", tooltip="leave lenstop"),
    Binding("question_mark", "help", "every key", id="help", tooltip="every key, where it acts, and its id"),
    Binding("h,left", "token(-1)", "previous token", key_display="←/→", id="token.previous", tooltip=_TOKEN),
    Binding("l,right", "token(1)", "next token", key_display="←/→", id="token.next", tooltip=_TOKEN),
    Binding("home", "token_at(0)", "first token", id="token.first", tooltip=_TOKEN),
    Binding("end", "token_at(-1)", "last token", id="token.last", tooltip=_TOKEN),
    Binding("number_sign", "go_to", "go to a position", id="token.go", tooltip="type a token's position"),
    Binding(
        "left_square_bracket", "layer(-1)", "previous layer", key_display="[ ]", id="layer.previous", tooltip=_LAYER
    ),
    Binding("right_square_bracket", "layer(1)", "next layer", key_display="[ ]", id="layer.next", tooltip=_LAYER),
    Binding("a", "ablate", "ablate the feature", id="ablate", tooltip="zero the selected feature; again to restore"),
    Binding("s", "steer", "steer the feature", id="steer", tooltip="add a strength you type × its decoder row"),
    Binding("c", "clamp", "clamp the feature", id="clamp", tooltip="set the selected feature to a value you type"),
    Binding("plus,equals_sign", "nudge(1)", "steer +1", id="steer.more", tooltip="steer the feature one more"),
    Binding("minus", "nudge(-1)", "steer -1", id="steer.less", tooltip="steer the feature one less"),
    Binding("x", "knockout", "knock out the head", id="knockout", tooltip="zero the selected head; again to restore"),
    Binding("at", "scope", "all positions or this token", id="scope", tooltip=_SCOPE),
    Binding("g", "generate", "continue the prompt", id="generate", tooltip="clean and intervened, side by side"),
    Binding("t", "circuit", "the circuit view", id="circuit", tooltip="why the model predicts what it does here"),
    Binding("G", "graph", "the attribution graph", id="graph", tooltip="of the next token here, on transcoders"),
    Binding("F", "find", "find features", id="find", tooltip="by label or id, by what fires here, by a token promoted"),
    Binding("u", "undo", "undo", id="undo", tooltip="undo the last change to the interventions"),
    Binding("slash", "focus_prompt", "edit the prompt", id="prompt", tooltip="type in the prompt box"),
    Binding("escape", "leave_prompt", "back to the keys", id="prompt.leave", tooltip="leave the prompt box"),
    Binding("1", "pane('features')", "features pane", id="pane.features", tooltip=_PANE),
    Binding("2", "pane('heads')", "heads pane", id="pane.heads", tooltip=_PANE),
    Binding("3", "pane('predictions')", "predictions pane", id="pane.predictions", tooltip=_PANE),
    Binding("4", "pane('effects')", "effects pane", id="pane.effects", tooltip=_PANE),
    Binding("z", "zoom", "zoom the pane", id="pane.zoom", tooltip="fill the screen with the active pane, or restore"),
    Binding("less_than_sign", "split(-1)", "narrower left column", id="pane.narrower", tooltip=_SPLIT),
    Binding("greater_than_sign", "split(1)", "wider left column", id="pane.wider", tooltip=_SPLIT),
    Binding("w", "save_session", "save the session", id="session.save", tooltip="to lenstop-session.json"),
]


def bindings_of(*groups: Iterable[object]) -> list[Binding]:
    """The `Binding`s of BINDINGS lists (which may also hold tuples)."""
    return [b for group in groups for b in group if isinstance(b, Binding)]


def help_groups(app_bindings: Iterable[object]) -> list[tuple[str, list[Binding]]]:
    """What `?` lists: the keys that act anywhere (the app's and the inspector's), then each pane's own."""
    groups = [("anywhere", bindings_of(app_bindings, BINDINGS))]
    for where, widget in (("features", FeatureTable), ("heads", HeadsView), ("interventions", InterventionTable)):
        groups.append((where, bindings_of(widget.BINDINGS)))
    return groups
