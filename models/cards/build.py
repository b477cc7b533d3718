"""`lenstop cards`: one pass over a corpus through the model and every dictionary, feature cards at the end.

The corpus is tokenised once (texts packed end to end, a separator between them, cut into windows of
`context` tokens that each start with BOS) and kept beside the pass, so a resumed pass reads the very
windows the first one did. Each batch is one forward pass cut short after the last dictionary's hook; each
dictionary encodes its activations inside its hook and merges them into its `Tally` on its own device.
The pass saves its state every `CHECKPOINT_S` seconds and when ctrl+c stops it (at the end of the batch
under way, so the state is whole), and resumes from it when run again with the same model, dictionaries,
corpus and settings. The cards are written atomically under the cache, keyed by the model's and each
dictionary's content digests, where `Engine.load` finds them (`cached_cards`).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lenstop.models.cards import tally as T
from lenstop.models.cards.spec import PassOptions, PassResult
from lenstop.models.cards.texts import Corpus
from lenstop.models.digests import tensor_digest
from lenstop.models.errors import CancelledError, UsageError
from lenstop.models.feature_cards import CARDS_FILE
from lenstop.models.files import cache_dir
from lenstop.models.runtime.handle import EnoughRead, ModelHandle

CHECKPOINT_S = 60.0
TEXT_BATCH = 256  # texts tokenised at once
VERSION = 1  # of the cards and the saved state: a change makes old ones stale
QUANTILES = 4  # groups of sampled examples, by activation
PER_QUANTILE = 4  # examples shown in each


@dataclass(frozen=True)
class Reader:
    """One dictionary the pass reads: the hook it reads, how it encodes, where its cards go."""

    key: str
    layer: int
    hook: str
    encode: Callable[[torch.Tensor], torch.Tensor]  # the hook's activation -> (batch, seq, features)
    n_features: int
    device: torch.device
    digest: str
    dictionary: str  # the key `cards.api.features_at` gives these features: a cross-layer transcoder's own key


def model_digest(handle: ModelHandle) -> str:
    prefix = f"cards{VERSION}|{handle.name}|{handle.processing.describe()}|{handle.prepend_bos}"
    return tensor_digest(prefix, handle.model.named_parameters())


def readers(handle: ModelHandle) -> list[Reader]:
    """Every dictionary of the handle, a cross-layer transcoder's layers each as one, in layer order."""
    out = []
    for d in handle.dictionaries:
        digest = tensor_digest(f"{d.architecture}|{d.hook_in}|{d.hook_out}", d.sae.state_dict().items())
        device = next(iter(d.sae.parameters())).device

        def encode(x: torch.Tensor, d: Any = d) -> torch.Tensor:
            return d.encode(d.input_of(x))

        out.append(Reader(d.key, d.layer, d.hook_in, encode, d.d_sae, device, digest, d.key))
    clt = handle.dictionaries.cross_layer
    if clt is not None:
        for layer in range(clt.n_layers):
            tensors = [("encoder", clt.encoder(layer)), ("decoder", clt.decoder(layer)), ("b_enc", clt.b_enc(layer))]

            def encode_layer(x: torch.Tensor, layer: int = layer) -> torch.Tensor:
                return clt.encode(layer, x)

            digest = tensor_digest(f"clt|{layer}|{clt.input_hook(layer)}", tensors)
            out.append(
                Reader(
                    f"{clt.key}@{layer}",
                    layer,
                    clt.input_hook(layer),
                    encode_layer,
                    clt.d_features,
                    clt.device,
                    digest,
                    clt.key,
                )
            )
    if not out:
        raise UsageError("cards need a dictionary: pass --sae")
    return sorted(out, key=lambda r: (r.layer, r.key))


def cards_home(model: str, reader_digest: str) -> Path:
    return cache_dir() / "cards" / model / reader_digest


def cached_cards(model: str, reader_digest: str) -> Path | None:
    """The cards a corpus pass wrote for this model and dictionary, if there are any."""
    path = cards_home(model, reader_digest) / CARDS_FILE
    return path if path.is_file() else None


def attach_cached(handle: ModelHandle) -> int:
    """Give every dictionary whose corpus pass left cards in the cache those cards (its labels kept); they win
    over card files beside it, being built later and asked for. Returns how many were attached."""
    model = model_digest(handle)
    found = 0
    clt = handle.dictionaries.cross_layer
    for reader in readers(handle) if len(handle.dictionaries) or clt is not None else []:
        path = cached_cards(model, reader.digest)
        if path is None:
            continue
        found += 1
        if clt is not None and reader.dictionary == clt.key and reader.key != clt.key:
            clt.set_cards(reader.layer, clt.cards(reader.layer).rebased(path))
        else:
            d = handle.dictionaries.by_key[reader.key]
            d.cards = d.cards.rebased(path)
    return found


