"""Feature cards for the demo's dictionaries, built from held-out text.

A card holds a feature's top-activating contexts (the tokens around the peak,
each with the feature's activation), how often it fires, the tokens its decoder
row promotes and suppresses through the unembedding, and a short label when
Python's own tokenizer says what most of its top contexts have in common
(a keyword, a docstring, a comment, an indentation level...).
Cards are written beside each dictionary as `feature_cards.json.gz`, the file
`lenstop.models.feature_cards` reads for any dictionary.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenstop.models.demo.corpus import SEPARATOR, char_tags
from lenstop.models.feature_cards import CARDS_FILE, LABELS_FILE, labels_of
from lenstop.models.tokens import token_texts, visible

log = logging.getLogger("lenstop.demo")

N_CONTEXTS = 16
BEFORE, AFTER = 12, 4  # tokens of context either side of the peak
N_LOGIT_TOKENS = 8
N_TRANSCODER_CONTEXTS = 8  # contexts kept on a transcoder's card: 2,304 features fit the folders' 5 MB


def _token_tags(tokenizer: Any, text: str) -> tuple[list[int], list[str]]:
    """The text's token ids, and for each token the syntax tag most of its characters carry."""
    tags = char_tags(text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for start, end in enc["offset_mapping"]:
        chars = tags[start:end] or ["code"]
        out.append(Counter(chars).most_common(1)[0][0])
    return enc["input_ids"], out


def tagged_stream(tokenizer: Any, texts: list[str], budget: int) -> tuple[np.ndarray, list[str]]:
    sep = tokenizer.convert_tokens_to_ids(SEPARATOR)
    ids: list[int] = []
    tags: list[str] = []
    for text in texts:
        file_ids, file_tags = _token_tags(tokenizer, text)
        ids.extend(file_ids + [sep])
        tags.extend(file_tags + ["code"])
        if len(ids) >= budget:
            break
    return np.asarray(ids[:budget], dtype=np.int64), tags[:budget]


class TopContexts:
    """A running top-N of (activation, window, position) per feature, merged batch by batch."""

    def __init__(self, d_sae: int, n: int) -> None:
        self.values = torch.full((d_sae, n), -1.0)
        self.where = torch.zeros((d_sae, n, 2), dtype=torch.long)  # (window, position)
        self.neighbourhood = torch.zeros((d_sae, n, BEFORE + 1 + AFTER))

    def add(self, acts: torch.Tensor, window_offset: int) -> None:
        """acts: (batch, seq, d_sae) activations of windows window_offset.. ."""
        b, t, d = acts.shape
        flat = acts.reshape(b * t, d).T  # (d, b*t)
        n = min(self.values.shape[1], flat.shape[1])
        top = flat.topk(n, dim=1)
        win, pos = top.indices // t, top.indices % t
        offsets = torch.arange(-BEFORE, AFTER + 1)
        cols = (pos.unsqueeze(-1) + offsets).clamp(0, t - 1)  # (d, n, 17)
        feature = torch.arange(d).view(d, 1, 1).expand_as(cols)
        neigh = acts[win.unsqueeze(-1).expand_as(cols), cols, feature]
        neigh = torch.where(
            (pos.unsqueeze(-1) + offsets >= 0) & (pos.unsqueeze(-1) + offsets < t), neigh, torch.zeros_like(neigh)
        )
        values = torch.cat([self.values, top.values], dim=1)
        where = torch.cat([self.where, torch.stack([win + window_offset, pos], -1)], dim=1)
        neighbourhood = torch.cat([self.neighbourhood, neigh], dim=1)
        keep = values.topk(self.values.shape[1], dim=1).indices
        self.values = values.gather(1, keep)
        self.where = where.gather(1, keep.unsqueeze(-1).expand(-1, -1, 2))
        self.neighbourhood = neighbourhood.gather(1, keep.unsqueeze(-1).expand(-1, -1, neighbourhood.shape[-1]))


_TAG_PHRASES = {
    "string": "inside a string",
    "docstring": "in a docstring",
    "comment": "in a comment",
    "indentation": "indentation",
    "number": "a number",
    "operator": "an operator",
    "keyword": "a keyword",
    "name": "a name",
    "newline": "end of line",
}


def label_for(
    tokens: list[str], previous: list[str], tags: list[str], positions: list[int] | None = None
) -> str | None:
    """A short label from what the top contexts share; None when they share nothing clear."""
    if not tokens:
        return None
    n = len(tokens)
    if positions and sum(p <= 2 for p in positions) / n >= 0.6:
        return "start of the context (position)"
    token, token_count = Counter(tokens).most_common(1)[0]
    tag, tag_count = Counter(tags).most_common(1)[0]
    prev, prev_count = Counter(previous).most_common(1)[0]
    if token_count / n >= 0.6:
        where = f" {_TAG_PHRASES[tag]}" if tag_count / n >= 0.6 and tag in ("string", "docstring", "comment") else ""
        if tag == "indentation" and token.strip() == "":
            return f"indentation, {len(token.replace(chr(10), ''))} spaces"
        return f'"{visible(token)}"{where}'
    if tag_count / n >= 0.7 and tag in _TAG_PHRASES:
        return _TAG_PHRASES[tag]
    if prev_count / n >= 0.6:
        return f'after "{visible(prev)}"'
    distinct = len(set(tokens))
    if tag_count / n >= 0.5 and tag in _TAG_PHRASES and distinct > 2:
        return f"{_TAG_PHRASES[tag]} (mostly)"
    return None


def write_labels(sae_dir: Path, cards: list[dict[str, Any]], path: Path | None = None) -> None:
    """The labels alone, beside the cards: what every analysis reads (see `LABELS_FILE`)."""
    labels = {str(k): v for k, v in labels_of(cards).items()}
    path = path or sae_dir / LABELS_FILE
    path.write_text(json.dumps(labels, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


@dataclass(frozen=True)
class HeldOut:
    """The held-out text the cards are built from: windows of BOS + n_ctx - 1 tokens, with their syntax tags."""

    windows: torch.Tensor  # (n_windows, n_ctx) token ids
    tags: list[list[str]]  # per window, per token
    strings: list[str]  # every token id's text
    n_ctx: int


def held_out(tokenizer: Any, texts: list[str], budget: int, n_ctx: int) -> HeldOut:
    bos = tokenizer.bos_token_id
    ids, tags = tagged_stream(tokenizer, texts, budget)
    body = n_ctx - 1
    n_windows = len(ids) // body
    windows = torch.tensor(
        np.stack([np.concatenate([[bos], ids[i * body : (i + 1) * body]]) for i in range(n_windows)])
    )
    window_tags = [["code"] + tags[i * body : (i + 1) * body] for i in range(n_windows)]
    return HeldOut(windows, window_tags, token_texts(tokenizer, range(len(tokenizer))), n_ctx)


class Tally:
    """One dictionary's top contexts, firing counts and activation sums over the held-out windows."""

    def __init__(self, d_sae: int) -> None:
        self.top = TopContexts(d_sae, N_CONTEXTS)
        self.fired = torch.zeros(d_sae)
        self.total_act = torch.zeros(d_sae)
        self.n_tokens = 0

    def add(self, acts: torch.Tensor, window_offset: int) -> None:
        """acts: (batch, seq, d_sae) of windows window_offset.. ."""
        acts[:, 0] = 0  # BOS is the same vector in every window: no context to show
        self.top.add(acts, window_offset)
        self.fired += (acts[:, 1:] > 0).sum((0, 1))
        self.total_act += acts[:, 1:].sum((0, 1))
        self.n_tokens += acts[:, 1:].shape[0] * acts[:, 1:].shape[1]


def feature_cards(
    text: HeldOut, tally: Tally, logit_effect: torch.Tensor, shown: int = N_CONTEXTS
) -> list[dict[str, Any]]:
    """Every feature's card. logit_effect: (d_sae, vocab), what each decoder direction does to the logits.
    The label reads all N_CONTEXTS top contexts; the card keeps the first `shown`."""
    windows, strings, n_ctx, top = text.windows, text.strings, text.n_ctx, tally.top
    promoted = logit_effect.topk(N_LOGIT_TOKENS, dim=1)
    suppressed = (-logit_effect).topk(N_LOGIT_TOKENS, dim=1)
    cards: list[dict[str, Any]] = []
    for f in range(top.values.shape[0]):
        contexts, peak_tokens, peak_prev, peak_tags, peak_pos = [], [], [], [], []
        for value, (w, p), neigh in zip(
            top.values[f].tolist(), top.where[f].tolist(), top.neighbourhood[f].tolist(), strict=True
        ):
            if value <= 0:
                continue
            lo, hi = max(1, p - BEFORE), min(n_ctx, p + AFTER + 1)
            toks = [strings[i] for i in windows[w, lo:hi].tolist()]
            acts_here = neigh[lo - (p - BEFORE) : lo - (p - BEFORE) + (hi - lo)]
            contexts.append(
                {"tokens": toks, "acts": [round(a, 3) for a in acts_here], "focus": p - lo, "act": round(value, 4)}
            )
            peak_tokens.append(strings[int(windows[w, p])])
            peak_prev.append(strings[int(windows[w, p - 1])] if p > 1 else "")
            peak_tags.append(text.tags[w][p])
            peak_pos.append(p)
        fired = tally.fired[f]
        cards.append(
            {
                "id": f,
                "label": label_for(peak_tokens, peak_prev, peak_tags, peak_pos),
                "frequency": float(fired) / tally.n_tokens,
                "mean_act": float(tally.total_act[f] / fired) if fired > 0 else 0.0,
                "max_act": max((c["act"] for c in contexts), default=0.0),
                "contexts": contexts[:shown],
                "tags": dict(Counter(peak_tags)),
                "promoted": [
                    [strings[i], round(v, 3)]
                    for i, v in zip(promoted.indices[f].tolist(), promoted.values[f].tolist(), strict=True)
                ],
                "suppressed": [
                    [strings[i], round(-v, 3)]
                    for i, v in zip(suppressed.indices[f].tolist(), suppressed.values[f].tolist(), strict=True)
                ],
            }
        )
    return cards


def write_cards(path: Path, doc: dict[str, Any]) -> None:
    """The cards, gzipped with no timestamp in the header, so the same cards give the same bytes."""
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(data)


def _counted(what: str, cards: list[dict[str, Any]]) -> tuple[int, int]:
    live = sum(1 for c in cards if c["frequency"] > 0)
    labelled = sum(1 for c in cards if c["frequency"] > 0 and c["label"])
    log.info("%s cards: %d features, %d live, %d labelled", what, len(cards), live, labelled)
    return live, labelled


def build_cards(model_dir: Path, sae_root: Path, texts: list[str], budget: int, device: str = "cpu") -> dict[str, int]:
    """Write `feature_cards.json.gz` and its labels into every dictionary directory under `sae_root`: the cards
    `lenstop cards` makes (`lenstop.models.cards.build`, its pass over the held-out text, packed and cut into
    windows as here), each with a label from what its top contexts share (`label_for`, by Python's tokenizer)."""
    import hashlib
    import os
    import tempfile

    from lenstop.models.cards.build import build_cards as corpus_pass
    from lenstop.models.cards.spec import PassOptions
    from lenstop.models.cards.texts import Corpus
    from lenstop.models.engine import Engine

    engine = Engine.load(str(model_dir), [str(sae_root)], device=device)
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    corpus = Corpus("the demo's held-out text", digest, lambda: iter(texts))
    options = PassOptions(tokens=budget, context=engine.n_ctx, batch_size=32)
    saved = os.environ.get("LENSTOP_CACHE")
    with tempfile.TemporaryDirectory(prefix="lenstop-demo-cards-") as cache:
        os.environ["LENSTOP_CACHE"] = cache  # the pass's windows, state and cards: none of it is the user's cache
        try:
            result = corpus_pass(engine.handle, corpus, options)
            _, tags = tagged_stream(engine.handle.model.tokenizer, texts, budget)
            counts = {}
            for d in engine.dictionaries:
                with gzip.open(result.written[d.key], "rt", encoding="utf-8") as fh:
                    doc = json.load(fh)
                for card in doc["features"]:
                    _label(card, tags, options.context)
                sae_dir = Path(d.source)  # a local dictionary's source is its folder
                write_cards(sae_dir / CARDS_FILE, doc)
                write_labels(sae_dir, doc["features"])
                counts[f"L{d.layer}"] = _counted(f"layer {d.layer}", doc["features"])[0]
        finally:
            if saved is None:
                os.environ.pop("LENSTOP_CACHE", None)
            else:
                os.environ["LENSTOP_CACHE"] = saved
    return counts


def _label(card: dict[str, Any], tags: list[str], context: int) -> None:
    """A card's label and the syntax tags of its top contexts' peaks, from where they were in the windows."""
    peak_tokens, peak_prev, peak_tags, peak_pos = [], [], [], []
    for c in card["contexts"]:
        window, pos = c["at"]
        peak_tokens.append(c["tokens"][c["focus"]])
        peak_prev.append(c["tokens"][c["focus"] - 1] if pos > 1 and c["focus"] > 0 else "")
        peak_tags.append(tags[window * (context - 1) + pos - 1])
        peak_pos.append(pos)
    card["label"] = label_for(peak_tokens, peak_prev, peak_tags, peak_pos)
    card["tags"] = dict(Counter(peak_tags))


# ---------------------------------------------------------------- transcoders (circuit-tracer's folders)
@dataclass(frozen=True)
class TracerLayer:
    """One layer's features of a circuit-tracer folder, read from its files with plain torch."""

    layer: int
    w_enc: torch.Tensor  # (d_features, d_model)
    b_enc: torch.Tensor  # (d_features,)
    threshold: torch.Tensor | None  # (d_features,): JumpReLU; None: ReLU
    direction: torch.Tensor  # (d_features, d_model): what a feature adds to the residual stream, all layers summed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The features (..., d_features) of the layer's MLP input x (..., d_model), ln_2's output."""
        pre = x @ self.w_enc.T + self.b_enc
        if self.threshold is None:
            return pre.relu()
        return pre.relu() * (pre > self.threshold)  # JumpReLU, as SAELens and (thresholds >= 0) circuit-tracer


def tracer_layers(folder: Path) -> tuple[str, list[TracerLayer]]:
    """A circuit-tracer folder's kind (model_kind) and its layers' encoders and decoder directions. A per-layer
    feature writes its W_dec row; a cross-layer one writes a row to each later layer's MLP output, all of
    them added to the residual stream, so its direction is their sum."""
    import yaml  # type: ignore[import-untyped]  # PyYAML, a declared dependency; no stubs here
    from safetensors.torch import load_file

    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    kind = config["model_kind"]
    layers = []
    if kind == "transcoder_set":
        for layer, name in enumerate(config["transcoders"]):
            t = load_file(folder / name)
            layers.append(
                TracerLayer(layer, t["W_enc"], t["b_enc"], t.get("activation_function.threshold"), t["W_dec"])
            )
    elif kind == "cross_layer_transcoder":
        for layer in range(int(config["n_layers"])):
            e = load_file(folder / f"W_enc_{layer}.safetensors")
            w_dec = load_file(folder / f"W_dec_{layer}.safetensors")[f"W_dec_{layer}"]  # (d, n_layers - layer, d_model)
            thr = e.get(f"threshold_{layer}")
            layers.append(TracerLayer(layer, e[f"W_enc_{layer}"], e[f"b_enc_{layer}"], thr, w_dec.sum(1)))
    else:
        raise ValueError(f"{folder}: model_kind {kind!r} is not a transcoder_set or a cross_layer_transcoder")
    return kind, layers


def tracer_card_name(layer: int) -> str:
    """What a circuit-tracer folder's layer-`layer` card files start with: `layer_0.feature_cards.json.gz`,
    which no circuit-tracer loader globs (`layer_*.safetensors`, `W_enc_*`, `W_dec_*`)."""
    return f"layer_{layer}"


@torch.no_grad()
def build_transcoder_cards(
    model_dir: Path,
    folders: list[Path],
    texts: list[str],
    budget: int,
    device: str = "cpu",
    shown: int = N_TRANSCODER_CONTEXTS,
) -> dict[str, dict[str, list[int]]]:
    """Write `layer_{i}.feature_cards.json.gz` and `layer_{i}.feature_labels.json` into each circuit-tracer
    folder, from the same held-out text as the SAEs' cards; returns per folder the live and labelled counts."""
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    from lenstop.models.demo.transcoders import mlp_activations

    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval().to(device)
    text = held_out(tokenizer, texts, budget, model.config.n_positions)
    unembed = model.lm_head.weight.cpu()  # (vocab, d_model)
    counts: dict[str, dict[str, list[int]]] = {}
    for folder in folders:
        kind, layers = tracer_layers(folder)
        layers = [
            replace(t, w_enc=t.w_enc.to(device), b_enc=t.b_enc.to(device), threshold=_to(t.threshold, device))
            for t in layers
        ]
        tallies = [Tally(t.w_enc.shape[0]) for t in layers]
        for start in range(0, len(text.windows), 32):
            ins, _ = mlp_activations(model, text.windows[start : start + 32])
            for t, tally in zip(layers, tallies, strict=True):
                tally.add(t.encode(ins[t.layer]).cpu(), start)  # (b, t, d_features)
        counts[folder.name] = {}
        for t, tally in zip(layers, tallies, strict=True):
            cards = feature_cards(text, tally, t.direction.cpu() @ unembed.T, shown)
            doc = {
                "layer": t.layer,
                "kind": kind,
                "hook": f"blocks.{t.layer}.mlp.hook_in",
                "d_sae": len(cards),
                "n_tokens": tally.n_tokens,
                "features": cards,
            }
            name = tracer_card_name(t.layer)
            write_cards(folder / f"{name}.{CARDS_FILE}", doc)
            write_labels(folder, cards, folder / f"{name}.{LABELS_FILE}")
            counts[folder.name][f"L{t.layer}"] = list(_counted(f"{folder.name} layer {t.layer}", cards))
    return counts


def _to(t: torch.Tensor | None, device: str) -> torch.Tensor | None:
    return None if t is None else t.to(device)
