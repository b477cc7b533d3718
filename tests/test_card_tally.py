"""The corpus pass's running statistics against brute force over the same activations: the top contexts,
the hashed sample, the counts and the histogram; and resuming from a saved state changes nothing."""

from __future__ import annotations

import torch

from lenstop.models.cards import tally as T


def _batches(seed: int, n: int = 5, b: int = 3, t: int = 20, f: int = 7) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        acts = torch.rand(b, t, f, generator=g) * (1 + 3 * i)  # later batches reach higher: the grid must grow
        acts[torch.rand(b, t, f, generator=g) < 0.6] = 0
        acts[0, 3, 2] = acts[1, 5, 2] = 0.5  # ties: the earlier position wins
        out.append(acts)
    return out


def _run(batches: list[torch.Tensor], start: int = 0, tally: T.Tally | None = None) -> T.Tally:
    f = batches[0].shape[-1]
    tally = tally or T.Tally(f, "cpu")
    b = batches[0].shape[0]
    for i, acts in enumerate(batches[start:], start):
        tally.add(acts.clone(), i * b)
    return tally


def _brute(batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, features) of every activation, BOS zeroed, as one (n_positions, features) matrix."""
    acts = torch.cat([a.clone() for a in batches])  # (windows, t, f)
    acts[:, 0] = 0
    return acts, acts.reshape(-1, acts.shape[-1])


def test_top_contexts_counts_and_histogram_equal_brute_force() -> None:
    batches = _batches(0)
    tally = _run(batches)
    acts, flat = _brute(batches)
    n_windows, t, f = acts.shape
    assert tally.n_tokens == n_windows * (t - 1)
    assert torch.equal(tally.fired, (flat > 0).sum(0))
    torch.testing.assert_close(tally.total, flat.double().sum(0))
    for feature in range(f):
        values = flat[:, feature]
        # highest first; among equals the earliest position first
        order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
        order = [i for i in order if values[i] > 0][: T.K]
        assert tally.top_at[feature, : len(order)].tolist() == order
        torch.testing.assert_close(tally.top_act[feature, : len(order)], values[order])
        for slot, where in enumerate(order):  # the activations around each, 0 outside its window
            w, p = divmod(where, t)
            expected = [float(acts[w, q, feature]) if 0 <= q < t else 0.0 for q in range(p - T.BEFORE, p + T.AFTER + 1)]
            torch.testing.assert_close(
                tally.top_near[feature, slot].float(), torch.tensor(expected), atol=2e-3, rtol=1e-3
            )
        # every nonzero activation is in the histogram, in the bin its value falls in on the final grid
        hi = float(tally.hist_hi[feature])
        assert hi >= float(values.max()) and hi < 2 * float(values.max()) + 1e-6
        bins = (values[values > 0] / hi * T.BINS).long().clamp(max=T.BINS - 1)
        assert tally.hist[feature].tolist() == torch.bincount(bins, minlength=T.BINS).tolist()


def test_the_sample_is_the_highest_hash_keys_whatever_the_batches() -> None:
    batches = _batches(1)
    tally = _run(batches)
    _, flat = _brute(batches)
    for feature in range(flat.shape[1]):
        where = (flat[:, feature] > 0).nonzero(as_tuple=True)[0]
        keys = T._hash(where, torch.full_like(where, feature))
        best = where[torch.argsort(-keys, stable=True)][: T.R]
        assert tally.sample_at[feature, : len(best)].tolist() == best.tolist()
        torch.testing.assert_close(tally.sample_act[feature, : len(best)], flat[best, feature])
    # cut into other batches, the same sample and top contexts
    regrouped = [torch.cat(batches[:2]), torch.cat(batches[2:4]), batches[4]]
    other = T.Tally(flat.shape[1], "cpu")
    first = 0
    for acts in regrouped:
        other.add(acts.clone(), first)
        first += acts.shape[0]
    assert torch.equal(other.sample_at, tally.sample_at) and torch.equal(other.top_at, tally.top_at)
    assert torch.equal(other.hist, tally.hist)


def test_resuming_from_a_saved_state_gives_the_same_tally() -> None:
    batches = _batches(2)
    whole = _run(batches)
    part = _run(batches[:2])
    saved = part.state("L3/")
    resumed = T.Tally(batches[0].shape[-1], "cpu")
    resumed.load(saved, "L3/")
    _run(batches, start=2, tally=resumed)
    for name in T.STATE:
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.n_tokens == whole.n_tokens


def test_a_peak_just_above_a_power_of_two_is_inside_the_grid_in_any_batching() -> None:
    """log2 of 1 + 1e-7 rounds to 0 in float32: the grid must still reach past it, one batch or two."""
    acts = torch.zeros(2, 3, 1)
    acts[0, 1, 0] = acts[1, 1, 0] = 1.0000001
    whole = T.Tally(1, "cpu")
    whole.add(acts.clone(), 0)
    split = T.Tally(1, "cpu")
    split.add(acts[:1].clone(), 0)
    split.add(acts[1:].clone(), 1)
    assert float(whole.hist_hi[0]) >= 1.0000001
    assert torch.equal(whole.hist, split.hist) and torch.equal(whole.hist_hi, split.hist_hi)