# ---------------------------------------------------------------- windows
def windows(handle: ModelHandle, corpus: Corpus, options: PassOptions, folder: Path) -> np.ndarray:
    """The corpus as (n_windows, context) token ids, made once and kept in `folder` (`windows.npy`)."""
    path = folder / "windows.npy"
    if path.is_file():
        return np.load(path)
    tokenizer = handle.model.tokenizer
    bos = tokenizer.bos_token_id
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else bos
    body = options.context - (1 if bos is not None else 0)
    need = options.tokens
    stream: list[int] = []
    batch: list[str] = []
    for text in _with_end(corpus.texts()):
        if text is not None:
            batch.append(text)
        if batch and (len(batch) == TEXT_BATCH or text is None):
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                stream.extend(ids)
                if sep is not None:
                    stream.append(sep)
            batch = []
        if len(stream) >= need or text is None:
            break
    n = min(len(stream), need) // body
    if n == 0:
        raise UsageError(f"the corpus ({corpus.name}) has fewer than {body} tokens: one window needs {body}")
    rows = np.asarray(stream[: n * body], dtype=np.int64).reshape(n, body)
    if bos is not None:
        rows = np.concatenate([np.full((n, 1), bos, dtype=np.int64), rows], axis=1)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, rows)
    tmp.replace(path)
    return rows


def _with_end(texts: Iterator[str]) -> Iterator[str | None]:
    yield from texts
    yield None


# ---------------------------------------------------------------- the pass
def build_cards(
    handle: ModelHandle,
    corpus: Corpus,
    options: PassOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PassResult:
    """Run (or resume) the pass and write every dictionary's cards; `progress(done, total)` in windows."""
    options = options or PassOptions()
    if options.context > handle.n_ctx:
        raise UsageError(f"--context {options.context} is longer than {handle.name}'s context ({handle.n_ctx})")
    if options.context < 2:
        raise UsageError("--context must be at least 2 tokens")
    model = model_digest(handle)
    chosen = readers(handle)
    run = cache_dir() / "cards" / "runs" / f"{model}-{corpus.digest}-c{options.context}-t{options.tokens}"
    rows = windows(handle, corpus, options, run)
    state_path = run / ("state-" + tensor_digest("", [(r.digest, torch.zeros(0)) for r in chosen]) + ".safetensors")
    tallies = {r.key: T.Tally(r.n_features, r.device) for r in chosen}
    done = _load_state(state_path, tallies)
    first = done
    tic = last_save = time.monotonic()
    stop = _StopFlag()
    with stop.catching():
        while done < len(rows):
            batch = torch.from_numpy(rows[done : done + options.batch_size]).to(handle.model.cfg.device)
            _one_pass(handle, chosen, tallies, batch, done)
            done += batch.shape[0]
            if progress is not None:
                progress(done, len(rows))
            if stop.stopped or time.monotonic() - last_save > CHECKPOINT_S:
                _save_state(state_path, tallies, done)
                last_save = time.monotonic()
            if stop.stopped:
                n = done * (options.context - 1)
                raise CancelledError(
                    f"interrupted after {done:,} of {len(rows):,} windows ({n:,} tokens); what is done is kept: "
                    "run the same command again to go on"
                )
    written = {r.key: _write_cards(handle, r, tallies[r.key], rows, corpus, options, model) for r in chosen}
    state_path.unlink(missing_ok=True)
    tokens = len(rows) * (options.context - 1)
    return PassResult(written, tokens, first, len(rows), time.monotonic() - tic)


def _one_pass(
    handle: ModelHandle, chosen: list[Reader], tallies: dict[str, T.Tally], batch: torch.Tensor, first: int
) -> None:
    read_all(handle, chosen, batch, lambda r, acts: tallies[r.key].add(acts, first))


def read_all(
    handle: ModelHandle,
    chosen: list[Reader],
    tokens: torch.Tensor,
    each: Callable[[Reader, torch.Tensor], None],
) -> None:
    """One forward pass over `tokens` in which `each(reader, activations)` is told every reader's activations
    (batch, seq, features) inside its hook, cut short once the last hook has fired."""
    by_hook: dict[str, list[Reader]] = {}
    for r in chosen:
        by_hook.setdefault(r.hook, []).append(r)
    remaining = set(by_hook)

    def hook_for(name: str) -> Callable[..., Any]:
        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            for r in by_hook[name]:
                each(r, r.encode(x.to(r.device)))
            remaining.discard(name)
            if not remaining:
                raise EnoughRead(None)
            return x

        return hook

    try:
        with handle.guard(tokens.shape[-1]), handle.hooks([(h, hook_for(h)) for h in by_hook]):
            handle.model(tokens)
    except EnoughRead:
        return
    raise RuntimeError("the pass ended before every dictionary's hook fired")


class _StopFlag:
    """ctrl+c sets a flag the pass reads at the end of each batch, instead of stopping it half way."""

    def __init__(self) -> None:
        self.stopped = False

    def catching(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def scope() -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # only the main thread receives signals: a worker's pass is stopped otherwise
                return

            def handler(signum: int, frame: Any) -> None:
                if self.stopped:  # a second ctrl+c stops at once
                    raise KeyboardInterrupt
                self.stopped = True

            previous = signal.signal(signal.SIGINT, handler)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)

        return scope()


def _save_state(path: Path, tallies: dict[str, T.Tally], done: int) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for i, tally in enumerate(tallies.values()):
        tensors.update(tally.state(f"{i}/"))
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        tensors, str(tmp), metadata={"done": str(done), "version": str(VERSION), "keys": json.dumps(list(tallies))}
    )
    tmp.replace(path)


