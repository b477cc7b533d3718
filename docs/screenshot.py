"""Make docs/screenshot.svg: the inspector on the bundled demo at 120x40, with an
ablation active, exactly as a user would see it after a few keys.

    python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session

PROMPT = r"def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first - second"
KEYS = ["right_square_bracket", "left", "left", "left", "j"]


async def main() -> None:
    app = LenstopApp(EngineSpec("demo", device="cpu"), session=Session(model="demo", prompt=PROMPT), show_timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        await pilot.press(*KEYS)
        await pilot.press("a")
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        await pilot.press("4")  # leave the focus on the interventions list, as after an edit
        await pilot.pause()
        out = Path(__file__).resolve().parent / "screenshot.svg"
        out.write_text(app.export_screenshot(title="lenstop · demo"))
        print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
