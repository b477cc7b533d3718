"""The first screen paints before torch, TransformerLens or SAELens are imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_first_paint_comes_before_the_heavy_imports(tiny_model: Path, resid_saes: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, threading
        from lenstop.tui.app import LenstopApp
        from lenstop.models.engine_spec import EngineSpec
        from lenstop.tui.session import Session

        gate = threading.Event()

        def factory(spec, progress):
            gate.wait(120)  # hold the load until the first screen has been checked
            return spec.load(progress)

        async def main():
            spec = EngineSpec({str(tiny_model)!r}, ({str(resid_saes)!r},), device="cpu")
            app = LenstopApp(spec, session=Session(model="tiny", prompt="import os"), factory=factory)
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.pause()
                header = str(app.inspector.query_one("#header").render())
                print("painted", "lenstop" in header and "loading" in header)
                print("heavy-before", any(m in sys.modules for m in ("torch", "transformer_lens", "sae_lens")))
                gate.set()
                await app.workers.wait_for_complete()
                await pilot.pause()
                await app.workers.wait_for_complete()
                await pilot.pause()
                print("loaded", app.inspector.engine is not None and app.inspector.analysis is not None)
                print("heavy-after", "torch" in sys.modules)

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines == {"painted": "True", "heavy-before": "False", "loaded": "True", "heavy-after": "True"}, out.stdout
