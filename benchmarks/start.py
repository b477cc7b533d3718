"""How long `lenstop` takes to show its first analysed screen on the demo, against what it
cannot avoid: importing TransformerLens and SAELens, booting the model and loading the
dictionaries bare, and one forward pass over the same prompt. Each is timed in a fresh
interpreter, from its first line (the interpreter's own start-up is the same for both).

    python benchmarks/start.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys

FLOOR = """
import time; t = time.perf_counter()
import gc, sys
if sys.argv[1:] == ["paused"]:
    gc.disable()  # as lenstop's load does (EngineSpec.load)
import sae_lens, transformer_lens, torch
from sae_lens import SAE
from transformer_lens.model_bridge import TransformerBridge
from lenstop.models.demo import MODEL_DIR, SAE_ROOT
from lenstop.tui.session import DEFAULT_PROMPT
imports = time.perf_counter() - t
model = TransformerBridge.boot_transformers(str(MODEL_DIR), device="cpu")
saes = [SAE.load_from_disk(p, device="cpu") for p in sorted(SAE_ROOT.iterdir()) if (p / "cfg.json").is_file()]
loaded = time.perf_counter() - t
with torch.no_grad():
    model(model.to_tokens(DEFAULT_PROMPT))
print(1000 * imports, 1000 * loaded, 1000 * (time.perf_counter() - t))
"""

APP = """
import time; t = time.perf_counter()
import asyncio
from lenstop.models.engine_spec import EngineSpec
from lenstop.tui.app import LenstopApp
from lenstop.tui.session import Session
app = LenstopApp(EngineSpec("demo", ("demo",)), session=Session())
async def main():
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t
        while app.inspector.analysis is None:
            await pilot.pause(0.005)
        await pilot.pause()  # the analysed frame is drawn
        print(1000 * first, 1000 * (time.perf_counter() - t))
asyncio.run(main())
"""


def run(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.strip().splitlines()[-1].split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    floors = [run(FLOOR) for _ in range(args.repeats)]
    paused = [run(FLOOR, "paused")[2] for _ in range(args.repeats)]
    apps = [run(APP) for _ in range(args.repeats)]
    imports, loaded, floor = (statistics.median(f[i] for f in floors) for i in range(3))
    painted, analysed = (statistics.median(a[i] for a in apps) for i in range(2))
    print(f"lenstop start · {platform.processor() or platform.machine()} · median of {args.repeats} fresh processes")
    print("| what | ms | ratio |")
    print("| --- | ---: | --- |")
    print(f"| import TransformerLens + SAELens (floor part) | {imports:.0f} | |")
    print(f"| + boot the demo model and load its dictionaries, bare | {loaded:.0f} | |")
    print(f"| + one forward pass over the first prompt = floor | {floor:.0f} | 1.00 |")
    print(f"| the floor with the garbage collector paused, as lenstop loads | {statistics.median(paused):.0f} | |")
    print(f"| lenstop: first frame (loading screen) | {painted:.0f} | {painted / floor:.2f} × floor |")
    print(
        f"| lenstop: first analysed screen | {analysed:.0f} | {analysed / floor:.2f} × floor, "
        f"{analysed / statistics.median(paused):.2f} × paused floor |"
    )


if __name__ == "__main__":
    main()
