"""How fast lenstop is, against the bare TransformerLens and SAELens work it wraps,
measured in the same run on the same machine. Prints a table; record it in
docs/benchmarks.md with the machine and the date.

    python benchmarks/bench.py [--model demo] [--sae demo] [--tokens 64] [--repeats 30] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trace_cli import trace_command  # beside this script


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def cold_ms(args: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def first_paint_ms() -> float:
    """A fresh interpreter: import the app and run it headless until its first screen is drawn."""
    code = (
        "import time; t=time.perf_counter()\n"
        "import asyncio, threading\n"
        "from lenstop.tui.app import LenstopApp\n"
        "gate = threading.Event()\n"
        "from lenstop.models.engine_spec import EngineSpec\n"
        "app = LenstopApp(EngineSpec('demo'), factory=lambda spec, p: gate.wait(30))\n"
        "async def main():\n"
        "    async with app.run_test(size=(120, 40)) as pilot:\n"
        "        await pilot.pause()\n"
        "        print(1000 * (time.perf_counter() - t)); gate.set()\n"
        "asyncio.run(main())\n"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--sae", action="append")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    saes = args.sae or (["demo"] if args.model == "demo" else [])

    rows: list[tuple[str, float, str]] = []
    lenstop = str(Path(sys.executable).parent / "lenstop")
    rows.append(("lenstop --help (cold process)", cold_ms([lenstop, "--help"]), ""))
    rows.append(("inspector first paint (cold process, headless)", first_paint_ms(), ""))

    tic = time.perf_counter()
    import sae_lens  # noqa: F401 - timed here, so that the load below is the load alone
    import torch
    import transformer_lens  # noqa: F401 - timed with sae_lens, above

    from lenstop.models.engine import Engine
    from lenstop.models.interventions import FeatureAblation, FeatureSteer

    imports_ms = 1000 * (time.perf_counter() - tic)
    rows.append(("import torch + TransformerLens + SAELens + engine", imports_ms, ""))
    tic = time.perf_counter()
    engine = Engine.load(args.model, saes, device=args.device)
    rows.append(
        (
            f"Engine.load({args.model}, {len(engine.dictionaries)} dictionaries) after imports",
            1000 * (time.perf_counter() - tic),
            "",
        )
    )

    from lenstop.models.demo import HOLDOUT_SAMPLE

    text = HOLDOUT_SAMPLE.read_text() if HOLDOUT_SAMPLE.is_file() else "def f(x):\n    return x\n" * 50
    ids = engine.model.tokenizer(text)["input_ids"][: args.tokens - 1]
    prompt = engine.model.tokenizer.decode(ids)
    tokens = engine.tokenize(prompt)
    model, n_layers = engine.model, engine.n_layers

    def bare_forward() -> None:
        with torch.no_grad():
            model(tokens)

    def bare_capture_and_encode() -> None:
        """What one analysis needs, written directly: one pass capturing each dictionary's
        hook, every attention pattern and every resid_post, then SAELens's encode."""
        names = (
            {d.hook_in for d in engine.dictionaries}
            | {f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)}
            | {f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)}
        )
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
            for d in engine.dictionaries:
                d.sae.encode(cache[d.hook_in][0])
            for layer in range(n_layers):
                model.unembed(model.ln_final(cache[f"blocks.{layer}.hook_resid_post"]))

    def bare_default_captures() -> None:
        """What `analyse(prompt)` with its defaults needs: each dictionary's hook captured and encoded."""
        names = {d.hook_in for d in engine.dictionaries}
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
            for d in engine.dictionaries:
                d.sae.encode(cache[d.hook_in][0])

    base_forward = median_ms(bare_forward, args.repeats)
    base_analysis = median_ms(bare_capture_and_encode, args.repeats)
    base_default = median_ms(bare_default_captures, args.repeats)
    rows.append((f"bare bridge forward, {tokens.shape[-1]} tokens", base_forward, "1.00 (baseline A)"))
    rows.append(("bare run_with_cache + SAELens encode + lens (same captures)", base_analysis, "1.00 (baseline B)"))
    rows.append(("bare run_with_cache + SAELens encode, no lens", base_default, "1.00 (baseline C)"))
    ours = median_ms(lambda: engine.reader.passes.run(tokens, ()), args.repeats)
    rows.append(("engine forward on the same tokens, no interventions", ours, f"{ours / base_forward:.2f} × A"))
    ours = median_ms(lambda: engine.logits(prompt), args.repeats)
    rows.append(("engine.logits from text (tokenising included)", ours, f"{ours / base_forward:.2f} × A"))
    ours = median_ms(lambda: engine.analyse(prompt), args.repeats)
    rows.append(("engine.analyse(prompt), its defaults (no lens)", ours, f"{ours / base_default:.2f} × C"))
    ours = median_ms(lambda: engine.analyse(prompt, lens=True), args.repeats)
    rows.append(("engine.analyse(prompt, lens=True)", ours, f"{ours / base_analysis:.2f} × B"))
    with trace_command(engine, args.model, prompt, *(word for sae in saes for word in ("--sae", sae))) as trace:
        ours = median_ms(trace, args.repeats)
    rows.append(
        ("lenstop trace -p - --json, in this process, the engine loaded", ours, f"{ours / base_default:.2f} × C")
    )
    feature = engine.analyse(prompt).layers[-1].features(tokens.shape[-1] - 1)[0].id
    layer = engine.dictionaries[-1].layer
    ours = median_ms(lambda: engine.analyse(prompt, [FeatureAblation(layer, feature)]), args.repeats)
    rows.append(("engine.analyse with an ablation (clean run cached)", ours, f"{ours / base_analysis:.2f} × B"))
    ours = median_ms(lambda: engine.analyse(prompt, [FeatureSteer(layer, feature, 4.0)]), args.repeats)
    rows.append(("engine.analyse with a steer (clean run cached)", ours, f"{ours / base_analysis:.2f} × B"))
    ours = median_ms(
        lambda: engine.generate(prompt, [FeatureSteer(layer, feature, 4.0)], max_new_tokens=16),
        max(3, args.repeats // 10),
        warmup=1,
    )
    rows.append(("engine.generate, 16 new tokens, clean + steered", ours, f"{ours / base_forward:.0f} × A"))

    # Circuits: every node of the prompt attributed to its last token's prediction, against one analysis.
    analysis_ms = median_ms(lambda: engine.analyse(prompt), args.repeats)
    circuit_repeats = max(5, args.repeats // 3)
    ours = median_ms(lambda: engine.attribute(prompt, top=None), circuit_repeats)
    rows.append(("engine.attribute, every node (gradient)", ours, f"{ours / analysis_ms:.2f} × analyse"))
    ours = median_ms(lambda: engine.attribute(prompt, top=None, steps=8), max(3, circuit_repeats // 3), warmup=1)
    rows.append(("engine.attribute, every node (integrated gradients, 8)", ours, f"{ours / analysis_ms:.2f} × analyse"))
    ours = median_ms(lambda: engine.direct(prompt, sources=True), circuit_repeats)
    rows.append(("engine.direct (direct logit attribution, by source)", ours, f"{ours / analysis_ms:.2f} × analyse"))
    ours = median_ms(lambda: engine.circuit(prompt), max(3, circuit_repeats // 3), warmup=1)
    rows.append(("engine.circuit (24 nodes, their edges)", ours, f"{ours / analysis_ms:.2f} × analyse"))
    corrupt = engine.model.tokenizer.decode(list(reversed(ids)))
    if engine.tokenize(corrupt).shape == tokens.shape:
        ours = median_ms(lambda: engine.patch(prompt, corrupt, features=20), 3, warmup=1)
        rows.append(("engine.patch (every grid, 20 features)", ours, f"{ours / analysis_ms:.0f} × analyse"))

    info = engine.info()
    print(
        f"lenstop benchmarks · {time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__} · {info.device} {info.dtype}"
    )
    print(
        f"model {info.name}: {info.n_layers} layers, d_model {info.d_model}, {len(info.dictionaries)} dictionaries; "
        f"prompt {tokens.shape[-1]} tokens; median of {args.repeats}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | {'ms':>9} | ratio |")
    print(f"| {'-' * width} | {'-' * 9}: | --- |")
    for name, ms, ratio in rows:
        print(f"| {name:<{width}} | {ms:9.1f} | {ratio} |")


if __name__ == "__main__":
    main()
