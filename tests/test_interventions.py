"""Parsing the CLI's intervention syntax, and saving interventions as JSON."""

from __future__ import annotations

import pytest

from lenstop.models.errors import UsageError
from lenstop.models.interventions import (
    FeatureAblation,
    FeatureClamp,
    FeatureSteer,
    HeadKnockout,
    from_dict,
    parse_ablation,
    parse_all,
    parse_clamp,
    parse_head,
    parse_steer,
    to_dict,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("3:1021", FeatureAblation(3, 1021)),
        ("3:1021@5", FeatureAblation(3, 1021, 5)),
        ("0:7@-1", FeatureAblation(0, 7, -1)),
    ],
)
def test_parse_ablation(spec: str, expected: FeatureAblation) -> None:
    assert parse_ablation(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2:5:8", FeatureSteer(2, 5, 8.0)),
        ("2:5:-4.5@3", FeatureSteer(2, 5, -4.5, 3)),
        ("2:5:1e2", FeatureSteer(2, 5, 100.0)),
    ],
)
def test_parse_steer(spec: str, expected: FeatureSteer) -> None:
    assert parse_steer(spec) == expected


def test_parse_clamp_and_head() -> None:
    assert parse_clamp("1:9:10@-2") == FeatureClamp(1, 9, 10.0, -2)
    assert parse_head("1.3") == HeadKnockout(1, 3)
    assert parse_head("0.2@4") == HeadKnockout(0, 2, 4)


@pytest.mark.parametrize(
    ("parser", "spec"),
    [
        (parse_ablation, "3"),
        (parse_ablation, "a:b"),
        (parse_ablation, "3:1@x"),
        (parse_steer, "3:1"),
        (parse_steer, "3:1:big"),
        (parse_clamp, "1:2:3:4"),
        (parse_head, "1:3"),
        (parse_head, "1.x"),
    ],
)
def test_bad_specs_name_the_option_and_the_syntax(parser, spec: str) -> None:
    with pytest.raises(UsageError) as info:
        parser(spec)
    message = str(info.value)
    assert spec in message and "expected" in message and "\n" not in message


def test_parse_all_keeps_kinds_in_order() -> None:
    got = parse_all(ablate=["1:2"], steer=["1:3:4"], clamp=["0:1:2"], heads=["0.1"])
    assert [i.kind for i in got] == ["ablate", "steer", "clamp", "knockout"]


def test_json_round_trip() -> None:
    items = [FeatureAblation(1, 2, -1), FeatureSteer(0, 3, -2.5), FeatureClamp(1, 4, 9.0, 2), HeadKnockout(1, 0)]
    assert [from_dict(to_dict(i)) for i in items] == items
    with pytest.raises(UsageError):
        from_dict({"kind": "explode", "layer": 1})
