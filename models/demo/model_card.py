"""MODEL_CARD.md for the demo, written from the figures the pipeline measured."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lenstop.models.demo import metrics
from lenstop.models.feature_cards import Cards

NOTES = Path(__file__).resolve().parent / "SPOT_CHECK.md"  # a person's notes, kept across rebuilds


def _done(build: Any, stage: str) -> dict:
    return json.loads((build.work / f"{stage}.done").read_text())


def _snippet(context: Any) -> str:
    out = []
    for i, tok in enumerate(context.tokens):
        text = tok.replace("\n", "⏎").replace("`", "'")
        out.append(f"[{text}]" if i == context.focus else text)
    return "".join(out)


TRANSCODER_HEADING = "## Transcoders"


def _skip(skip: bool) -> str:
    return "with a linear skip connection `W_skip`" if skip else "no skip connection"


def transcoder_section(config: Any, info: dict) -> list[str]:
    """The card's transcoder section, from the transcoders stage's record (`info`)."""
    r = config.transcoder
    n_layers = len(info["transcoders"]["layers"])
    lines = [
        TRANSCODER_HEADING,
        "JumpReLU transcoders from each layer's MLP input (`blocks.L.mlp.hook_in`, the output of `ln_2`) to that MLP's "
        "output (`blocks.L.mlp.hook_out`), in circuit-tracer's disk format: a per-layer set (`transcoders/`, "
        f"{r.d_transcoder} features a layer, {_skip(r.skip)}) and a cross-layer transcoder (`clt/`, {r.clt_features} "
        f"features a layer; a feature at layer i writes to the MLP outputs of layers i..{n_layers - 1}). "
        f"Trained from a plain torch loop on {r.tokens:,} activations x {r.epochs} epochs (position 0 left out), "
        f"batch {r.batch}, Adam lr {r.lr:g}; thresholds learnt by straight-through estimators (bandwidth {r.bandwidth:g}) "
        f"with an L0 penalty whose coefficient is steered towards {r.target_l0:g} active features a layer (then held "
        f"for the last {r.settle:.0%} of the steps, so a layer ends where the table says); seed {r.seed}; "
        f"{info['train_seconds'] / 60:.0f} minutes for both. Measured on {config.eval_windows} held-out windows "
        "(position 0 left out); spliced: the next-token loss with that layer's MLP output replaced by the reconstruction:",
        "",
        "| kind | layer | FVU | mean L0 | dead | loss spliced |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, name in (("transcoders", "per-layer"), ("clt", "CLT")):
        for row in info[kind]["layers"]:
            lines.append(
                f"| {name} | {row['layer']} | {row['fvu']:.3f} | {row['mean_l0']:.1f} | {row['dead_fraction']:.1%} | "
                f"{row['loss_spliced']:.3f} |"
            )
    t, c = info["transcoders"], info["clt"]
    lines += [
        "",
        f"- Loss with every layer's MLP replaced at once: per-layer set **{t['loss_all_spliced']:.3f}**, "
        f"CLT **{c['loss_all_spliced']:.3f}** (clean {t['loss_clean']:.3f}).",
    ]
    for kind, name in (("transcoders", "per-layer set"), ("clt", "CLT")):
        row = info[kind]
        lines.append(
            f"- Replacement score (circuit-tracer's, the mean over {row['graphs']} attribution graphs of held-out "
            f"text, {row['tokens']:.0f} tokens each), {name}: **{row['replacement_score']:.3f}**; completeness "
            f"**{row['completeness_score']:.3f}**."
        )
    return lines


def update_transcoder_section(path: Path, config: Any, info: dict) -> None:
    """Rewrite only the transcoder section of the card at `path` (added before the feature cards if absent)."""
    lines = path.read_text().split("\n")
    section = transcoder_section(config, info)
    if TRANSCODER_HEADING in lines:
        start = lines.index(TRANSCODER_HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [*section, ""]
    else:
        at = lines.index("## Feature cards")
        lines[at:at] = [*section, ""]
    path.write_text("\n".join(lines))


def write_model_card(build: Any, path: Path) -> None:
    corpus, tok = _done(build, "corpus"), _done(build, "tokenizer")
    model_info, saes_info = _done(build, "model"), _done(build, "saes")
    history = json.loads((build.work / "model_history.json").read_text())
    model = build.hf_model()
    tokenizer = build.tokenizer()
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    ind = metrics.induction(model, len(tokenizer), tokenizer.bos_token_id, n=64, seed=7)
    val = metrics.windows(
        build.ids("holdout"), tokenizer.bos_token_id, cfg.n_positions, n=build.config.eval_windows, seed=3
    )
    val_loss = metrics.mean_loss(model, val)
    recipe = build.config.model
    lines = [
        "# lenstop demo model",
        "",
        "A small GPT-2 trained by `python -m lenstop.models.demo.build` on the Python standard library's own source,",
        "with a TopK sparse autoencoder on every layer's residual stream and a card for every feature.",
        "Every figure below was measured by the pipeline that built these files.",
        "",
        "## Data",
        f"- Corpus: {corpus['files']} `.py` files of the standard library of Python {corpus['python']} (tests left out), "
        f"{corpus['bytes'] / 1e6:.1f} MB; {corpus['holdout_files']} files held out by a hash of their path.",
        f"- Tokenizer: byte-level BPE, {tok['vocab']} tokens, {tok['bytes_per_token']:.2f} bytes a token; "
        f"{tok['train_tokens']:,} training and {tok['holdout_tokens']:,} held-out tokens.",
        "",
        "## Model",
        f"- GPT-2 architecture: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, context {cfg.n_positions}, "
        f"{n_params:,} parameters ({n_params * 4 / 1e6:.1f} MB in float32).",
        f"- Training: {recipe.steps:,} steps of batch {recipe.batch} x {recipe.n_ctx} ({recipe.steps * recipe.batch * recipe.n_ctx / 1e6:.1f}M tokens), "
        f"AdamW lr {recipe.lr:g}, betas (0.9, 0.95), {recipe.warmup} warm-up steps then cosine decay to {recipe.min_lr_share:.0%}; "
        f"weight decay {recipe.weight_decay} on matrices; {recipe.repeat_share:.0%} of sequences a random span of "
        f"{recipe.repeat_span[0]}-{recipe.repeat_span[1]} tokens tiled across the context; seed {recipe.seed}; "
        f"{model_info['seconds'] / 60:.0f} minutes.",
        f"- Held-out loss: **{val_loss:.3f}** nats a token ({build.config.eval_windows} windows).",
        "",
        "## Induction circuit",
        "On 64 sequences of 50 random tokens repeated twice:",
        f"- loss on the first copy {ind.loss_first:.2f}, on the second **{ind.loss_second:.2f}**: ratio **{ind.ratio:.2f}** (at most 0.5 required);",
        f"- best induction head **L{ind.best_induction_head[0]}H{ind.best_induction_head[1]}**, score **{ind.induction_score:.2f}** "
        "(mean attention from each repeated token to the token after its first occurrence; at least 0.4 required);",
        f"- best previous-token head **L{ind.best_previous_head[0]}H{ind.best_previous_head[1]}**, score **{ind.previous_score:.2f}**.",
        "",
        "| step | held-out loss | ratio | induction | previous-token |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    shown = history[:: max(1, len(history) // 12)]
    if history and shown[-1] is not history[-1]:
        shown.append(history[-1])
    for row in shown:
        lines.append(
            f"| {int(row['step']):,} | {row['val_loss']:.3f} | {row['induction_ratio']:.2f} | {row['induction_score']:.2f} | {row['previous_score']:.2f} |"
        )
    sr = build.config.sae
    lines += [
        "",
        "## Dictionaries",
        f"TopK SAEs (k={sr.k}, {sr.d_sae} features, SAELens `TopKTrainingSAE` with AuxK) on `blocks.L.hook_resid_post`, "
        f"{sr.tokens:,} activations x {sr.epochs} epochs each; decoder rows unit-norm. Measured on held-out windows:",
        "",
        "| layer | FVU | mean L0 | dead | loss clean | spliced | zero-ablated | loss recovered |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in saes_info["layers"]:
        lines.append(
            f"| {row['layer']} | {row['fvu']:.3f} | {row['mean_l0']:.1f} | {row['dead_fraction']:.1%} | {row['loss_clean']:.3f} | "
            f"{row['loss_spliced']:.3f} | {row['loss_zero']:.3f} | {row['loss_recovered']:.1%} |"
        )
    lines += ["", *transcoder_section(build.config, _done(build, "transcoders"))]
    lines += ["", "## Feature cards", ""]
    rng = random.Random(0)
    spot: list[str] = []
    for sae_dir in sorted(p for p in build.sae_root.iterdir() if (p / "cfg.json").is_file()):
        cards = Cards.beside(sae_dir).all()
        live = [c for c in cards if c.frequency]
        labelled = [c for c in live if c.label]
        lines.append(
            f"- {sae_dir.name}: {len(cards)} features, {len(live)} live on the card text, {len(labelled)} with a derived label "
            f"({len(labelled) / max(1, len(live)):.0%})."
        )
        for card in rng.sample(live, min(7, len(live))):
            top = "; ".join(_snippet(c) for c in card.contexts[:2])
            spot.append(f"| {sae_dir.name} #{card.id} | {card.label or '—'} | {card.frequency:.2%} | `{top}` |")
    lines += [
        "",
        "Labels come from Python's own tokenizer: when most of a feature's top contexts are the same token, or the same kind "
        "of token (keyword, string, docstring, comment, indentation), the card says so; otherwise it has no label.",
        "",
        "A random sample of live features (the peak token in brackets):",
        "",
        "| feature | label | fires on | top contexts |",
        "| --- | --- | ---: | --- |",
        *spot,
    ]
    if NOTES.is_file():
        lines += ["", NOTES.read_text().strip()]
    lines.append("")
    path.write_text("\n".join(lines))
