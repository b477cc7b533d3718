"""circuit-tracer 0.5.0's attribution graph for one prompt, saved as an .npz (plus a .json
of scores and timings beside it). Runs INSIDE the circuit-tracer venv that
circuit_tracer_env.ensure_venv() builds, never in lenstop's (transformers 4.57 vs 5).

    python ct_graph.py --model models/demo/artifacts/model --transcoders DIR \
        --tokens 0,12,55 --out graph.npz [--export DIR] [--repeat 5]

Work-arounds (see FACTS.md, "circuit-tracer as a reference"):
- the model dir is copied with tokenizer_class PreTrainedTokenizerFast, since 4.57 does not
  know transformers 5's TokenizersBackend;
- from_pretrained_and_transcoders refuses local paths, so the HookedTransformer is built
  with TransformerLens's own loaders from the local dir, processed exactly as
  from_pretrained_and_transcoders asks (fold_ln, center_writing_weights and center_unembed
  off, from_pretrained's other defaults), then configured as circuit-tracer does;
- token ids come in with BOS already prepended (ensure_tokenized fails when BOS is id 0);
- a cross-layer transcoder is read with load_clt from the folder: load_transcoders would
  snapshot_download it from the hub.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _ids(text: str | None) -> list[int] | None:
    return None if not text else [int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="a Hugging Face GPT-2 directory")
    p.add_argument("--transcoders", required=True, type=Path, help="a folder with circuit-tracer's config.yaml")
    p.add_argument("--tokens", required=True, help="comma-separated token ids, BOS already prepended")
    p.add_argument("--targets", default=None, help="comma-separated target token ids (default: top logits)")
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.add_argument("--out", required=True, type=Path, help="the .npz to write (a .json goes beside it)")
    p.add_argument("--export", type=Path, default=None, help="also write circuit-tracer's viewer files here")
    p.add_argument("--slug", default="reference", help="the viewer graph's slug, with --export")
    p.add_argument("--scan", default=None, help="the viewer scan, with --export (default: the transcoders' own)")
    p.add_argument("--repeat", type=int, default=0, help="time attribute() this many more times, warm")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--interventions",
        default=None,
        help="'layer,position,feature,value;...': also run feature_intervention with these, attention frozen"
        " and not, and save the last position's logits (intervened_logits_frozen, intervened_logits_free)",
    )
    return p.parse_args(argv)


def patched_model_dir(model_dir: Path, into: Path) -> Path:
    """A copy of `model_dir` whose tokenizer_config names PreTrainedTokenizerFast."""
    target = into / "model"
    shutil.copytree(model_dir, target)
    config_path = target / "tokenizer_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2))
    return target


def load_transcoders(directory: Path):
    import torch
    import yaml

    config = yaml.safe_load((directory / "config.yaml").read_text())
    kind = config["model_kind"]
    config.setdefault("scan", directory.name)  # the viewer export needs one
    if kind == "cross_layer_transcoder":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        return load_clt(
            str(directory),
            scan=config["scan"],
            feature_input_hook=config["feature_input_hook"],
            feature_output_hook=config["feature_output_hook"],
            lazy_decoder=False,
            dtype=torch.float32,
            device=torch.device("cpu"),
        )
    from circuit_tracer.utils.hf_utils import load_transcoders as ct_load_transcoders

    if "transcoders" not in config:  # else load_transcoders would snapshot_download repo_id
        layers = sorted(directory.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
        config["transcoders"] = [p.name for p in layers]
    config["transcoders"] = [  # relative to the config, as the planted sets write them
        path if path.startswith("hf://") or Path(path).is_absolute() else str(directory / path)
        for path in config["transcoders"]
    ]
    return ct_load_transcoders(config, device=torch.device("cpu"), dtype=torch.float32)


def build_replacement_model(model_dir: Path, transcoders):
    """What TransformerLensReplacementModel.from_pretrained_and_transcoders does, from a
    local directory: HookedTransformer.from_pretrained's steps with its arguments."""
    import torch
    import transformer_lens.loading_from_pretrained as loading
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from transformers import AutoTokenizer, GPT2LMHeadModel

    hf_model = GPT2LMHeadModel.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    cfg = loading.get_pretrained_model_config(
        str(model_dir), hf_cfg=hf_model.config.to_dict(), fold_ln=False, device="cpu", dtype=torch.float32
    )
    state_dict = loading.get_pretrained_state_dict(str(model_dir), cfg, hf_model, dtype=torch.float32)
    model = TransformerLensReplacementModel(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=True,  # from_pretrained's default, which circuit-tracer keeps
        refactor_factored_attn_matrices=False,
    )
    model.move_model_modules_to_device()
    model._configure_replacement_model(transcoders)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import numpy as np
    import torch
    from circuit_tracer import attribute
    from circuit_tracer.graph import Graph, compute_graph_scores, compute_node_influence, prune_graph

    if args.threads:
        torch.set_num_threads(args.threads)
    timings: dict[str, float] = {"imports_s": time.perf_counter() - t_start}
    tokens = _ids(args.tokens)
    targets = _ids(args.targets)
    with tempfile.TemporaryDirectory(prefix="ct-graph-") as tmp:
        t0 = time.perf_counter()
        model_dir = patched_model_dir(args.model.resolve(), Path(tmp))
        transcoders = load_transcoders(args.transcoders.resolve())
        model = build_replacement_model(model_dir, transcoders)
        timings["load_s"] = time.perf_counter() - t0

        def run() -> Graph:
            return attribute(
                torch.tensor(tokens),
                model,
                attribution_targets=None if targets is None else torch.tensor(targets),
                max_n_logits=args.max_n_logits,
                desired_logit_prob=args.desired_logit_prob,
                batch_size=args.batch_size,
                max_feature_nodes=args.max_feature_nodes,
            )

        intervened = _intervened_logits(model, tokens, args.interventions) if args.interventions else {}
        t0 = time.perf_counter()
        graph = run()
        timings["attribute_first_s"] = time.perf_counter() - t0
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if args.repeat:
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                graph = run()
                times.append(time.perf_counter() - t0)
            tracemalloc.start()  # one more run, traced apart: tracing slows the timed ones
            graph = run()
            _, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            timings.update(
                attribute_min_s=min(times),
                attribute_median_s=statistics.median(times),
                attribute_all_s=times,  # type: ignore[dict-item]
                tracemalloc_peak_mb=traced_peak / 2**20,  # Python's heap only: torch's buffers are not traced
            )
        timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timings["peak_rss_before_repeats_mb"] = rss_before_kb / 1024

        adjacency = graph.adjacency_matrix.float().cpu()
        n_logits = len(graph.logit_targets)
        logit_weights = torch.zeros(adjacency.shape[0])
        logit_weights[-n_logits:] = graph.logit_probabilities.float().cpu()
        node_influence = compute_node_influence(adjacency, logit_weights)
        t0 = time.perf_counter()
        node_mask, edge_mask, cumulative = prune_graph(graph, args.node_threshold, args.edge_threshold)
        timings["prune_s"] = time.perf_counter() - t0
        replacement, completeness = compute_graph_scores(graph)
        pruned = Graph(
            input_string=graph.input_string,
            input_tokens=graph.input_tokens,
            active_features=graph.active_features,
            adjacency_matrix=adjacency * edge_mask.float(),
            cfg=graph.cfg,
            selected_features=graph.selected_features,
            activation_values=graph.activation_values,
            logit_targets=graph.logit_targets,
            logit_probabilities=graph.logit_probabilities,
            scan=graph.scan,
            vocab_size=graph.vocab_size,
        )
        pruned_replacement, pruned_completeness = compute_graph_scores(pruned)

        if args.export is not None:
            from circuit_tracer.utils.create_graph_files import create_graph_files

            t0 = time.perf_counter()
            create_graph_files(
                graph,
                slug=args.slug,
                output_path=str(args.export),
                scan=args.scan,
                node_threshold=args.node_threshold,
                edge_threshold=args.edge_threshold,
            )
            timings["export_s"] = time.perf_counter() - t0

    n_pos = len(graph.input_tokens)
    arrays = {
        "input_tokens": graph.input_tokens.cpu().numpy().astype(np.int64),
        "active_features": graph.active_features.cpu().numpy().astype(np.int64),
        "activation_values": graph.activation_values.float().cpu().numpy(),
        "selected_features": graph.selected_features.cpu().numpy().astype(np.int64),
        "adjacency_matrix": adjacency.numpy().astype(np.float32),
        "logit_token_ids": graph.logit_token_ids.cpu().numpy().astype(np.int64),
        "logit_probabilities": graph.logit_probabilities.float().cpu().numpy(),
        "node_influence": node_influence.numpy(),
        "node_mask": node_mask.cpu().numpy(),
        "edge_mask_indices": np.argwhere(edge_mask.cpu().numpy()).astype(np.int32),  # (k, 2) rows (target, source)
        "cumulative_scores": cumulative.cpu().numpy(),
        "replacement_score": np.array(replacement),  # compute_graph_scores of the full graph
        "completeness_score": np.array(completeness),
        "pruned_replacement_score": np.array(pruned_replacement),  # adjacency * edge_mask
        "pruned_completeness_score": np.array(pruned_completeness),
        "n_layers": np.array(graph.cfg.n_layers),
        **intervened,
    }
    meta = {
        "n_pos": n_pos,
        "n_layers": graph.cfg.n_layers,
        "n_selected": len(graph.selected_features),
        "n_active": len(graph.active_features),
        "n_logits": n_logits,
        "scan": graph.scan,
        "scores": {
            "replacement": replacement,
            "completeness": completeness,
            "pruned_replacement": pruned_replacement,
            "pruned_completeness": pruned_completeness,
        },
        "n_nodes_kept": int(node_mask.sum()),
        "n_edges_kept": int(edge_mask.sum()),
        "timings": timings,
        "argv": sys.argv[1:] if argv is None else argv,
        "versions": _versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays, meta_json=np.array(json.dumps(meta)))
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return 0


def _intervened_logits(model, tokens: list[int], spec: str) -> dict:
    """The last position's logits from `feature_intervention`, attention frozen and recomputed."""
    import torch

    settings = []
    for part in spec.split(";"):
        layer, position, feature, value = part.split(",")
        settings.append((int(layer), int(position), int(feature), float(value)))
    ids = torch.tensor(tokens)
    out = {}
    for name, freeze in (("frozen", True), ("free", False)):
        logits, _ = model.feature_intervention(ids, settings, freeze_attention=freeze, return_activations=False)
        out[f"intervened_logits_{name}"] = logits[0, -1].float().cpu().numpy()
    with torch.no_grad():
        out["clean_logits"] = model(ids)[0, -1].float().cpu().numpy()
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("circuit-tracer", "torch", "transformers", "transformer-lens", "nnsight")}


if __name__ == "__main__":
    sys.exit(main())
