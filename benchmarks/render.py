"""How long the inspector takes from an analysis arriving to its frame drawn: the watchers
that fill every pane, then the compositor rendering the whole screen, at 200x50 with a
256-token prompt (from the fake engine of the tests, so that only the drawing is timed).

    python benchmarks/render.py [--tokens 256] [--size 200x50] [--repeats 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_engine import FakeEngine, FakeFactory  # noqa: E402 - in tests/, which the line above puts on the path


async def measure(tokens: int, width: int, height: int, repeats: int) -> tuple[list[float], list[float]]:
    engine = FakeEngine(n_ctx=4 * tokens, full_attention=False)
    prompt = " ".join(f"w{i % 97}" for i in range(tokens // 2))  # a word and a space: two tokens each
    app = LenstopApp(EngineSpec("fake"), session=Session(model="fake", prompt=prompt), factory=FakeFactory(engine))
    times: list[float] = []
    full: list[float] = []
    async with app.run_test(size=(width, height)) as pilot:
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        screen = app.inspector
        assert screen.analysis is not None and len(screen.analysis.tokens) >= tokens
        fresh = [
            engine.analyse(prompt, attention=[screen.current_layer], lens=False) for _ in range(repeats)
        ]  # as the app asks
        for analysis in fresh:
            tic = time.perf_counter()
            screen.analysis = analysis  # what AnalysisFinished does: the watchers fill every pane
            screen._refresh_layout()  # and the frame is laid out and drawn, as on the next idle
            times.append(1000 * (time.perf_counter() - tic))
            tic = time.perf_counter()
            screen._compositor.render_update(full=True)  # every cell of the screen, changed or not
            full.append(1000 * (time.perf_counter() - tic))
            await pilot.pause()
    return times, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--size", default="200x50")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    times, full = asyncio.run(measure(args.tokens, width, height, args.repeats))
    print(f"{args.tokens} tokens at {width}x{height}, {len(times)} analyses  median ms  max ms")
    print(f"analysis to frame (watchers, layout, changed cells)  {statistics.median(times):8.1f}  {max(times):6.1f}")
    print(f"a full repaint of every cell, for comparison         {statistics.median(full):8.1f}  {max(full):6.1f}")


if __name__ == "__main__":
    main()
