"""Text a stranger wrote, for the tests of what reaches the terminal: the attacks found
against lenstop (a clipboard write, a retitle, markup that crashes or links), random
strings from every Unicode plane, and a fake engine whose every string is one of them.

`unsafe_in` says what of a terminal's input is neither printable text nor lenstop's own
styling; the tests assert it finds nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import strategies as st
from rich.segment import Segment
from rich.text import Text

from lenstop.models.circuits.results import Attribution, Circuit, HeadRoles, NodeScore, Patching
from lenstop.models.circuits.spec import Metric
from lenstop.models.errors import UsageError
from lenstop.models.feature_cards import Context, FeatureCard
from lenstop.models.interventions import Intervention
from lenstop.models.results import (
    Analysis,
    Continuation,
    Generation,
    LayerAttention,
    LayerFeatures,
    ModelInfo,
    TopTokens,
)
from lenstop.models.safe_text import UNSAFE_BESIDE_NEWLINES

from fake_engine import FakeEngine

CLIPBOARD = "\x1b]52;c;aGVsbG8gZnJvbSBhIGxhYmVs\x1b\\"  # OSC 52: writes the user's clipboard
ATTACKS = (
    CLIPBOARD,
    "\x1b]0;owned\x07",  # OSC 0: retitles the window
    "\x1b[2J\x1b[H",  # clears the screen
    "\x9b31m",  # C1 CSI, obeyed by terminals in 8-bit mode
    "[/]",  # closes a markup tag nobody opened: MarkupError
    "[link=file:///etc/passwd]x[/link]",  # an OSC 8 hyperlink, if read as markup
    "d_[blink red]X",
    "abc\u202edef",  # a right-to-left override
    "\ud800",  # a lone surrogate: cannot even be encoded
    "a\nb\tc\rd",
)
hostile_text = st.one_of(
    st.sampled_from(ATTACKS),
    st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=24),
    st.lists(st.sampled_from(ATTACKS), min_size=2, max_size=3).map("".join),
)

SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and attributes: the only sequences lenstop's own styling sends


def unsafe_in(output: str) -> list[str]:
    """What of a terminal's input is neither printable text nor a colour or attribute sequence."""
    return UNSAFE_BESIDE_NEWLINES.findall(SGR.sub("", output))


