"""The keys that change the interventions: ablate, steer, clamp and knock out what is selected, and
switch, edit, remove or undo the entries of the list. Each change is one `InterventionList`, which the
inspector analyses again (and rolls back if it makes the run NaN)."""

from __future__ import annotations

from lenstop.models.interventions import (
    Adjustable,
    FeatureAblation,
    FeatureClamp,
    FeatureSteer,
    HeadKnockout,
)
from lenstop.tui.screens.selection import SelectionScreen
from lenstop.tui.screens.value import ValueScreen
from lenstop.tui.session import InterventionList
from lenstop.tui.widgets.effects import InterventionTable


class InterventionKeys(SelectionScreen):
    """The inspector with the keys that change its interventions; a change is said on the status line."""

    def _scope(self) -> int | None:
        return None if self.scope_all else self.position

    def _selected_feature(self) -> tuple[int, int] | None:
        if self._layer_features() is None or self.feature is None:
            self.status("select a feature first (features pane, j/k)", error=True)
            return None
        return self.current_layer, self.feature

    def _change(self, interventions: InterventionList, note: str) -> None:
        self.interventions = interventions
        self.status(note)

    def action_ablate(self) -> None:
        if (target := self._selected_feature()) is not None:
            self.ablate(target)

    def ablate(self, target: tuple[int, int]) -> None:
        """Ablate feature (layer, feature) at the scope's positions, or restore it."""
        if target is not None:
            ablation = FeatureAblation(*target, position=self._scope())
            changed = self.interventions.with_toggled(ablation)
            on_now = changed.find(ablation.slot) is not None
            self._change(changed, ("ablated" if on_now else "restored") + f" L{target[0]} #{target[1]}")

    def action_knockout(self) -> None:
        if self.info is not None:
            knockout = HeadKnockout(self.current_layer, self.head, position=self._scope())
            changed = self.interventions.with_toggled(knockout)
            on_now = changed.find(knockout.slot) is not None
            self._change(
                changed, ("knocked out" if on_now else "restored") + f" head L{self.current_layer}.H{self.head}"
            )

    def _steer_now(self, layer: int, feature: int) -> float | None:
        steer = self.interventions.find(FeatureSteer(layer, feature, 0.0, self._scope()).slot)
        return steer.amount if isinstance(steer, FeatureSteer) else None

    def action_steer(self) -> None:
        if (target := self._selected_feature()) is not None:
            self.steer(target)

    def steer(self, target: tuple[int, int]) -> None:
        """Ask a strength, then steer feature (layer, feature) by it at the scope's positions."""
        position = self._scope()

        def done(value: float | None) -> None:
            if value is not None:
                steer = FeatureSteer(*target, value, position=position)
                self._change(self.interventions.with_added(steer), f"steering L{target[0]} #{target[1]} by {value:+g}")

        default = self._steer_now(*target)
        question = f"steer L{target[0]} #{target[1]}: strength (× its decoder row)"
        self.app.push_screen(ValueScreen(question, 5.0 if default is None else default), done)

    def action_nudge(self, step: float) -> None:
        if (target := self._selected_feature()) is not None:
            strength = (self._steer_now(*target) or 0.0) + step
            steer = FeatureSteer(*target, strength, position=self._scope())
            self._change(self.interventions.with_added(steer), f"steering L{target[0]} #{target[1]} by {strength:+g}")

    def action_clamp(self) -> None:
        if (target := self._selected_feature()) is None:
            return
        position = self._scope()
        lf = self._layer_features()
        acts = lf.activation_of(target[1]) if lf is not None else None
        default = float(acts.max()) * 2 if acts is not None and acts.max() > 0 else 10.0

        def done(value: float | None) -> None:
            if value is not None:
                clamp = FeatureClamp(*target, value, position=position)
                self._change(self.interventions.with_added(clamp), f"clamped L{target[0]} #{target[1]} to {value:g}")

        self.app.push_screen(ValueScreen(f"clamp L{target[0]} #{target[1]} to value", default), done)

    def action_undo(self) -> None:
        undone = self.interventions.undone()
        if undone is None:
            self.status("nothing to undo")
        else:
            self._change(undone, "undone")

    def _entry_index(self) -> int | None:
        entries = self.interventions.entries
        return min(max(0, self.query_one(InterventionTable).cursor_row), len(entries) - 1) if entries else None

    def action_toggle_entry(self) -> None:
        if (index := self._entry_index()) is not None:
            changed = self.interventions.with_switched(index)
            self._change(changed, "switched " + ("on" if changed.entries[index].enabled else "off"))

    def action_remove_entry(self) -> None:
        if (index := self._entry_index()) is not None:
            self._change(self.interventions.without(index), "removed")

    def action_clear_entries(self) -> None:
        self._change(self.interventions.cleared(), "cleared all interventions")

    def action_edit_entry(self) -> None:
        if (index := self._entry_index()) is None:
            return
        iv = self.interventions.entries[index].intervention
        if not isinstance(iv, Adjustable):
            self.status("only steers and clamps have a value to edit")
            return

        def done(value: float | None) -> None:
            if value is not None:
                self._change(self.interventions.with_amount(index, value), f"{iv.kind} set to {value:g}")

        self.app.push_screen(ValueScreen(f"{iv.describe()}: new {iv.value_name}", iv.amount), done)
