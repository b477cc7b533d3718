"""A from-scratch reference for attribution graphs: the local replacement model written out by hand.

It shares nothing with `lenstop.models.graphs`: a GPT-2 forward in float64 from the
Hugging Face weights (c_attn, c_proj, ln_1, ln_2, ln_f, wte, wpe), with every
attention pattern and LayerNorm scale frozen at its value on the prompt, and each
MLP's output replaced by a sum of fixed node contributions: every active feature's
activation times its decoder, the error, and the decoder bias. An edge is measured
by finite differences: double one source's contribution and read how every
target's linear pre-activation moves. The model is linear in those contributions,
so the difference is the direct effect exactly.

`Planted` is a random JumpReLU replacement (per-layer or cross-layer, with or
without a skip) that implements `lenstop.models.graphs.Replacement`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class Planted:
    """Random JumpReLU transcoders: `W_enc[l]` (d_sae, d_model) as circuit-tracer stores them."""

    scan = "planted"
    source = "planted in the test"

    def __init__(
        self, n_layers: int, d_model: int, d_sae: int, *, seed: int = 0, clt: bool = False, skip: bool = False
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_layers = n_layers
        self.kind = "cross_layer_transcoder" if clt else "transcoder_set"
        self.W_enc = [torch.randn(d_sae, d_model, generator=g) / d_model**0.5 for _ in range(n_layers)]
        self.b_enc = [torch.randn(d_sae, generator=g) * 0.1 for _ in range(n_layers)]
        self.threshold = [torch.full((d_sae,), 0.9) for _ in range(n_layers)]
        outs = [(n_layers - layer) if clt else 1 for layer in range(n_layers)]
        self.W_dec = [torch.randn(d_sae, n, d_model, generator=g) * 0.1 for n in outs]
        self.bias = [torch.randn(d_model, generator=g) * 0.01 for _ in range(n_layers)]
        self.skip = [torch.randn(d_model, d_model, generator=g) * 0.05 if skip else None for _ in range(n_layers)]

    def d_features(self, layer: int) -> int:
        return self.W_enc[layer].shape[0]

    def input_hook(self, layer: int) -> str:
        return f"blocks.{layer}.mlp.hook_in"

    def output_hook(self, layer: int) -> str:
        return f"blocks.{layer}.mlp.hook_out"

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        z = x.to(self.W_enc[layer].dtype) @ self.W_enc[layer].T + self.b_enc[layer]
        return z * (z > self.threshold[layer])

    def encoder_vectors(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        return self.W_enc[layer][idx]

    def decoder_vectors(self, layer: int, idx: torch.Tensor) -> torch.Tensor:
        return self.W_dec[layer][idx]

    def b_dec(self, layer: int) -> torch.Tensor:
        return self.bias[layer]

    def skip_weight(self, layer: int) -> torch.Tensor | None:
        return self.skip[layer]

    def double(self) -> Planted:
        """The same transcoders in float64."""
        copy = object.__new__(Planted)
        copy.__dict__ = {
            k: [t.double() if isinstance(t, torch.Tensor) else t for t in v] if isinstance(v, list) else v
            for k, v in self.__dict__.items()
        }
        return copy


@dataclass
class Frozen:
    """One prompt's frozen values from the real model, float64."""

    patterns: list[torch.Tensor]  # (heads, q, k)
    scales: dict[str, torch.Tensor]  # "ln_1.L" / "ln_2.L" / "ln_f" -> (n_pos,)
    mlp_in: list[torch.Tensor]
    mlp_out: list[torch.Tensor]


def _ln(module: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(-1, keepdim=True)) / scale[:, None] * module.weight + module.bias


def freeze(hf: Any, ids: list[int]) -> Frozen:
    """Run the real model once (float64) and keep its patterns, LayerNorm scales and MLP inputs and outputs."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    norms = {f"ln_1.{i}": b.ln_1 for i, b in enumerate(hf.transformer.h)}
    norms |= {f"ln_2.{i}": b.ln_2 for i, b in enumerate(hf.transformer.h)}
    norms["ln_f"] = hf.transformer.ln_f
    for name, module in norms.items():
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: seen.__setitem__(name, a[0][0])))
    for i, block in enumerate(hf.transformer.h):
        handles.append(
            block.mlp.register_forward_hook(lambda m, a, o, i=i: seen.update({f"in{i}": a[0][0], f"out{i}": o[0]}))
        )
    try:
        with torch.no_grad():
            out = hf(torch.tensor([ids]), output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    eps = hf.config.layer_norm_epsilon
    scales = {}
    for name in norms:
        x = seen[name]
        scales[name] = ((x - x.mean(-1, keepdim=True)).pow(2).mean(-1) + eps).sqrt()
    n = len(hf.transformer.h)
    return Frozen(
        [a[0] for a in out.attentions], scales, [seen[f"in{i}"] for i in range(n)], [seen[f"out{i}"] for i in range(n)]
    )


def replacement_run(
    hf: Any,
    ids: list[int],
    frozen: Frozen,
    parts: list[torch.Tensor],
    token_scale: torch.Tensor,
    rep: Planted,
    enc_rows: list[torch.Tensor],
    logit_vecs: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The replacement model with MLP layer L's output fixed at `parts[L]` (n_pos, d_model): every target's
    pre-activation without bias, per layer (n_pos, d_sae), and the logit targets' at the last position."""
    cfg = hf.config
    n_heads, d_model = cfg.n_head, cfg.n_embd
    d_head = d_model // n_heads
    x = hf.transformer.wte.weight[ids] * token_scale[:, None] + hf.transformer.wpe.weight[: len(ids)]
    pre = []
    for layer, block in enumerate(hf.transformer.h):
        h = _ln(block.ln_1, x, frozen.scales[f"ln_1.{layer}"])
        qkv = h @ block.attn.c_attn.weight + block.attn.c_attn.bias
        v = qkv[:, 2 * d_model :].reshape(len(ids), n_heads, d_head).transpose(0, 1)  # (heads, k, d_head)
        z = (frozen.patterns[layer] @ v).transpose(0, 1).reshape(len(ids), d_model)
        x = x + z @ block.attn.c_proj.weight + block.attn.c_proj.bias
        m_in = _ln(block.ln_2, x, frozen.scales[f"ln_2.{layer}"])
        pre.append(m_in @ enc_rows[layer].T)
        skip = rep.skip[layer]
        x = x + parts[layer] + (m_in @ skip if skip is not None else 0)
    final = _ln(hf.transformer.ln_f, x, frozen.scales["ln_f"])
    return pre, final[-1] @ logit_vecs.T


