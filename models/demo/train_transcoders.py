"""Training the demo's per-layer transcoders and its cross-layer transcoder (CLT), a plain torch loop.

JumpReLU as in Rajamanoharan et al. 2024 ("Jumping Ahead"): thresholds are
exp(log_threshold), so positive; the forward pass is exact, and the thresholds learn
through straight-through estimators with a rectangle kernel of width `bandwidth`,
both in the activation (d/dθ of z·H(z-θ)) and in the L0 penalty (d/dθ of H(z-θ)).
The L0 coefficient of each layer is steered multiplicatively towards `target_l0`
(a controller rather than a fixed coefficient, so the stated L0 holds whatever the
layer), and held fixed for the last `settle` share of the steps. Pre-activations start
centred on the data with thresholds where about `init_density * target_l0` features
fire; a feature silent for `dead_window` steps is pulled back by a small
relu(threshold - z) term (on its encoder and its threshold) until it fires again.

Inputs are each layer's MLP input (ln_2's output) and targets its MLP output, both
rescaled to mean norm sqrt(d_model) for training; the scales are folded back into
W_enc, W_dec and b_dec, so the saved weights act on raw activations. The loss is
each layer's squared error over its target's variance (so layers count alike),
summed over layers, plus the L0 terms. Position 0 (BOS) is left out. The per-layer set
also fits a linear skip path (`W_skip`, from zero), which takes the part of an MLP that is
close to linear off the features: at layer 0 of the demo it cuts the FVU from 0.20 to 0.07.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lenstop.models.demo import metrics
from lenstop.models.demo.transcoders import CrossLayerJumpReLU, mlp_activations

log = logging.getLogger("lenstop.demo")


@dataclass(frozen=True)
class TranscoderRecipe:
    d_transcoder: int = 512  # features per layer, per-layer set
    clt_features: int = 256  # features per layer, CLT
    skip: bool = True  # the per-layer set has a linear skip path (the CLT has none: circuit-tracer's has none)
    target_l0: float = 16.0  # active features a token at each layer (both kinds)
    tokens: int = 400_000  # training activations per layer
    epochs: int = 3
    batch: int = 2048
    lr: float = 1e-3
    warmup: int = 100  # steps
    bandwidth: float = 0.1  # STE rectangle width, in units of the rescaled pre-activations
    init_density: float = 1.0  # initial thresholds: this many times target_l0 active, from the data
    threshold_lr_multiple: float = 10.0  # thresholds learn faster than the other weights
    l0_coefficient: float = 1e-3  # initial; the controller moves it
    controller_rate: float = 0.01  # per step, on log(coefficient), times the relative L0 error
    dead_window: int = 100  # steps without firing before a feature counts as dead
    revive: float = 1e-3  # coefficient of relu(threshold - z) on dead features, which raises them back
    settle: float = 0.2  # final share of steps with the coefficient held
    seed: int = 0


# ---------------------------------------------------------------- JumpReLU with straight-through thresholds
def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        dz = (z > threshold) * grad
        dthreshold = (-(threshold / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return dz, dthreshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        dthreshold = (-(1.0 / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(z), dthreshold, None


class _Trainable(torch.nn.Module):
    """The parameters being trained: n_layers of features, cross-layer decoders or not."""

    def __init__(
        self, n_layers: int, d_model: int, d_transcoder: int, cross: bool, skip: bool, recipe: TranscoderRecipe
    ) -> None:
        super().__init__()
        self.cross, self.bandwidth = cross, recipe.bandwidth
        self.W_enc = torch.nn.Parameter(torch.randn(n_layers, d_transcoder, d_model) / math.sqrt(d_model))
        self.b_enc = torch.nn.Parameter(torch.zeros(n_layers, d_transcoder))
        self.log_threshold = torch.nn.Parameter(torch.zeros(n_layers, d_transcoder))
        n_out = [n_layers - i if cross else 1 for i in range(n_layers)]
        self.W_dec = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(d_transcoder, k, d_model) * 0.1 / math.sqrt(d_model)) for k in n_out]
        )
        self.b_dec = torch.nn.Parameter(torch.zeros(n_layers, d_model))
        # the skip path starts at zero, so the features are fitted from the same start either way
        self.W_skip = torch.nn.Parameter(torch.zeros(n_layers, d_model, d_model)) if skip else None

    @torch.no_grad()
    def start(self, x: torch.Tensor, target_l0: float, density: float) -> None:
        """Centre each pre-activation on a sample `x` (B, n, d) and set every threshold where
        `density * target_l0` features of a layer would fire."""
        self.b_enc.copy_(-torch.einsum("ld,lfd->lf", x.mean(0), self.W_enc))
        z = self.pre(x)  # (B, n, f)
        share = 1.0 - min(0.5, density * target_l0 / z.shape[-1])
        level = torch.quantile(z.transpose(0, 1).flatten(1)[:, :1_000_000], share, dim=1)  # (n,)
        self.log_threshold.copy_(level.clamp_min(1e-3).log()[:, None].expand_as(self.log_threshold))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bld,lfd->blf", x, self.W_enc) + self.b_enc  # (B, n, f)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (batch, n_layers, d_model) -> reconstruction (batch, n_layers, d_model), L0 (n_layers,),
        activations and pre-activations (batch, n_layers, d_transcoder)."""
        z = self.pre(x)
        threshold = self.log_threshold.exp()
        flat = z.flatten(1)  # the autograd functions sum their threshold gradient over dim 0
        acts = _JumpReLU.apply(flat, threshold.flatten(), self.bandwidth).view_as(z)
        l0 = _Step.apply(flat, threshold.flatten(), self.bandwidth).view_as(z).sum(-1).mean(0)  # (n,)
        n = x.shape[1]
        recon = self.b_dec.expand(x.shape[0], n, -1).clone()
        for i in range(n):
            if self.cross:  # layer i's features write to layers i..n-1
                recon[:, i:] += torch.einsum("bf,fkd->bkd", acts[:, i], self.W_dec[i])
            else:
                recon[:, i] += acts[:, i] @ self.W_dec[i][:, 0]
        if self.W_skip is not None:
            recon = recon + torch.einsum("bld,led->ble", x, self.W_skip)
        return recon, l0, acts, z

    @torch.no_grad()
    def export(self, in_scale: torch.Tensor, out_scale: torch.Tensor) -> CrossLayerJumpReLU:
        """Weights for raw activations: x was multiplied by in_scale[l], y by out_scale[l]."""
        return CrossLayerJumpReLU(
            W_enc=(self.W_enc * in_scale[:, None, None]).detach().clone(),
            b_enc=self.b_enc.detach().clone(),
            threshold=self.log_threshold.exp().detach().clone(),
            W_dec=[
                (w / (out_scale[i:] if self.cross else out_scale[i : i + 1])[None, :, None]).detach().clone()
                for i, w in enumerate(self.W_dec)
            ],
            b_dec=(self.b_dec / out_scale[:, None]).detach().clone(),
            cross=self.cross,
            W_skip=None
            if self.W_skip is None
            else (self.W_skip * (in_scale / out_scale)[:, None, None]).detach().clone(),
        )


