"""Make the README's screen captures, exactly as a user sees them after a few keys:

- docs/screenshot.svg: the inspector on the bundled demo at 120x40, with an ablation active;
- docs/circuit.svg: the circuit view on a repeated random span, with a corrupted prompt, integrated
  gradients, and the strongest induction head of layer 1 followed upstream;
- docs/graph.svg: the attribution-graph view of the same span on the demo's transcoders, the copied token
  (the first ' seconds', which the induction heads read) followed from the prediction;
- docs/graph-viewer.png: that graph exported (`lenstop graph --out`) and drawn by circuit-tracer's own viewer
  in headless Chromium, the same feature clicked (tests/reference/viewer.py builds what it needs).

    python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.screens.circuit import CircuitScreen, ContributorTable
from lenstop.tui.session import Session

HERE = Path(__file__).resolve().parent
PROMPT = r"def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first - second"
KEYS = ["right_square_bracket", "left", "left", "left", "j"]
# The README's worked example: a span of single-token words, then the span again without its last word.
SPAN = " or keys Otherwise beha operand wait contin end us NO range seconds"
INDUCTION = SPAN + SPAN.rsplit(" ", 1)[0]
CORRUPT = " sub dict class also pro info attrs item save self show month" + SPAN.rsplit(" ", 1)[0]


async def settle(app: LenstopApp, pilot: Pilot[None]) -> None:
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def inspector() -> None:
    app = LenstopApp(EngineSpec("demo", device="cpu"), session=Session(model="demo", prompt=PROMPT), show_timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press(*KEYS)
        await pilot.press("a")
        await settle(app, pilot)
        await pilot.press("4")  # leave the focus on the interventions list, as after an edit
        await pilot.pause()
        (HERE / "screenshot.svg").write_text(app.export_screenshot(title="lenstop · demo"))


async def circuit() -> None:
    session = Session(model="demo", prompt=INDUCTION)
    app = LenstopApp(EngineSpec("demo", device="cpu"), session=session, show_timings=False)
    async with app.run_test(size=(140, 42)) as pilot:
        await settle(app, pilot)
        await pilot.press("t")
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        app.screen.query_one(Input).value = CORRUPT
        await pilot.press("enter")
        await pilot.press("w")
        await pilot.pause()
        app.screen.query_one(Input).value = " range"
        await pilot.press("enter", "i", "d")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, CircuitScreen)
        table = screen.query_one(ContributorTable)
        row = next(i for i, s in enumerate(table.scores) if s.node.kind == "head" and s.node.layer == 1)
        table.move_cursor(row=row)
        await pilot.press("enter")
        await settle(app, pilot)
        (HERE / "circuit.svg").write_text(app.export_screenshot(title="lenstop · circuit"))


COPIED_TOKEN = ("embed", 12)  # the first ' seconds', which the induction heads copy to the last position
COPIED_FEATURE = ("feature", 0, 12, 198)  # L0 #198 there, the one layer-0 feature active at ' seconds'


async def graph() -> None:
    from lenstop.tui.screens.graph import GraphScreen

    session = Session(model="demo", saes=["demo:transcoders"], prompt=INDUCTION)
    app = LenstopApp(EngineSpec("demo", ("demo:transcoders",), device="cpu"), session=session, show_timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("G")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, GraphScreen) and screen.graph is not None and screen.selected is not None
        found = screen.graph
        inputs = [(n.kind, n.position) for n in (found.nodes[i] for i, _ in found.inputs(screen.selected, 4))]
        await pilot.press(str(inputs.index(COPIED_TOKEN) + 1))
        await settle(app, pilot)
        (HERE / "graph.svg").write_text(app.export_screenshot(title="lenstop · graph"))


def viewer() -> None:
    import subprocess
    import sys
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests" / "reference"))
    import viewer as harness

    folder = Path(tempfile.mkdtemp(prefix="lenstop-graph-"))
    subprocess.run(["lenstop", "graph", "--prompt", INDUCTION, "--out", str(folder / "induction.json")], check=True)
    layer, pos, feature = COPIED_FEATURE[1:]
    harness.check_graph_in_viewer(
        folder, "induction", click_node_id=f"{layer}_{feature}_{pos}", screenshot=HERE / "graph-viewer.png"
    )


if __name__ == "__main__":
    asyncio.run(inspector())
    asyncio.run(circuit())
    asyncio.run(graph())
    viewer()
    print(
        f"wrote {HERE / 'screenshot.svg'}, {HERE / 'circuit.svg'}, {HERE / 'graph.svg'} and {HERE / 'graph-viewer.png'}"
    )