References = tuple[list[tuple], dict[tuple, torch.Tensor]]


def reference_edges(hf_path: Any, ids: list[int], rep: Planted, logit_ids: list[int]) -> References:
    """Every direct effect: the targets' names, and for each source its effects on them in that order. Nodes are
    named as tuples: ("feature", layer, pos, idx), ("error", layer, pos), ("embed", pos), ("logit", token id)."""
    from transformers import GPT2LMHeadModel

    torch.set_grad_enabled(False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny float64 forwards: threads only cost here
    try:
        return _reference_edges(
            GPT2LMHeadModel.from_pretrained(hf_path, attn_implementation="eager").double().eval(), ids, rep, logit_ids
        )
    finally:
        torch.set_grad_enabled(True)
        torch.set_num_threads(threads)


def _reference_edges(hf: Any, ids: list[int], rep: Planted, logit_ids: list[int]) -> References:
    rep = rep.double()
    frozen = freeze(hf, ids)
    n_layers, n_pos = rep.n_layers, len(ids)
    acts, errors, contrib = [], [], {}
    parts = [rep.bias[layer].expand(n_pos, -1).clone() for layer in range(n_layers)]
    for layer in range(n_layers):
        a = rep.encode(layer, frozen.mlp_in[layer])
        a[0] = 0
        acts.append(a)
        for pos, feat in torch.nonzero(a).tolist():
            for j in range(rep.W_dec[layer].shape[1]):
                vec = a[pos, feat] * rep.W_dec[layer][feat, j]
                contrib[("feature", layer, pos, feat), layer + j, pos] = vec
                parts[layer + j][pos] += vec
    for layer in range(n_layers):
        skip = rep.skip[layer]
        recon = parts[layer] + (frozen.mlp_in[layer] @ skip if skip is not None else 0)
        err = frozen.mlp_out[layer] - recon
        err[0] = 0
        errors.append(err)
        for pos in range(n_pos):
            contrib[("error", layer, pos), layer, pos] = err[pos]
            parts[layer][pos] += err[pos]
    w_u = hf.lm_head.weight.T  # (d_model, vocab)
    logit_vecs = (w_u[:, logit_ids] - w_u.mean(-1, keepdim=True)).T
    ones = torch.ones(n_pos, dtype=torch.float64)
    base_pre, base_logit = replacement_run(hf, ids, frozen, parts, ones, rep, rep.W_enc, logit_vecs)
    sources: dict[tuple, list[tuple[int, int, torch.Tensor]]] = {}
    for (node, layer, pos), vec in contrib.items():
        sources.setdefault(node, []).append((layer, pos, vec))
    targets = [
        ("feature", layer, pos, feat) for layer in range(n_layers) for pos, feat in torch.nonzero(acts[layer]).tolist()
    ]
    by_layer = [torch.nonzero(acts[layer]) for layer in range(n_layers)]
    target_names = targets + [("logit", tok) for tok in logit_ids]
    columns: dict[tuple, torch.Tensor] = {}

    def record(source: tuple, pre: list[torch.Tensor], logit: torch.Tensor) -> None:
        moved = [(pre[layer] - base_pre[layer])[idx[:, 0], idx[:, 1]] for layer, idx in enumerate(by_layer)]
        columns[source] = torch.cat([*moved, logit - base_logit])

    for source, writes in sources.items():
        moved = [p.clone() for p in parts]
        for layer, pos, vec in writes:
            moved[layer][pos] += vec
        pre, logit = replacement_run(hf, ids, frozen, moved, ones, rep, rep.W_enc, logit_vecs)
        record(source, pre, logit)
    for pos in range(n_pos):
        scale = ones.clone()
        scale[pos] = 2
        pre, logit = replacement_run(hf, ids, frozen, parts, scale, rep, rep.W_enc, logit_vecs)
        record(("embed", pos), pre, logit)
    return target_names, columns
