"""How lenstop scales: a GPT-2-shaped model built on the fly from random weights (no
downloads), a TopK dictionary at every layer's resid_pre, prompts of 64, 256 and 1,024
tokens. Every figure is a ratio against the bare TransformerLens/SAELens work done in
the same run, and memory is the peak resident size each step adds (Linux's VmHWM,
reset before each step; and CUDA's max allocated on a GPU).

    python benchmarks/scale.py                      # a reduced size that runs in a few minutes
    python benchmarks/scale.py --size gpt2-small    # 12 layers, width 768, vocabulary 50,257, 8,192 features
    python benchmarks/scale.py --tokens 64 256 1024 4096 --ctx 4096   # the long end of the memory curve

Record the printed table in docs/benchmarks.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trace_cli import trace_command  # beside this script

SIZES = {
    "reduced": {"layers": 4, "width": 256, "heads": 4, "vocab": 50257, "features": 2048},
    "gpt2-small": {"layers": 12, "width": 768, "heads": 12, "vocab": 50257, "features": 8192},
}


def build(root: Path, layers: int, width: int, heads: int, vocab: int, ctx: int, features: int) -> tuple[Path, Path]:
    """A random GPT-2 as a local Hugging Face directory (the demo's tokenizer, a full-size vocabulary), and a
    random TopK SAE at every layer's resid_pre in SAELens's disk format."""
    import torch
    from sae_lens import SAE
    from sae_lens.saes.sae import SAEMetadata
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from lenstop.models.demo import MODEL_DIR

    torch.manual_seed(0)
    model_dir, sae_root = root / "model", root / "saes"
    tokenizer = PreTrainedTokenizerFast.from_pretrained(MODEL_DIR)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=ctx,
        n_ctx=ctx,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    for layer in range(layers):
        metadata = SAEMetadata(model_name="random", hook_name=f"blocks.{layer}.hook_resid_pre", prepend_bos=True)
        cfg = {
            "architecture": "topk",
            "k": 64,
            "d_in": width,
            "d_sae": features,
            "dtype": "float32",
            "device": "cpu",
            "metadata": metadata.to_dict(),
        }
        sae = SAE.from_dict(cfg)
        with torch.no_grad():
            for param in sae.parameters():
                param.normal_(0, 1.0 / param.shape[0] ** 0.5)
        sae.save_model(sae_root / f"L{layer}")
    return model_dir, sae_root


def peak_mb(step: Callable[[], Any]) -> tuple[float, Any]:
    """The resident memory `step` adds at its peak, in MB (and CUDA's max allocated above the start, on a GPU).
    Meant for a fresh process: an allocator reuses what earlier steps freed, which would hide their peaks."""
    import torch

    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = _status_kb("VmRSS")
    result = step()
    if cuda:
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20, result
    return (_status_kb("VmHWM") - before) / 1024, result


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def median_ms(step: Callable[[], Any], repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def rounds_ms(steps: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Each step's times, the steps run in turn `repeats` times (after one warm-up round): a ratio taken
    within a round is not moved by this VM's drift from one minute to the next, as medians taken apart are."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            tic = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - tic))
    return times


def ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """The median over rounds of `top`'s time over `bottom`'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))