def _load_state(path: Path, tallies: dict[str, T.Tally]) -> int:
    """The windows a saved pass had done (its tallies loaded), or 0 when there is none to resume."""
    if not path.is_file():
        return 0
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("version") != str(VERSION) or json.loads(meta.get("keys", "[]")) != list(tallies):
        return 0
    state = load_file(str(path))
    for i, tally in enumerate(tallies.values()):
        tally.load(state, f"{i}/")
    return int(meta["done"])


# ---------------------------------------------------------------- the cards
class _CardWriter:
    """One dictionary's tally as cards: its tensors read once into plain lists, rounded once, then a card per
    feature (no tensor call per number: 98,304 cards of the GPT-2 shape are written in Python)."""

    def __init__(self, tally: T.Tally, rows: np.ndarray, strings: list[str]) -> None:
        self.rows, self.strings, self.context = rows, strings, rows.shape[1]
        self.top_act, self.top_at = tally.top_act.cpu().tolist(), tally.top_at.cpu().tolist()
        self.top_near = tally.top_near.float().cpu().numpy().round(3).tolist()
        self.s_act, self.s_at = tally.sample_act.cpu().tolist(), tally.sample_at.cpu().tolist()
        self.s_near = tally.sample_near.float().cpu().numpy().round(3).tolist()
        self.fired, self.total = tally.fired.cpu().tolist(), tally.total.cpu().tolist()
        self.hist, self.hist_hi = tally.hist.cpu().tolist(), tally.hist_hi.cpu().tolist()
        self.n_tokens = max(1, tally.n_tokens)

    def example(self, act: float, at: int, near: list[float]) -> dict[str, Any]:
        window, pos = divmod(at, self.context)
        lo, hi = max(1, pos - T.BEFORE), min(self.context, pos + T.AFTER + 1)
        return {
            "tokens": [self.strings[i] for i in self.rows[window, lo:hi].tolist()],
            "acts": near[lo - (pos - T.BEFORE) : lo - (pos - T.BEFORE) + (hi - lo)],
            "focus": pos - lo,
            "act": round(act, 4),
            "at": [window, pos],  # where in the pass's windows
        }

    def quantiles(self, f: int) -> list[dict[str, Any]]:
        """Examples from QUANTILES bands of the sampled activations, highest first, each an equal share."""
        n = sum(1 for at in self.s_at[f] if at >= 0)
        sampled = self.s_act[f]
        order = sorted(range(n), key=sampled.__getitem__, reverse=True)  # stable: ties keep their order
        out = []
        for q in range(QUANTILES):
            group = order[q * n // QUANTILES : (q + 1) * n // QUANTILES]
            if group:
                picks = [group[i * len(group) // PER_QUANTILE] for i in range(min(PER_QUANTILE, len(group)))]
                out.append(
                    {
                        "low": round(sampled[group[-1]], 4),
                        "high": round(sampled[group[0]], 4),
                        "contexts": [self.example(sampled[k], self.s_at[f][k], self.s_near[f][k]) for k in picks],
                    }
                )
        return out

    def card(self, f: int) -> dict[str, Any]:
        live = sum(1 for at in self.top_at[f] if at >= 0)
        count = self.fired[f]
        return {
            "id": f,
            "label": None,
            "frequency": count / self.n_tokens,
            "mean_act": self.total[f] / count if count else 0.0,
            "max_act": round(self.top_act[f][0], 4) if live else 0.0,
            "contexts": [self.example(self.top_act[f][k], self.top_at[f][k], self.top_near[f][k]) for k in range(live)],
            "quantiles": self.quantiles(f),
            "histogram": {"hi": self.hist_hi[f], "counts": self.hist[f]},
        }


def _write_cards(
    handle: ModelHandle,
    reader: Reader,
    tally: T.Tally,
    rows: np.ndarray,
    corpus: Corpus,
    options: PassOptions,
    model: str,
) -> Path:
    writer = _CardWriter(tally, rows, handle.token_strings(range(int(handle.model.cfg.d_vocab))))
    doc = {
        "version": VERSION,
        "dictionary": reader.key,
        "layer": reader.layer,
        "hook": reader.hook,
        "d_sae": reader.n_features,
        "model": handle.name,
        "corpus": corpus.name,
        "context": options.context,
        "n_tokens": tally.n_tokens,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "features": [writer.card(f) for f in range(reader.n_features)],
    }
    home = cards_home(model, reader.digest)
    home.mkdir(parents=True, exist_ok=True)
    path = home / CARDS_FILE
    _write_gzip(path, doc)
    return path


def _write_gzip(path: Path, doc: dict[str, Any]) -> None:
    import gzip

    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as fh:
        fh.write(data)
    tmp.replace(path)