# ---------------------------------------------------------------- data
@torch.no_grad()
def collect(model: Any, ids: np.ndarray, bos: int, n_tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MLP inputs and outputs at every layer on about `n_tokens` training tokens (position 0 left out):
    two (n_tokens, n_layers, d_model) CPU tensors."""
    n_ctx = model.config.n_positions
    n_windows = math.ceil(n_tokens / (n_ctx - 1))
    ins, outs = [], []
    for tokens in metrics.windows(ids, bos, n_ctx, n_windows, seed=seed, batch=64):
        x, y = mlp_activations(model, tokens)
        ins.append(torch.stack([t[:, 1:] for t in x], dim=2).flatten(0, 1).cpu())
        outs.append(torch.stack([t[:, 1:] for t in y], dim=2).flatten(0, 1).cpu())
    return torch.cat(ins)[:n_tokens], torch.cat(outs)[:n_tokens]


# ---------------------------------------------------------------- training
def train(
    recipe: TranscoderRecipe,
    x: torch.Tensor,
    y: torch.Tensor,
    d_transcoder: int,
    cross: bool,
    name: str,
    device: str = "cpu",
    skip: bool = False,
) -> CrossLayerJumpReLU:
    """Fit JumpReLU features to map x (n, n_layers, d_model) to y (same shape); returns raw-scale weights."""
    n_layers, d_model = x.shape[1], x.shape[2]
    in_scale = math.sqrt(d_model) / x.norm(dim=-1).mean(0)  # (n_layers,)
    out_scale = math.sqrt(d_model) / y.norm(dim=-1).mean(0)
    # the variance of each rescaled target, so each layer's error counts as a fraction unexplained
    y_var = ((y - y.mean(0)) * out_scale[:, None]).pow(2).sum(-1).mean(0).to(device)
    torch.manual_seed(recipe.seed)
    net = _Trainable(n_layers, d_model, d_transcoder, cross, skip, recipe).to(device)
    with torch.no_grad():
        net.b_dec.copy_((y * out_scale[:, None]).mean(0))
        sample = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(recipe.seed))[:8192]]
        net.start(sample.to(device) * in_scale.to(device)[:, None], recipe.target_l0, recipe.init_density)
    others = [p for name, p in net.named_parameters() if name != "log_threshold"]
    groups = [
        {"params": others, "lr_multiple": 1.0},
        {"params": [net.log_threshold], "lr_multiple": recipe.threshold_lr_multiple},
    ]
    opt = torch.optim.Adam(groups, lr=recipe.lr, betas=(0.9, 0.999))
    steps_per_epoch = x.shape[0] // recipe.batch
    total = steps_per_epoch * recipe.epochs
    coefficient = torch.full((n_layers,), recipe.l0_coefficient, device=device)
    since_fired = torch.zeros(n_layers, d_transcoder, dtype=torch.long, device=device)
    g = torch.Generator().manual_seed(recipe.seed)
    in_s, out_s = in_scale.to(device), out_scale.to(device)
    step = 0
    for _epoch in range(recipe.epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(steps_per_epoch):
            lr = recipe.lr * min(1.0, (step + 1) / recipe.warmup) * min(1.0, (total - step) / (0.2 * total))
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_multiple"]
            rows = order[i * recipe.batch : (i + 1) * recipe.batch]
            xb = x[rows].to(device) * in_s[:, None]
            yb = y[rows].to(device) * out_s[:, None]
            recon, l0, acts, z = net(xb)
            fvu = (yb - recon).pow(2).sum(-1).mean(0) / y_var  # (n_layers,)
            dead = since_fired > recipe.dead_window
            revive = ((net.log_threshold.exp() - z).relu() * dead).sum((1, 2)).mean()
            loss = fvu.sum() + (coefficient * l0).sum() + recipe.revive * revive
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            since_fired += 1
            since_fired[(acts > 0).any(0)] = 0
            if step < (1 - recipe.settle) * total:
                error = (l0.detach() - recipe.target_l0) / recipe.target_l0
                coefficient *= torch.exp(recipe.controller_rate * error.clamp(-1, 1))
            step += 1
            if step % 200 == 0 or step == total:
                log.info(
                    "%s step %d/%d fvu %s l0 %s coefficient %s dead %s",
                    name,
                    step,
                    total,
                    _fmt(fvu),
                    _fmt(l0, 1),
                    _fmt(coefficient, 5),
                    _fmt(dead.float().mean(1)),
                )
    return net.export(in_scale, out_scale)


def _fmt(t: torch.Tensor, digits: int = 3) -> str:
    return "[" + " ".join(f"{v:.{digits}f}" for v in t.detach().cpu().tolist()) + "]"


def train_both(
    recipe: TranscoderRecipe, model: Any, train_ids: np.ndarray, bos: int, device: str = "cpu"
) -> tuple[CrossLayerJumpReLU, CrossLayerJumpReLU]:
    """The per-layer set (each layer trained alone) and the CLT, from the same activations."""
    model = model.to(device).eval()
    log.info("collecting %d MLP inputs and outputs per layer on %s", recipe.tokens, device)
    x, y = collect(model, train_ids, bos, recipe.tokens, recipe.seed)
    layers = [
        train(
            recipe,
            x[:, L : L + 1],
            y[:, L : L + 1],
            recipe.d_transcoder,
            False,
            f"transcoder L{L}",
            device,
            recipe.skip,
        )
        for L in range(x.shape[1])
    ]
    per_layer = CrossLayerJumpReLU(
        W_enc=torch.cat([t.W_enc for t in layers]),
        b_enc=torch.cat([t.b_enc for t in layers]),
        threshold=torch.cat([t.threshold for t in layers]),
        W_dec=[t.W_dec[0] for t in layers],
        b_dec=torch.cat([t.b_dec for t in layers]),
        cross=False,
        W_skip=torch.cat([t.W_skip for t in layers]) if recipe.skip else None,  # type: ignore[misc]
    )
    print("per-layer transcoders trained", file=sys.stderr)
    clt = train(recipe, x, y, recipe.clt_features, True, "clt", device)
    return per_layer, clt
