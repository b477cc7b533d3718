"""Interventions a user can ask for, as plain frozen values.

They are parsed from the CLI syntax (`L:F@POS`, `L:F:STRENGTH`, `L.H`) and built
into hooks by `lenstop.models.runtime.run_plan`; nothing here touches torch, so the CLI and
the TUI can create, show and save them without the heavy imports.

Each kind is its own type: code that treats kinds differently matches on the
type, and `kind` (a class constant) is only the name used in JSON.

Positions index the prompt's tokens as the model sees them (BOS included);
negative positions count from the end of the prompt, so `@-1` is the last token.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

from lenstop.models.errors import UsageError

# What an intervention acts on: (what it does to it, layer, feature or head, position).
# Two interventions with the same slot cannot both apply; the later one replaces the earlier.
Slot = tuple[str, int, int, int | None]


def _where(position: int | None) -> str:
    return "all positions" if position is None else f"at pos {position}"


@dataclass(frozen=True)
class FeatureAblation:
    """Set feature `feature` of the dictionary at `layer` to zero, keeping the error term."""

    layer: int
    feature: int
    position: int | None = None
    kind: ClassVar[str] = "ablate"

    def describe(self) -> str:
        return f"ablate L{self.layer} #{self.feature} {_where(self.position)}"

    @property
    def slot(self) -> Slot:
        return ("set", self.layer, self.feature, self.position)  # shared with clamps: both set the value


@dataclass(frozen=True)
class FeatureSteer:
    """Add `strength` times the feature's raw decoder row at the dictionary's output hook."""

    layer: int
    feature: int
    strength: float
    position: int | None = None
    kind: ClassVar[str] = "steer"
    value_name: ClassVar[str] = "strength"

    def describe(self) -> str:
        return f"steer L{self.layer} #{self.feature} {self.strength:+g} {_where(self.position)}"

    @property
    def slot(self) -> Slot:
        return ("steer", self.layer, self.feature, self.position)

    @property
    def amount(self) -> float:
        """The number a user can edit: here the strength."""
        return self.strength

    def with_amount(self, amount: float) -> FeatureSteer:
        return replace(self, strength=amount)


@dataclass(frozen=True)
class FeatureClamp:
    """Set feature `feature` to `value` (wherever it is), keeping the error term."""

    layer: int
    feature: int
    value: float
    position: int | None = None
    kind: ClassVar[str] = "clamp"
    value_name: ClassVar[str] = "value"

    def describe(self) -> str:
        return f"clamp L{self.layer} #{self.feature} ={self.value:g} {_where(self.position)}"

    @property
    def slot(self) -> Slot:
        return ("set", self.layer, self.feature, self.position)

    @property
    def amount(self) -> float:
        """The number a user can edit: here the value."""
        return self.value

    def with_amount(self, amount: float) -> FeatureClamp:
        return replace(self, value=amount)


@dataclass(frozen=True)
class HeadKnockout:
    """Zero the output (hook_z) of attention head `head` in layer `layer`."""

    layer: int
    head: int
    position: int | None = None
    kind: ClassVar[str] = "knockout"

    def describe(self) -> str:
        return f"knock out L{self.layer}.H{self.head} {_where(self.position)}"

    @property
    def slot(self) -> Slot:
        return ("head", self.layer, self.head, self.position)


FeatureIntervention = FeatureAblation | FeatureSteer | FeatureClamp
Intervention = FeatureAblation | FeatureSteer | FeatureClamp | HeadKnockout
Adjustable = FeatureSteer | FeatureClamp  # the kinds that carry a number to edit

_BY_KIND: dict[str, type[Intervention]] = {
    cls.kind: cls for cls in (FeatureAblation, FeatureSteer, FeatureClamp, HeadKnockout)
}


def to_dict(intervention: Intervention) -> dict[str, object]:
    """A JSON-ready dict with the kind's name; `from_dict` reads it back."""
    return {**asdict(intervention), "kind": intervention.kind}


def from_dict(data: dict[str, object]) -> Intervention:
    kind = data.get("kind")
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UsageError(f"unknown intervention kind {kind!r}; expected one of {', '.join(_BY_KIND)}")
    fields = {k: v for k, v in data.items() if k != "kind"}
    try:
        return cls(**fields)  # type: ignore[arg-type]  # checked by the constructor itself
    except TypeError as err:
        raise UsageError(f"bad {kind} intervention {data}: {err}") from None


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POS = r"(?:@(?P<pos>[-+]?\d+))?"
_FEATURE = re.compile(rf"^(?P<layer>\d+):(?P<feature>\d+){_POS}$")
_FEATURE_VALUE = re.compile(rf"^(?P<layer>\d+):(?P<feature>\d+):(?P<value>{_NUM}){_POS}$")
_HEAD = re.compile(rf"^(?P<layer>\d+)\.(?P<head>\d+){_POS}$")


def _position(match: re.Match[str]) -> int | None:
    pos = match.group("pos")
    return None if pos is None else int(pos)


def parse_ablation(spec: str) -> FeatureAblation:
    """`L:F` or `L:F@POS`."""
    m = _FEATURE.match(spec.strip())
    if not m:
        raise UsageError(f"bad --ablate {spec!r}: expected LAYER:FEATURE[@POS], e.g. 3:1021 or 3:1021@-1")
    return FeatureAblation(int(m["layer"]), int(m["feature"]), _position(m))


def parse_steer(spec: str) -> FeatureSteer:
    """`L:F:STRENGTH` or `L:F:STRENGTH@POS`."""
    m = _FEATURE_VALUE.match(spec.strip())
    if not m:
        raise UsageError(f"bad --steer {spec!r}: expected LAYER:FEATURE:STRENGTH[@POS], e.g. 3:1021:8 or 3:1021:-4@5")
    return FeatureSteer(int(m["layer"]), int(m["feature"]), float(m["value"]), _position(m))


def parse_clamp(spec: str) -> FeatureClamp:
    """`L:F:VALUE` or `L:F:VALUE@POS`."""
    m = _FEATURE_VALUE.match(spec.strip())
    if not m:
        raise UsageError(f"bad --clamp {spec!r}: expected LAYER:FEATURE:VALUE[@POS], e.g. 3:1021:10")
    return FeatureClamp(int(m["layer"]), int(m["feature"]), float(m["value"]), _position(m))


def parse_head(spec: str) -> HeadKnockout:
    """`L.H` or `L.H@POS`."""
    m = _HEAD.match(spec.strip())
    if not m:
        raise UsageError(f"bad --ablate-head {spec!r}: expected LAYER.HEAD[@POS], e.g. 1.3")
    return HeadKnockout(int(m["layer"]), int(m["head"]), _position(m))


def parse_all(
    ablate: list[str] | None = None,
    steer: list[str] | None = None,
    clamp: list[str] | None = None,
    heads: list[str] | None = None,
) -> tuple[Intervention, ...]:
    """Every intervention given on a command line, in a stable order."""
    return (
        *(parse_ablation(s) for s in ablate or ()),
        *(parse_steer(s) for s in steer or ()),
        *(parse_clamp(s) for s in clamp or ()),
        *(parse_head(s) for s in heads or ()),
    )
