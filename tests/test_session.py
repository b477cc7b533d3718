"""The interventions list with its undo, the session file, and the engine spec the
app keeps for a retry: plain values, tested without an app."""

from __future__ import annotations

from pathlib import Path

import pytest

from lenstop.models.engine_spec import EngineSpec
from lenstop.models.errors import BadFileError, UsageError
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout
from lenstop.tui.session import UNDO_DEPTH, Entry, InterventionList, Selection, Session


def test_an_intervention_replaces_what_acts_on_the_same_slot() -> None:
    ablated = InterventionList().with_added(FeatureAblation(1, 5))
    clamped = ablated.with_added(FeatureClamp(1, 5, 3.0))  # both set feature 5's value: the clamp wins
    assert clamped.active == (FeatureClamp(1, 5, 3.0),)
    both = clamped.with_added(FeatureSteer(1, 5, 2.0)).with_added(FeatureAblation(1, 5, position=2))
    assert both.active == (FeatureClamp(1, 5, 3.0), FeatureSteer(1, 5, 2.0), FeatureAblation(1, 5, 2))


def test_toggle_switch_edit_remove_and_undo() -> None:
    steps = [InterventionList()]
    steps.append(steps[-1].with_toggled(HeadKnockout(0, 1)))
    steps.append(steps[-1].with_added(FeatureSteer(1, 2, 4.0)))
    steps.append(steps[-1].with_switched(0))
    assert steps[-1].entries == (Entry(HeadKnockout(0, 1), False), Entry(FeatureSteer(1, 2, 4.0)))
    assert steps[-1].active == (FeatureSteer(1, 2, 4.0),)
    steps.append(steps[-1].with_amount(1, -1.5))
    assert steps[-1].active == (FeatureSteer(1, 2, -1.5),)
    assert steps[-1].with_amount(0, 9.0) is steps[-1]  # a knockout has no amount
    steps.append(steps[-1].with_toggled(HeadKnockout(0, 1)))  # toggled again: gone
    assert [e.intervention for e in steps[-1].entries] == [FeatureSteer(1, 2, -1.5)]
    steps.append(steps[-1].without(0).cleared())
    current: InterventionList | None = steps[-1]
    for expected in reversed(steps[:-1]):
        assert current is not None
        current = current.undone()
        if current is not None and current.entries != expected.entries:
            current = current.undone()  # without() then cleared() of an empty list is one change
        assert current is not None and current.entries == expected.entries
    assert current is not None and current.undone() is None


def test_undo_history_is_bounded() -> None:
    items = InterventionList()
    for i in range(UNDO_DEPTH + 20):
        items = items.with_added(FeatureSteer(0, 1, float(i)))
    assert len(items.history) == UNDO_DEPTH


def test_session_round_trips_through_its_file(tmp_path: Path) -> None:
    session = Session(
        model="gpt2",
        saes=["gpt2-small-res-jb"],
        prompt="a\\nb",
        selection=Selection(layer=3, position=2, feature=11, head=4),
        entries=(Entry(FeatureAblation(3, 11)), Entry(HeadKnockout(2, 1, position=-1), False)),
    )
    path = session.save(tmp_path / "s.json")
    assert Session.load(path) == session


def test_a_session_file_from_another_version_or_shape_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"version": 99}')
    with pytest.raises(BadFileError, match="version 99 was written by a newer lenstop"):
        Session.load(path)
    path.write_text('{"version": "1"}')
    with pytest.raises(BadFileError, match="version '1' is not 1"):
        Session.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(BadFileError, match="expected a JSON object"):
        Session.load(path)
    path.write_bytes(b'{"version": 1, "prompt": "\xff"}')
    with pytest.raises(BadFileError, match="not UTF-8"):
        Session.load(path)


def test_the_retry_box_reads_back_what_it_shows() -> None:
    spec = EngineSpec("gpt2", ("gpt2-small-res-jb:blocks.8.hook_resid_pre", "my dir/saes"), device="cuda:1")
    assert spec.command_line() == "gpt2 --sae gpt2-small-res-jb:blocks.8.hook_resid_pre --sae 'my dir/saes'"
    assert spec.retarget(spec.command_line()) == spec
    other = spec.retarget("  ./local-model  ")
    assert other == EngineSpec("./local-model", (), device="cuda:1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "type a model"),
        ("--sae x", "type a model"),
        ("gpt2 --sae", "unexpected '--sae'"),
        ("gpt2 'x", "cannot read"),
    ],
)
def test_the_retry_box_explains_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        EngineSpec("demo").retarget(text)


def test_a_session_saved_before_the_scope_was_kept_reads_as_all_positions(tmp_path: Path) -> None:
    session = Session(model="gpt2", prompt="x", scope_all=False)
    doc = session.to_json()
    assert doc["scope"] == "token" and Session.from_json(doc).scope_all is False
    del doc["scope"]
    assert Session.from_json(doc).scope_all is True
