"""Tokenizer and language model of the demo.

The recipe is the one measured to grow an induction circuit on a 2-core CPU
(its training curve is in artifacts/MODEL_CARD.md): 3 layers, width 128, 8 heads, context 128, batch 8,
AdamW 3e-3 with warm-up and cosine decay, and a quarter of the training
sequences replaced by a random span tiled across the context, so that copying
earlier text pays off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lenstop.models.demo import metrics
from lenstop.models.demo.corpus import SEPARATOR

log = logging.getLogger("lenstop.demo")


@dataclass(frozen=True)
class ModelRecipe:
    vocab_size: int = 4096
    n_layers: int = 3
    d_model: int = 128
    n_heads: int = 8
    n_ctx: int = 128
    batch: int = 8
    steps: int = 20_000
    lr: float = 3e-3
    warmup: int = 200
    min_lr_share: float = 0.1
    weight_decay: float = 0.1
    repeat_share: float = 0.25  # sequences made of a tiled random span
    repeat_span: tuple[int, int] = (20, 60)
    eval_every: int = 500
    seed: int = 0


# ---------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Any:
    """A byte-level BPE (GPT-2 style) saved as Hugging Face tokenizer files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SEPARATOR],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SEPARATOR, eos_token=SEPARATOR, unk_token=SEPARATOR, model_max_length=10**6
    )
    fast.save_pretrained(out_dir)
    return fast


def encode(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """All documents as one stream of ids, each document followed by the separator."""
    sep = tokenizer.convert_tokens_to_ids(SEPARATOR)
    ids: list[int] = []
    for chunk in range(0, len(texts), 64):
        for row in tokenizer(texts[chunk : chunk + 64], add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(sep)
    return np.asarray(ids, dtype=np.uint16)


# ---------------------------------------------------------------- model
def new_model(recipe: ModelRecipe, vocab: int, bos: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=recipe.n_ctx,
        n_ctx=recipe.n_ctx,  # type: ignore[call-arg]  # kept in config.json for TransformerLens (FACTS)
        n_embd=recipe.d_model,
        n_layer=recipe.n_layers,
        n_head=recipe.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos,
        eos_token_id=bos,
    )
    torch.manual_seed(recipe.seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # sinusoidal positions, small: position is easy to read from the start
        pos = torch.arange(recipe.n_ctx).unsqueeze(1)
        freq = torch.exp(torch.arange(0, recipe.d_model, 2) * (-math.log(10000.0) / recipe.d_model))
        table = torch.zeros(recipe.n_ctx, recipe.d_model)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        model.transformer.wpe.weight.copy_(0.03 * table)
    return model


def batch_at(step: int, ids: np.ndarray, recipe: ModelRecipe, bos: int, vocab: int) -> torch.Tensor:
    """The batch of `step`, a pure function of (seed, step), so training resumes exactly."""
    rng = np.random.default_rng([recipe.seed, step])
    length = recipe.n_ctx - 1
    rows = []
    for _ in range(recipe.batch):
        if rng.random() < recipe.repeat_share:
            span = rng.integers(256, vocab, size=int(rng.integers(*recipe.repeat_span, endpoint=True)))
            row = np.resize(span, length)
        else:
            start = int(rng.integers(0, len(ids) - length))
            row = ids[start : start + length]
        rows.append(np.concatenate([[bos], row]).astype(np.int64))
    return torch.from_numpy(np.stack(rows))


def lr_at(step: int, recipe: ModelRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = min(1.0, (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup))
    share = recipe.min_lr_share + (1 - recipe.min_lr_share) * 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr * share


def optimizer_for(model: Any, recipe: ModelRecipe) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )


def train(
    recipe: ModelRecipe,
    train_ids: np.ndarray,
    holdout_ids: np.ndarray,
    bos: int,
    vocab: int,
    checkpoint: Path,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    device: str = "cpu",
) -> tuple[Any, list[dict[str, float]]]:
    """Train (resuming from `checkpoint` if it exists); returns the model and the eval history."""
    model = new_model(recipe, vocab, bos).to(device)
    opt = optimizer_for(model, recipe)
    history: list[dict[str, float]] = []
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        history = [dict(h) for h in state["history"]]
        log.info("resumed model training at step %d", start)
    val = metrics.windows(holdout_ids, bos, recipe.n_ctx, n=64, seed=1)
    tic = time.monotonic()
    for step in range(start, recipe.steps):
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        tokens = batch_at(step, train_ids, recipe, bos, vocab).to(device)
        logits = model(tokens).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % recipe.eval_every == 0 or done == recipe.steps:
            ind = metrics.induction(model, vocab, bos)
            row = {
                "step": float(done),
                "train_loss": float(loss.item()),
                "val_loss": metrics.mean_loss(model, val),
                "induction_ratio": ind.ratio,
                "induction_score": ind.induction_score,
                "previous_score": ind.previous_score,
                "seconds": time.monotonic() - tic,
            }
            history.append(row)
            log.info(
                "step %d loss %.3f val %.3f ratio %.2f induction L%dH%d %.2f previous L%dH%d %.2f",
                done,
                row["train_loss"],
                row["val_loss"],
                ind.ratio,
                *ind.best_induction_head,
                ind.induction_score,
                *ind.best_previous_head,
                ind.previous_score,
            )
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": done, "history": history}, tmp
            )
            tmp.replace(checkpoint)
        if progress is not None:
            progress(done, history[-1] if history else {"train_loss": float(loss.item())})
    model.eval()
    return model, history
