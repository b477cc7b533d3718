"""The inspector's keys that open other views on what is selected: the circuit view (`t`), the attribution
graph (`G`), and finding features (`F`), whose results come back here to be opened, ablated, steered or
followed in the graph."""

from __future__ import annotations

from lenstop.models.protocol import EngineProtocol
from lenstop.tui.keymap import Keymap
from lenstop.tui.screens.circuit import CircuitScreen
from lenstop.tui.screens.editing import InterventionKeys
from lenstop.tui.screens.feature_card import fetch_card
from lenstop.tui.screens.find import FindScreen, Found
from lenstop.tui.screens.graph import GraphCache, GraphScreen
from lenstop.tui.work import EngineWork


class ViewKeys(InterventionKeys):
    """The inspector with the keys that open the circuit view, the graph view and the find screen."""

    # what the inspector makes: its engine once loaded, its worker calls, and the graphs built on the engine
    engine: EngineProtocol | None
    work: EngineWork
    graphs: GraphCache
    keymap: Keymap

    def action_circuit(self) -> None:
        """Why this prediction: the circuit view for the selected token's next-token prediction."""
        if self.engine is None or self.analysis is None:
            return
        ignored = len(self.interventions.active)
        circuit = CircuitScreen(self.engine, self.analysis.prompt, self.position, ignored=ignored, keymap=self.keymap)
        self.app.push_screen(circuit)

    def action_graph(self, focus: tuple[int, int] | None = None) -> None:
        """The attribution graph of the selected token's next-token prediction, on the prompt cut there; `focus`
        (layer, feature) selects that feature's node."""
        a = self.analysis
        if self.engine is not None and a is not None:
            bos, ignored = self.info is None or self.info.prepend_bos, len(self.interventions.active)
            graph = GraphScreen(self.engine, a.prompt, a.tokens, self.position, bos=bos, keymap=self.keymap)
            if focus is not None:
                graph.focusing(*focus)
            self.app.push_screen(graph.using(self.graphs, ignored))

    def action_find(self) -> None:
        """Find features by label or id, by what fires on the selected token, or by a token they promote."""
        a = self.analysis
        if self.engine is not None:
            screen = FindScreen(self.engine, a.prompt if a is not None else "", self.position)
            self.app.push_screen(screen, self._found)

    def _found(self, found: Found | None) -> None:
        if found is None or self.engine is None:
            return
        target = (found.layer, found.feature)
        if found.action == "ablate":
            self.ablate(target)
        elif found.action == "steer":
            self.steer(target)
        elif found.action == "graph":
            self.action_graph(focus=target)
        else:
            width = max(20, int(self.size.width * 0.95) - 4)
            tokens = self.analysis.tokens if self.analysis is not None else ()
            fetch_card(self.work, self.engine, *target, width, tokens, None)
