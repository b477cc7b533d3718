"""Head roles from attention patterns: against a loop written the obvious way, and
on the demo, whose induction circuit is known (docs: models/demo/artifacts/MODEL_CARD.md)."""

from __future__ import annotations

import numpy as np
import pytest

from lenstop.models.head_scores import HeadScores, head_scores


def loop_scores(pattern: np.ndarray, ids: list[int]) -> list[tuple[float | None, float | None, float | None]]:
    """The definitions, one query at a time."""
    heads, seq, _ = pattern.shape
    out = []
    for h in range(heads):
        prev = float(np.mean([pattern[h, q, q - 1] for q in range(1, seq)])) if seq > 1 else None
        dup, ind = [], []
        for q in range(seq):
            earlier = [k for k in range(q) if ids[k] == ids[q]]
            if earlier:
                dup.append(sum(pattern[h, q, k] for k in earlier))
            after = [k + 1 for k in earlier if k + 1 < q]
            if after:
                ind.append(sum(pattern[h, q, j] for j in after))
        out.append((prev, float(np.mean(dup)) if dup else None, float(np.mean(ind)) if ind else None))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_scores_equal_the_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    seq = int(rng.integers(1, 40))
    ids = rng.integers(0, 6, size=seq).tolist()  # a small vocabulary: many repeats
    logits = rng.normal(size=(3, seq, seq))
    logits[:, np.triu_indices(seq, 1)[0], np.triu_indices(seq, 1)[1]] = -np.inf
    pattern = np.exp(logits - logits.max(-1, keepdims=True))
    pattern = (pattern / pattern.sum(-1, keepdims=True)).astype(np.float32)
    got = [(s.previous, s.duplicate, s.induction) for s in head_scores(pattern, ids)]
    for mine, theirs in zip(got, loop_scores(pattern, ids), strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert (a is None) == (b is None) and (a is None or a == pytest.approx(b, abs=1e-6))


def test_roles_need_a_clear_score() -> None:
    assert HeadScores(0.9, None, None).role() == ("prev-token", 0.9)
    assert HeadScores(0.1, 0.2, 0.6).role() == ("induction", 0.6)
    assert HeadScores(0.1, 0.2, 0.25).role() is None


def test_the_demo_has_a_previous_token_head_feeding_induction_heads() -> None:
    from lenstop.models.engine import Engine
    from lenstop.models.tokens import token_texts

    engine = Engine.load("demo", device="cpu")
    tokenizer = engine.model.tokenizer
    words = [w for w in token_texts(tokenizer, range(tokenizer.vocab_size)) if w[:1] == " " and w[1:].isalpha()]
    words = [
        w for w in words if len(tokenizer.encode(w, add_special_tokens=False)) == 1
    ]  # single-token words: " x y" re-tokenises as is
    span = list(np.random.default_rng(0).choice(words, size=30, replace=False))
    prompt = "".join(span * 2)
    analysis = engine.analyse(prompt)
    assert list(analysis.tokens[1:]) == span * 2  # the random span really is repeated token for token
    layer0, layer1 = engine.attention(prompt, 0).scores, engine.attention(prompt, 1).scores
    assert max(range(len(layer0)), key=lambda h: layer0[h].previous or 0) == 0 and (layer0[0].previous or 0) > 0.7
    induction = sorted((s.induction or 0 for s in layer1), reverse=True)
    assert induction[0] > 0.6 and induction[3] > 0.5  # several heads wide, as the model card says
