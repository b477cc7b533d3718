"""One TopK dictionary per layer on the residual stream, trained with SAELens's
own training classes (`TopKTrainingSAE.training_forward_pass`) from a plain loop.

Activations are the raw Hugging Face residuals after each block
(`blocks.L.hook_resid_post`), which is what lenstop's bridge shows with no
weight processing; they are rescaled to norm sqrt(d_in) for training and the
scale is folded back into the weights, with decoder rows made unit-norm so a
steering strength is in units of a unit vector.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenstop.models.demo import metrics
from lenstop.models.runtime import hook_names

log = logging.getLogger("lenstop.demo")


@dataclass(frozen=True)
class SaeRecipe:
    d_sae: int = 1024
    k: int = 32
    tokens: int = 1_500_000  # training activations per layer
    epochs: int = 2
    batch: int = 1024
    lr: float = 5e-4
    warmup: int = 100
    dead_window: int = 300  # steps without firing before a feature counts as dead (AuxK)
    seed: int = 0


@torch.no_grad()
def collect(model: Any, ids: np.ndarray, bos: int, n_tokens: int, seed: int) -> list[torch.Tensor]:
    """resid_post of every layer on `n_tokens` training tokens: one (n_tokens, d_model) CPU tensor a layer."""
    device = next(model.parameters()).device
    n_ctx = model.config.n_positions
    n_windows = math.ceil(n_tokens / n_ctx)
    batches = metrics.windows(ids, bos, n_ctx, n_windows, seed=seed, batch=64)
    per_layer: list[list[torch.Tensor]] = [[] for _ in model.transformer.h]
    handles = [
        block.register_forward_hook(
            lambda m, a, out, layer=layer: per_layer[layer].append(
                (out[0] if isinstance(out, tuple) else out).flatten(0, 1).cpu()
            )
        )
        for layer, block in enumerate(model.transformer.h)
    ]
    try:
        for tokens in batches:
            model(tokens.to(device))
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(chunks)[:n_tokens] for chunks in per_layer]


def train_one(
    recipe: SaeRecipe, acts: torch.Tensor, layer: int, n_ctx: int, device: str = "cpu"
) -> tuple[Any, torch.Tensor]:
    """Train on `acts` (n, d_in, on the CPU).

    Returns the inference SAE (on the CPU) and each feature's firing frequency.
    """
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata, TrainStepInput

    d_in = acts.shape[1]
    scale = float(math.sqrt(d_in) / acts.norm(dim=-1).mean())
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=recipe.d_sae,
        k=recipe.k,
        rescale_acts_by_decoder_norm=True,
        metadata=SAEMetadata(
            model_name="demo",
            hook_name=hook_names.resid_post(layer),
            context_size=n_ctx,
            prepend_bos=True,
            model_class_name="AutoModelForCausalLM",
            model_from_pretrained_kwargs={},
        ),
    )
    torch.manual_seed(recipe.seed + layer)
    sae = TopKTrainingSAE(cfg)
    with torch.no_grad():  # start the decoder bias at the (scaled) mean, as is usual
        sae.b_dec.copy_((acts * scale).mean(0))
    sae = sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=(0.9, 0.999))
    steps_per_epoch = acts.shape[0] // recipe.batch
    total = steps_per_epoch * recipe.epochs
    since_fired = torch.zeros(recipe.d_sae, dtype=torch.long, device=device)
    fired_last_epoch = torch.zeros(recipe.d_sae, device=device)
    g = torch.Generator().manual_seed(recipe.seed + layer)
    step = 0
    for epoch in range(recipe.epochs):
        order = torch.randperm(acts.shape[0], generator=g)
        last = epoch == recipe.epochs - 1
        for i in range(steps_per_epoch):
            lr = recipe.lr * min(1.0, (step + 1) / recipe.warmup) * min(1.0, (total - step) / (0.2 * total))
            for group in opt.param_groups:
                group["lr"] = lr
            x = acts[order[i * recipe.batch : (i + 1) * recipe.batch]].to(device) * scale
            out = sae.training_forward_pass(
                TrainStepInput(
                    sae_in=x,
                    coefficients=sae.get_coefficients(),
                    dead_neuron_mask=since_fired > recipe.dead_window,
                    n_training_steps=step,
                    is_logging_step=False,
                )
            )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            active = (out.feature_acts > 0).detach()
            since_fired += 1
            since_fired[active.any(0)] = 0
            if last:
                fired_last_epoch += active.float().sum(0)
            step += 1
            if step % 200 == 0:
                log.info(
                    "layer %d sae step %d/%d loss %.4f (%s)",
                    layer,
                    step,
                    total,
                    out.loss.item(),
                    ", ".join(f"{k} {v.item():.4f}" for k, v in out.losses.items()),
                )
    frequency = (fired_last_epoch / (steps_per_epoch * recipe.batch)).cpu()
    return _inference(sae.to("cpu"), scale), frequency


def _inference(training_sae: Any, scale: float) -> Any:
    """The inference TopKSAE on raw activations: scale folded in, decoder rows unit-norm."""
    import tempfile

    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp)
    sae.fold_activation_norm_scaling_factor(scale)
    sae.fold_W_dec_norm()
    return sae


def train_all(
    recipe: SaeRecipe, model: Any, train_ids: np.ndarray, bos: int, out_root: Path, work: Path, device: str = "cpu"
) -> list[dict]:
    from safetensors.torch import save_file

    model = model.to(device)
    log.info("collecting %d activations per layer on %s", recipe.tokens, device)
    all_acts = collect(model, train_ids, bos, recipe.tokens, recipe.seed)
    results = []
    n_ctx = model.config.n_positions
    holdout_ids = np.load(work / "holdout.npy")
    eval_batches = metrics.windows(holdout_ids, bos, n_ctx, n=128, seed=2)
    for layer, acts in enumerate(all_acts):
        sae, frequency = train_one(recipe, acts, layer, n_ctx, device)
        target = out_root / f"L{layer}"
        sae.save_model(target)
        save_file({"sparsity": torch.log10(frequency + 1e-10)}, target / "sparsity.safetensors")
        quality = metrics.dictionary_quality(model, sae, layer, eval_batches)
        sae.to("cpu")
        row = {**asdict(quality), "loss_recovered": quality.loss_recovered}
        log.info(
            "layer %d dictionary: %s",
            layer,
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
        )
        results.append(row)
        print(
            f"layer {layer}: fvu {quality.fvu:.3f} L0 {quality.mean_l0:.1f} dead {quality.dead_fraction:.1%} "
            f"recovered {quality.loss_recovered:.1%}",
            file=sys.stderr,
        )
    return results