def nets_must_not_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under each text builder there is a net that shows what it left (`tui.safe.safe_text` in the app, the
    console's render hook in the CLI), but as `�` for C1 and bidi characters: it is there for the builder that
    forgets. Tests make the net fail instead, so that they check the builders themselves."""
    from lenstop.commands import render
    from lenstop.tui import safe

    def builders_sanitise(text: Text) -> Text:
        left = UNSAFE_BESIDE_NEWLINES.findall(text.plain)
        assert not left, f"a text builder left {left!r} in {text.plain[:80]!r} for the net to catch"
        return text

    def console_sanitises(text: str, *, keep_newlines: bool = False) -> str:
        raise AssertionError(f"a renderer left {UNSAFE_BESIDE_NEWLINES.findall(text)!r} for the console's net")

    monkeypatch.setattr(safe, "safe_text", builders_sanitise)
    monkeypatch.setattr(render, "glyphs", console_sanitises)


def unsafe_segments(segments: Sequence[Segment]) -> list[str]:
    """The control characters in the text of rendered segments (Rich's own control segments, which move
    the cursor and set styles, are not text)."""
    return [c for s in segments if not s.control for c in UNSAFE_BESIDE_NEWLINES.findall(s.text)]


@dataclass
class HostileEngine(FakeEngine):
    """The fake engine, with every string it hands out (labels, tokens, names, cards, errors) taken from
    `words` in turn: what a downloaded label file, tokenizer or checkpoint could hold."""

    words: Sequence[str] = ATTACKS
    failing: bool = False  # every call but the analysis fails, its message holding the words too
    _next: Iterator[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(self.words)

    def word(self) -> str:
        return next(self._next)

    def _maybe_fail(self, what: str) -> None:
        if self.failing:
            raise UsageError(f"{what} failed on {self.word()} in {self.word()}; try another")

    def _tokens(self, tokens: Sequence[str]) -> tuple[str, ...]:
        return tuple(self.word() if i % 2 else t for i, t in enumerate(tokens))

    def _top_tokens(self, top: TopTokens | None) -> TopTokens | None:
        if top is None:
            return None
        return replace(top, strings=tuple(tuple(self.word() for _ in row) for row in top.strings))

    def _taint_layer(self, lf: LayerFeatures) -> LayerFeatures:
        ids = {int(i) for i in lf.union_ids} | set(lf.labels)
        return replace(lf, hook=self.word(), dictionary=self.word(), labels={i: self.word() for i in ids})

    def info(self) -> ModelInfo:
        info = super().info()
        dictionaries = tuple(replace(d, key=self.word(), source=self.word()) for d in info.dictionaries)
        return replace(info, name=self.word(), architecture=self.word(), dictionaries=dictionaries)

    def analyse(self, prompt: str, interventions: Sequence[Intervention] = (), **options: object) -> Analysis:
        found = super().analyse(prompt, interventions, **options)  # type: ignore[arg-type]
        return replace(
            found,
            model=self.word(),
            tokens=self._tokens(found.tokens),
            layers=tuple(self._taint_layer(lf) for lf in found.layers),
            predictions=self._top_tokens(found.predictions),
            clean_predictions=self._top_tokens(found.clean_predictions),
            lens=tuple(self._top_tokens(top) for top in found.lens),
            shifts=None
            if found.shifts is None
            else tuple(tuple(replace(s, token=self.word()) for s in row) for row in found.shifts),
        )

    def features(
        self, prompt: str, layer: int, interventions: Sequence[Intervention] = (), *, top_k: int = 10
    ) -> LayerFeatures:
        self._maybe_fail("features")
        return self._taint_layer(super().features(prompt, layer, interventions, top_k=top_k))

    def attention(self, prompt: str, layer: int, interventions: Sequence[Intervention] = ()) -> LayerAttention:
        self._maybe_fail("attention")
        return super().attention(prompt, layer, interventions)

    def card(self, layer: int, feature: int) -> FeatureCard | None:
        self._maybe_fail("card")
        super().card(layer, feature)
        context = Context((self.word(), self.word(), self.word()), (0.0, 2.0, 1.0), 1, 2.0)
        return FeatureCard(
            feature, self.word(), 0.01, 1.0, 2.0, (context,), ((self.word(), 1.5),), ((self.word(), -0.5),)
        )

    def generate(self, prompt: str, interventions: Sequence[Intervention] = (), **options: object) -> Generation:
        self._maybe_fail("generation")
        found = super().generate(prompt, interventions, **options)  # type: ignore[arg-type]

        def taint(c: Continuation) -> Continuation:
            strings = tuple(self.word() for _ in c.tokens)
            return Continuation(c.token_ids, strings, "".join(strings))

        return replace(
            found,
            clean=taint(found.clean),
            intervened=None if found.intervened is None else taint(found.intervened),
        )

    def _scores(self, nodes: Sequence[NodeScore]) -> tuple[NodeScore, ...]:
        return tuple(replace(s, label=self.word()) if s.node.kind == "feature" else s for s in nodes)

    def attribute(self, prompt: str, metric: Metric = Metric(), **options: object) -> Attribution:
        self._maybe_fail("attribution")
        found = super().attribute(prompt, metric, **options)  # type: ignore[arg-type]
        metric_value = replace(found.metric, target=self.word())
        return replace(found, tokens=self._tokens(found.tokens), nodes=self._scores(found.nodes), metric=metric_value)

    def circuit(self, prompt: str, metric: Metric = Metric(), **options: object) -> Circuit:
        self._maybe_fail("circuit")
        found = super().circuit(prompt, metric, **options)  # type: ignore[arg-type]
        return replace(found, tokens=self._tokens(found.tokens), nodes=self._scores(found.nodes))

    def patch(self, clean: str, corrupt: str, metric: Metric = Metric(), **options: object) -> Patching:
        self._maybe_fail("patching")
        found = super().patch(clean, corrupt, metric, **options)  # type: ignore[arg-type]
        features = tuple(replace(f, label=self.word()) for f in found.features)
        return replace(found, tokens=self._tokens(found.tokens), features=features)

    def head_roles(self, *, refresh: bool = False) -> HeadRoles:
        return replace(super().head_roles(refresh=refresh), model=self.word())