def result_mb(value: Any, seen: set[int] | None = None) -> float:
    """The bytes of the arrays a result holds, walked through its fields."""
    import numpy as np

    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0.0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return value.nbytes / 2**20
    if isinstance(value, (tuple, list)):
        return sum(result_mb(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(result_mb(v, seen) for v in value.values())
    if hasattr(value, "__dataclass_fields__"):
        return sum(result_mb(getattr(value, f), seen) for f in value.__dataclass_fields__)
    return 0.0


def memory_child(root: str, step: str, tokens: str, *, device: str, dtype: str) -> None:
    """In a fresh process: load, warm up, then print the peak memory one `step` adds, in MB."""
    import torch

    from lenstop.models.demo import HOLDOUT_SAMPLE
    from lenstop.models.engine import Engine

    engine = Engine.load(str(Path(root) / "model"), [str(Path(root) / "saes")], device=device, dtype=dtype)
    ids = engine.model.tokenizer(HOLDOUT_SAMPLE.read_text())["input_ids"]
    n = int(tokens)
    prompt = engine.model.tokenizer.decode((ids * (1 + n // len(ids)))[: n - 1])
    tok = engine.tokenize(prompt)
    names = {d.hook_in for d in engine.dictionaries}

    def forward() -> None:
        with torch.no_grad():
            engine.model(tok)

    def floor() -> None:
        with torch.no_grad():
            logits, cache = engine.model.run_with_cache(tok, names_filter=lambda name: name in names)
            for d in engine.dictionaries:
                d.sae.encode(cache[d.hook_in][0]).topk(12, dim=-1)
            logits[0].topk(10, dim=-1)

    on_screen = [engine.n_layers // 2]  # the app's analysis reads the attention of the layer on screen
    steps = {
        "forward": forward,
        "floor": floor,
        "analyse": lambda: engine.analyse(prompt, top_k=12, attention=on_screen, lens=False),
    }
    engine.analyse(engine.model.tokenizer.decode(ids[:8]), lens=False)  # warm: first-call allocations aside
    mb, _ = peak_mb(steps[step])
    print(f"{mb:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="reduced")
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--memory-of", nargs=3, metavar=("MODEL_DIR", "STEP", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return memory_child(*args.memory_of, device=args.device, dtype=args.dtype)
    size = SIZES[args.size]

    import torch

    from lenstop.models.demo import HOLDOUT_SAMPLE
    from lenstop.models.engine import Engine
    from lenstop.models.interventions import FeatureAblation, FeatureSteer

    rows: list[tuple[str, str, str, str]] = []
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    model_dir, sae_root = build(root, ctx=args.ctx, **size)
    engine = Engine.load(str(model_dir), [str(sae_root)], device=args.device, dtype=args.dtype)

    def memory(step: str, n: int) -> float:
        command = [sys.executable, __file__, "--memory-of", str(root), step, str(n), "--device", args.device]
        # A fixed mmap threshold hands every large tensor back to the system when freed, so the peak resident
        # size is the peak of what is alive; with glibc's sliding threshold it varied by half from run to run.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        out = subprocess.run([*command, "--dtype", args.dtype], capture_output=True, text=True, check=True, env=env)
        return float(out.stdout.strip().splitlines()[-1])

    model, info = engine.model, engine.info()
    text = HOLDOUT_SAMPLE.read_text()
    ids = engine.model.tokenizer(text)["input_ids"]
    middle = engine.dictionaries[len(engine.dictionaries) // 2]

    for n in args.tokens:
        stream = (ids * (1 + n // len(ids)))[: n - 1]
        prompt = engine.model.tokenizer.decode(stream)
        tokens = engine.tokenize(prompt)
        names = {d.hook_in for d in engine.dictionaries}

        def bare() -> None:
            """The floor: one pass capturing each dictionary's hook, SAELens's encode, top-k on the device."""
            with torch.no_grad():
                logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
                for d in engine.dictionaries:
                    d.sae.encode(cache[d.hook_in][0]).topk(12, dim=-1)
                logits[0].topk(10, dim=-1)

        def forward() -> None:
            with torch.no_grad():
                model(tokens)

        def attention_on_demand() -> None:  # the last layer's, read afresh after a clean analysis of the prompt
            engine.reader.cache.attention.clear()
            engine.attention(prompt, engine.n_layers - 1)

        def fresh() -> None:  # a prompt the engine has not seen: nothing kept to reuse
            engine.forget()
            engine.analyse(prompt, top_k=12, attention=on_screen, lens=False)

        def toggle(feature: int, features: bool | list[int]) -> Callable[[], Any]:
            ablation = [FeatureAblation(middle.layer, feature)]
            return lambda: engine.analyse(
                prompt, ablation, top_k=12, features=features, attention=on_screen, lens=False
            )

        on_screen = [middle.layer]  # as the app asks: the layer on screen's attention (and, intervened, features)
        clean = engine.analyse(prompt, top_k=12, attention=on_screen, lens=False)
        first, second, third = (f.id for f in clean.layer(middle.layer).features(len(stream))[:3])
        with (
            trace_command(engine, str(model_dir), prompt) as trace,
            trace_command(engine, str(model_dir), prompt, "--lens") as trace_lens,
        ):
            times = rounds_ms(  # in this order each round: the toggles follow a clean analysis, as in the app
                {
                    "forward": forward,
                    "floor": bare,
                    "app": fresh,
                    "ablated": toggle(first, on_screen),  # the prompt's first: its clean distribution is made too
                    "again": toggle(second, on_screen),
                    "every": toggle(third, True),
                    "demand": attention_on_demand,
                    "defaults": lambda: engine.analyse(prompt),  # what a script gets, from Python and from the CLI
                    "trace": trace,
                    "trace --lens": trace_lens,
                },
                args.repeats,
            )
        plain, floor, app, ablated, again, every, demand, defaults, cli, cli_lens = (
            statistics.median(times[k])
            for k in (
                "forward",
                "floor",
                "app",
                "ablated",
                "again",
                "every",
                "demand",
                "defaults",
                "trace",
                "trace --lens",
            )
        )
        forward_mb, floor_mb, analyse_mb = (memory(step, n) for step in ("forward", "floor", "analyse"))
        analysis = engine.analyse(prompt, top_k=12, attention=on_screen, lens=False)
        batch = [
            (f"{n}", "bare forward", f"{plain:.0f} ms", f"{forward_mb:.0f} MB"),
            (f"{n}", "floor: run_with_cache + encode + top-k", f"{floor:.0f} ms", f"{floor_mb:.0f} MB"),
            (
                f"{n}",
                "analyse, as the app asks (one layer's attention, lens on demand)",
                f"{app:.0f} ms · {ratio(times, 'app', 'floor'):.2f} × floor",
                f"{analyse_mb:.0f} MB · {analyse_mb / max(forward_mb, 1):.2f} × forward",
            ),
            (
                f"{n}",
                "analyse(prompt), its defaults",
                f"{defaults:.0f} ms · {ratio(times, 'defaults', 'floor'):.2f} × floor",
                "",
            ),
            (
                f"{n}",
                "lenstop trace -p - --json, in this process, the engine loaded",
                f"{cli:.0f} ms · {ratio(times, 'trace', 'floor'):.2f} × floor",
                "",
            ),
            (
                f"{n}",
                "lenstop trace -p - --json --lens (every layer's lens at every position)",
                f"{cli_lens:.0f} ms · {ratio(times, 'trace --lens', 'floor'):.2f} × floor",
                "",
            ),
            (
                f"{n}",
                f"the app's update: the prompt's first ablation at layer {middle.layer}",
                f"{ablated:.0f} ms · {ratio(times, 'ablated', 'app'):.2f} × analyse",
                "",
            ),
            (
                f"{n}",
                "the app's update: another ablation there",
                f"{again:.0f} ms · {ratio(times, 'again', 'app'):.2f} × analyse",
                "",
            ),
            (
                f"{n}",
                "an ablation there, every layer's features read",
                f"{every:.0f} ms · {ratio(times, 'every', 'app'):.2f} × analyse",
                "",
            ),
            (
                f"{n}",
                "the last layer's attention on demand, after an analysis",
                f"{demand:.0f} ms · {ratio(times, 'demand', 'forward'):.2f} × forward",
                "",
            ),
            (f"{n}", "what the analysis keeps", "", f"{result_mb(analysis):.1f} MB"),
        ]
        rows += batch
        print(batch, flush=True)

    prompt = engine.model.tokenizer.decode(ids[:63])
    steer = FeatureSteer(middle.layer, 0, 4.0)
    tokens = engine.tokenize(prompt)
    direction = middle.sae.W_dec[0].detach()

    def steer_hook(x: Any, hook: Any) -> Any:
        return x + 4.0 * direction

    def theirs() -> None:  # TransformerLens's own generate, with its KV cache and the same steering hook
        with engine.hooks([(middle.hook_in, steer_hook)]):
            model.generate(tokens, max_new_tokens=32, do_sample=False, use_past_kv_cache=True, verbose=False)

    ours = median_ms(lambda: engine.generate(prompt, [steer], max_new_tokens=32), args.repeats)  # two runs of 32
    tl = median_ms(theirs, args.repeats)
    rows.append(("64+32", "TransformerLens generate, steered (one run)", f"{tl:.0f} ms", ""))
    rows.append(
        (
            "64+32",
            "lenstop generate, clean and steered (two runs)",
            f"{ours:.0f} ms · {2 * tl / ours:.2f} × its throughput",
            "",
        )
    )

    print(
        f"lenstop scale · {time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
        f"{torch.get_num_threads()} threads · torch {torch.__version__} · {info.device} {info.dtype}"
    )
    print(
        f"random GPT-2: {info.n_layers} layers, width {info.d_model}, {info.n_heads} heads, "
        f"vocabulary {info.d_vocab}, context {info.n_ctx}; TopK dictionaries of {middle.d_sae} features "
        f"at every resid_pre; medians of {args.repeats}, ratios the median of each round's"
    )
    print("| tokens | what | time | memory |")
    print("| ---: | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
