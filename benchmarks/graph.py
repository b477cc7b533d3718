"""Attribution graphs: lenstop against circuit-tracer 0.5.0, for the same model, transcoders and prompt.

circuit-tracer runs in its own venv (tests/reference/, built on first use); each tool runs in a process
of its own, so peak memory is each one's own. Per case it prints the warm in-process time of one graph
(circuit-tracer's `attribute()`, then with its `prune_graph`; lenstop's `Engine.graph`, which prunes and
scores too), the ratio against the goal (at most 0.5), each process's peak RSS (goal: at most 1.0), and
the whole process's wall time, imports and loading included.

    python benchmarks/graph.py [--cases demo-plt,demo-clt,gpt2-plt] [--tokens 16,64,128] [--threads 2]

The demo's context is 128 tokens, so 256 runs only on the GPT-2-small shape (a random GPT-2 of that shape
with random JumpReLU transcoders, built here; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reference"))
sys.path.insert(0, str(ROOT / "tests"))

import circuit_tracer_env  # noqa: E402


def child(model: str, transcoders: str, ids: list[int], repeat: int, threads: int, budget: int | None) -> dict:
    """One lenstop process: load, one cold graph, `repeat` warm ones."""
    import torch

    torch.set_num_threads(threads)
    tic = time.perf_counter()
    from lenstop.models.dictionaries import replacement_of
    from lenstop.models.engine import Engine
    from lenstop.models.graphs import GraphOptions, build_graph

    engine = Engine.load(model, [transcoders], device="cpu")
    loaded = time.perf_counter() - tic
    handle = engine.handle
    replacement = replacement_of(handle.dictionaries, handle.n_layers)
    options = GraphOptions(max_feature_nodes=budget, batch_size=64 if budget else 256)

    def once() -> object:
        return build_graph(handle, replacement, ids, options)  # the very ids circuit-tracer gets

    tic = time.perf_counter()
    graph = once()
    first = time.perf_counter() - tic
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        once()
        times.append(time.perf_counter() - tic)
    return {
        "load_s": loaded,
        "first_s": first,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "features": graph.n_active_features,  # type: ignore[attr-defined]
        "edges": len(graph.edges.weight),  # type: ignore[attr-defined]
    }


def gpt2_shape(folder: Path) -> Path:
    """A random GPT-2-small-shaped model (12 layers, 768 wide, 12 heads) with the demo's tokenizer."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from lenstop.models.demo import MODEL_DIR

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(MODEL_DIR)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved["n_ctx"] = 1024  # transformers 5 drops it; circuit-tracer's TransformerLens 3.2 reads it
    (folder / "config.json").write_text(json.dumps(saved, indent=1))
    return folder


def case_files(case: str, work: Path) -> tuple[Path, Path, int | None]:
    """(model dir, transcoder dir, feature budget) for a case."""
    from lenstop.models import demo

    if case.startswith("demo"):
        kind = "cross_layer_transcoder" if case.endswith("clt") else "transcoder_set"
        shipped = demo.CLT_ROOT if kind == "cross_layer_transcoder" else demo.TRANSCODER_ROOT
        if (shipped / "config.yaml").is_file():
            return demo.MODEL_DIR, shipped, None
        return (
            demo.MODEL_DIR,
            circuit_tracer_env.plant_transcoders(work / case, demo.MODEL_DIR, kind=kind, n_features=512),
            None,
        )
    model = gpt2_shape(work / "gpt2-shape")
    folder = work / case
    if not (folder / "config.yaml").is_file():
        circuit_tracer_env.plant_transcoders(folder, model, n_features=1024, fire_rate=0.004)
    return model, folder, 512  # circuit-tracer's dense rows make the whole graph hours long on a CPU here


def prompt_ids(model: Path, n_tokens: int) -> list[int]:
    from transformers import PreTrainedTokenizerFast

    from lenstop.models.demo import HOLDOUT_SAMPLE

    tokenizer = PreTrainedTokenizerFast.from_pretrained(model)
    ids = tokenizer(HOLDOUT_SAMPLE.read_text(), add_special_tokens=False)["input_ids"][: n_tokens - 1]
    return [int(tokenizer.bos_token_id), *ids]


def run_case(case: str, n_tokens: int, work: Path, threads: int, repeat: int) -> dict:
    model, transcoders, budget = case_files(case, work)
    ids = prompt_ids(model, n_tokens)
    tic = time.perf_counter()
    args = [
        sys.executable,
        __file__,
        "--child",
        str(model),
        str(transcoders),
        ",".join(map(str, ids)),
        str(repeat),
        str(threads),
        str(budget or 0),
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    ours = json.loads(done.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - tic}
    extra = ["--max-feature-nodes", str(budget), "--batch-size", "64"] if budget else []
    tic = time.perf_counter()
    ref = circuit_tracer_env.run_reference(
        "--model",
        model,
        "--transcoders",
        transcoders,
        "--tokens",
        ",".join(map(str, ids)),
        "--repeat",
        str(repeat),
        "--threads",
        str(threads),
        *extra,
    )
    theirs = ref["meta"]["timings"] | {"process_s": time.perf_counter() - tic}
    return {"case": case, "tokens": len(ids), "budget": budget, "lenstop": ours, "circuit_tracer": theirs}


def table(rows: list[dict]) -> str:
    head = (
        "| case | tokens | features | circuit-tracer attribute (+prune), s | lenstop graph, s | ratio (goal <= 0.5) "
        "| peak RSS ct / lenstop, MB | ratio (goal <= 1.0) | whole process ct / lenstop, s |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for r in rows:
        ct, us = r["circuit_tracer"], r["lenstop"]
        with_prune = ct["attribute_min_s"] + ct.get("prune_s", 0.0)
        budget = f" (budget {r['budget']})" if r["budget"] else ""
        lines.append(
            f"| {r['case']}{budget} | {r['tokens']} | {us['features']} "
            f"| {ct['attribute_min_s']:.2f} ({with_prune:.2f}) "
            f"| {us['min_s']:.2f} | {us['min_s'] / ct['attribute_min_s']:.2f} "
            f"| {ct['peak_rss_mb']:.0f} / {us['peak_rss_mb']:.0f} | {us['peak_rss_mb'] / ct['peak_rss_mb']:.2f} "
            f"| {ct['process_s']:.1f} / {us['process_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, transcoders, ids, repeat, threads, budget = sys.argv[2:8]
        found = child(
            model, transcoders, [int(i) for i in ids.split(",")], int(repeat), int(threads), int(budget) or None
        )
        print(json.dumps(found))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="demo-plt,demo-clt")
    parser.add_argument("--tokens", default="16,64,128")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lenstop-graph-bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    saved = args.work / "results.json"  # written after every case, so an interrupted run resumes
    done = {(r["case"], r["asked"]): r for r in json.loads(saved.read_text())} if saved.is_file() else {}
    rows = []
    for case in args.cases.split(","):
        for n in (int(t) for t in args.tokens.split(",")):
            if (case, n) not in done:
                done[case, n] = run_case(case, n, args.work, args.threads, args.repeat) | {"asked": n}
                saved.write_text(json.dumps(list(done.values()), indent=1))
            rows.append(done[case, n])
            print(f"{case} {n}: done", file=sys.stderr, flush=True)
    print(f"{platform.machine()} {platform.processor() or ''}, {args.threads} threads, {time.strftime('%Y-%m-%d')}")
    print(table(rows))


if __name__ == "__main__":
    main()
