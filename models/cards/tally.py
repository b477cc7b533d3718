"""One dictionary's running statistics over a corpus pass, kept on its device and merged batch by batch.

Per feature: the top `K` activations with where they were and the activations around them (the contexts a
card shows), a sample of `R` of its other activations chosen by a hash of where they were (the examples
at activation quantiles, as SAEDashboard and Neuronpedia show), how often it fired, the sum of its
activations, and a histogram of its nonzero activations on a grid that doubles its range as larger ones
come (so no first pass for the maximum is needed). Everything is exact and deterministic: the same batches
in the same order give the same tensors, which is what lets an interrupted pass resume (`state`, `load`), to
the same cards in any batching on the CPU (on a GPU, the float64 sums' atomics may differ in the last bits).

Cost per batch: a handful of elementwise passes over the (tokens, features) activations, then merges over
the few entries that beat the current K-th value; the encode that made the activations costs far more.
"""

from __future__ import annotations

import torch

K = 16  # top contexts kept
R = 32  # sampled activations kept, for the quantile examples
BINS = 32  # histogram bins, over [0, hi]
HIST_BASE = 2.0**-20  # hi is this times a power of two: a grid that only ever doubles, so bins merge exactly
BEFORE, AFTER = 12, 4  # tokens of context either side of an example
WIDTH = BEFORE + 1 + AFTER
_HASH_A, _HASH_B = 0x9E3779B1, 0x85EBCA77  # Knuth's and murmur3's odd constants


STATE = (  # the tensors a saved pass holds
    *("top_act", "top_at", "top_near", "sample_key", "sample_act", "sample_at", "sample_near"),
    *("fired", "total", "hist", "hist_hi"),
)


