"""The corpus pass of `lenstop cards` against its floor: TransformerLens's `run_with_cache` on the dictionaries'
hooks plus SAELens's `encode` of every dictionary, over the same batches, in the same process. Goal: lenstop's
tokens per second at least 0.8 of the floor's. Both are timed over the batches after the first (warm), the
pass's from its progress callbacks, so the cards written at the end are reported apart.

    python benchmarks/cards.py [--cases demo,gpt2-small] [--tokens N] [--batch-size N] [--threads N]

The GPT-2-small shape is built here from random weights (12 layers, 768 wide, vocabulary 50,257, a TopK SAE
of 8,192 features at every layer's resid_pre; benchmarks/scale.py's builder): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = {"demo": {"tokens": 64_000, "batch": 32}, "gpt2-small": {"tokens": 8_000, "batch": 8}}
CONTEXT = 128


def engine_for(case: str, work: Path):  # type: ignore[no-untyped-def]
    from lenstop.models.engine import Engine

    if case == "demo":
        return Engine.load("demo", device="cpu")
    from scale import SIZES, build

    root = work / "gpt2-small"
    if not (root / "saes").is_dir():
        build(root, ctx=1024, **SIZES["gpt2-small"])
    return Engine.load(str(root / "model"), [str(root / "saes")], device="cpu")


def floor(engine, rows, batch: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds a batch: run_with_cache on every dictionary's hook, then each dictionary's SAELens encode."""
    import torch

    model = engine.handle.model
    names = {d.hook_in for d in engine.dictionaries}
    times = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            tokens = torch.from_numpy(rows[start : start + batch])
            tic = time.perf_counter()
            _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
            for d in engine.dictionaries:
                d.sae.encode(cache[d.hook_in])
            times.append(time.perf_counter() - tic)
    return times


def ours(engine, corpus, tokens: int, batch: int) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    """Seconds a batch of the pass (from its progress callbacks), and the whole call's seconds."""
    from lenstop.models.cards.spec import PassOptions

    stamps: list[float] = []
    tic = time.perf_counter()
    engine.build_cards(
        corpus,
        PassOptions(tokens=tokens, context=CONTEXT, batch_size=batch),
        lambda d, n: stamps.append(time.perf_counter()),
    )
    total = time.perf_counter() - tic
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], total


def run(case: str, work: Path, repeat: int) -> dict:
    from lenstop.models.cards import build as B
    from lenstop.models.cards.spec import PassOptions
    from lenstop.models.cards.texts import from_demo

    engine = engine_for(case, work)
    settings = CASES[case]
    corpus = from_demo()
    options = PassOptions(tokens=settings["tokens"], context=CONTEXT, batch_size=settings["batch"])
    rows = B.windows(engine.handle, corpus, options, work / f"windows-{case}")
    floors, passes, totals = [], [], []
    for _ in range(repeat):
        os.environ["LENSTOP_CACHE"] = str(work / f"cache-{case}")
        shutil.rmtree(work / f"cache-{case}", ignore_errors=True)
        floors.append(statistics.median(floor(engine, rows, settings["batch"])[1:]))
        batch_times, total = ours(engine, corpus, settings["tokens"], settings["batch"])
        passes.append(statistics.median(batch_times))
        totals.append(total)
    per_batch = settings["batch"] * CONTEXT
    f, p = min(floors), min(passes)
    return {
        "case": case,
        "dictionaries": f"{len(engine.dictionaries)} x {engine.dictionaries[0].d_sae}",
        "tokens": len(rows) * CONTEXT,
        "floor_tps": per_batch / f,
        "ours_tps": per_batch / p,
        "ratio": f / p,
        "total_s": min(totals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="demo,gpt2-small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lenstop-cards-bench")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [run(case, args.work, args.repeat) for case in args.cases.split(",")]
    print(f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(
        "| case | dictionaries | tokens | floor: run_with_cache + encode, tokens/s | lenstop cards pass, tokens/s "
        "| ratio (goal >= 0.8) | whole call, cards written, s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['case']} | {r['dictionaries']} | {r['tokens']:,} | {r['floor_tps']:,.0f} | {r['ours_tps']:,.0f} "
            f"| {r['ratio']:.2f} | {r['total_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