class Tally:
    """What one dictionary's features did over the windows seen so far."""

    def __init__(self, n_features: int, device: torch.device | str) -> None:
        f = n_features
        self.n_features = f
        self.n_tokens = 0  # positions counted (BOS left out)
        self.top_act = torch.zeros(f, K, device=device)  # descending; 0 is empty
        self.top_at = torch.full((f, K), -1, dtype=torch.long, device=device)  # global position
        self.top_near = torch.zeros(f, K, WIDTH, dtype=torch.float16, device=device)
        self.sample_key = torch.full((f, R), -1.0, device=device)  # descending; -1 is empty
        self.sample_act = torch.zeros(f, R, device=device)
        self.sample_at = torch.full((f, R), -1, dtype=torch.long, device=device)
        self.sample_near = torch.zeros(f, R, WIDTH, dtype=torch.float16, device=device)
        self.fired = torch.zeros(f, dtype=torch.long, device=device)
        self.total = torch.zeros(f, dtype=torch.float64, device=device)
        self.hist = torch.zeros(f, BINS, dtype=torch.long, device=device)
        self.hist_hi = torch.zeros(f, device=device)  # the grid's top: 0 until the feature first fires

    # ---------------------------------------------------------------- one batch
    @torch.no_grad()
    def add(self, acts: torch.Tensor, first_window: int) -> None:
        """acts: (batch, context, features) of windows `first_window`..; position 0 (BOS) is left out (zeroed in
        `acts` itself, which the caller hands over)."""
        b, t, f = acts.shape
        acts = acts.float()
        acts[:, 0] = 0
        flat = acts.reshape(b * t, f)
        self.n_tokens += b * (t - 1)
        rows, feats = flat.nonzero(as_tuple=True)  # activations are >= 0: nonzero is fired
        self.fired += torch.bincount(feats, minlength=f)
        values = flat.view(-1)[rows * f + feats]
        self.total.index_add_(0, feats, values.double())  # float32 values summed in float64: exact, in any order
        where = first_window * t + rows  # global position: window * context + position
        self._histogram(feats, values)
        beat = (values > self.top_act[feats, -1]).nonzero(as_tuple=True)[0]
        if len(beat):
            r, c = rows[beat], feats[beat]
            _merge_top(self, values[beat], where[beat], _near(acts, r, c), c)
        keys = _hash(where, feats)
        beat = (keys > self.sample_key[feats, -1]).nonzero(as_tuple=True)[0]
        if len(beat):
            r, c = rows[beat], feats[beat]
            _merge_sample(self, keys[beat], values[beat], where[beat], _near(acts, r, c), c)

    def _histogram(self, feats: torch.Tensor, values: torch.Tensor) -> None:
        if feats.numel() == 0:
            return
        peak = torch.zeros_like(self.hist_hi).scatter_reduce(0, feats, values, "amax")
        grow = peak > self.hist_hi
        if grow.any():
            hi = self.hist_hi[grow]
            new_hi = torch.where(hi > 0, hi, torch.full_like(hi, HIST_BASE))
            new_hi = new_hi * torch.exp2(torch.ceil(torch.log2(peak[grow] / new_hi)).clamp_min(0))
            new_hi = torch.where(new_hi < peak[grow], new_hi * 2, new_hi)  # log2 rounded a peak just above 2**k
            fold = torch.where(hi > 0, torch.log2(new_hi / hi).round().long(), torch.zeros_like(hi, dtype=torch.long))
            counts = self.hist[grow]
            for m in fold.unique().tolist():  # merge 2**m bins into one, as the range grows 2**m-fold
                if m == 0:
                    continue
                rows = (fold == m).nonzero(as_tuple=True)[0]
                kept = min(BINS, 2**m)
                merged = counts[rows].view(len(rows), BINS // kept, kept).sum(-1)
                counts[rows] = torch.nn.functional.pad(merged, (0, BINS - merged.shape[1]))
            self.hist[grow] = counts
            self.hist_hi[grow] = new_hi
        bins = (values / self.hist_hi[feats] * BINS).long().clamp(0, BINS - 1)
        self.hist.view(-1).scatter_add_(0, feats * BINS + bins, torch.ones_like(bins))

    # ---------------------------------------------------------------- saving and resuming
    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Every tensor, on the CPU, named `{prefix}{name}` (what `load` reads back)."""
        names = STATE
        out = {f"{prefix}{n}": getattr(self, n).detach().cpu().contiguous() for n in names}
        out[f"{prefix}n_tokens"] = torch.tensor([self.n_tokens], dtype=torch.long)
        return out

    def load(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for name in STATE:
            key = f"{prefix}{name}"
            if key in state:
                current = getattr(self, name)
                if state[key].shape != current.shape:
                    raise ValueError(f"{key}: {tuple(state[key].shape)} saved, {tuple(current.shape)} expected")
                setattr(self, name, state[key].to(current.device))
        self.n_tokens = int(state[f"{prefix}n_tokens"][0])


def _hash(where: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """A key in [0, 1) for each (position, feature), fixed by them alone: the sample does not depend on how
    the corpus was cut into batches or runs."""
    x = (where * _HASH_A + feats * _HASH_B) & 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x.float() / 2**32


def _near(acts: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Each entry's feature activation at the WIDTH positions around it, 0 outside its window: (n, WIDTH)."""
    t = acts.shape[1]
    window, pos = rows // t, rows % t
    around = pos[:, None] + torch.arange(-BEFORE, AFTER + 1, device=acts.device)
    inside = (around >= 0) & (around < t)
    values = acts[window[:, None], around.clamp(0, t - 1), feats[:, None]]
    return torch.where(inside, values, torch.zeros_like(values)).clamp(max=65504.0).half()  # float16's largest


def _grouped_best(
    feats: torch.Tensor, score: torch.Tensor, tie: torch.Tensor, keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indexes of the `keep` best entries of each feature: highest `score`, then lowest `tie`; with their rank."""
    order = torch.argsort(tie, stable=True)
    order = order[torch.argsort(-score[order], stable=True)]
    order = order[torch.argsort(feats[order], stable=True)]
    f = feats[order]
    start = torch.searchsorted(f, f, right=False)
    rank = torch.arange(len(f), device=f.device) - start
    chosen = rank < keep
    return order[chosen], f[chosen], rank[chosen]


def _merge_top(
    tally: Tally, values: torch.Tensor, where: torch.Tensor, near: torch.Tensor, feats: torch.Tensor
) -> None:
    """The top K of each feature among the kept ones and the new entries: highest activation, then earliest."""
    touched = feats.unique()
    old_at = tally.top_at[touched].reshape(-1)
    live = old_at >= 0
    all_f = torch.cat([touched.repeat_interleave(K)[live], feats])
    all_act = torch.cat([tally.top_act[touched].reshape(-1)[live], values])
    all_at = torch.cat([old_at[live], where])
    all_near = torch.cat([tally.top_near[touched].reshape(-1, WIDTH)[live], near])
    index, f, rank = _grouped_best(all_f, all_act, all_at, K)
    tally.top_act[touched], tally.top_at[touched], tally.top_near[touched] = 0.0, -1, 0.0
    tally.top_act[f, rank], tally.top_at[f, rank], tally.top_near[f, rank] = (
        all_act[index],
        all_at[index],
        all_near[index],
    )


def _merge_sample(
    tally: Tally, keys: torch.Tensor, values: torch.Tensor, where: torch.Tensor, near: torch.Tensor, feats: torch.Tensor
) -> None:
    """The R highest keys of each feature among the kept sample and the new entries."""
    touched = feats.unique()
    old_key = tally.sample_key[touched].reshape(-1)
    live = old_key >= 0
    all_f = torch.cat([touched.repeat_interleave(R)[live], feats])
    all_key = torch.cat([old_key[live], keys])
    all_act = torch.cat([tally.sample_act[touched].reshape(-1)[live], values])
    all_at = torch.cat([tally.sample_at[touched].reshape(-1)[live], where])
    all_near = torch.cat([tally.sample_near[touched].reshape(-1, WIDTH)[live], near])
    index, f, rank = _grouped_best(all_f, all_key, all_at, R)
    for name, fill in (("sample_key", -1.0), ("sample_act", 0.0), ("sample_at", -1), ("sample_near", 0.0)):
        getattr(tally, name)[touched] = fill
    tally.sample_key[f, rank], tally.sample_act[f, rank] = all_key[index], all_act[index]
    tally.sample_at[f, rank], tally.sample_near[f, rank] = all_at[index], all_near[index]
