"""The logit lens, made a block of positions at a time from the top-k of raw logits, against
TransformerLens computing it whole: `run_with_cache`, `ln_final`, `unembed`, `log_softmax`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenstop.models.engine import Engine
from lenstop.models.errors import UsageError
from lenstop.models.reading.distribution import ROWS

# Longer than one block of positions, so that the lens is made in more than one.
PROMPT = (
    "def add(first, second):\n    return first + second\n\ndef sub(first, second):\n    return first - second\n" * 2
)
N = 8


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load("demo", device="cpu")


@pytest.mark.parametrize("block_rows", [ROWS, None])  # several blocks of 32 positions, and the default's one
def test_the_chunked_lens_equals_transformerlens_at_every_layer_and_position(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, block_rows: int | None
) -> None:
    from lenstop.models.reading import lens

    tokens = engine.tokenize(PROMPT)
    assert tokens.shape[-1] > ROWS
    if block_rows is not None:
        monkeypatch.setattr(lens, "BLOCK_BYTES", block_rows * 4 * int(engine.model.cfg.d_vocab))
    engine.forget()
    analysis = engine.analyse(PROMPT, n_predictions=N, lens=True)
    assert len(analysis.lens) == engine.n_layers and analysis.lens_positions is None
    model = engine.model
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        for layer, top in enumerate(analysis.lens):
            resid = cache[f"blocks.{layer}.hook_resid_post"]  # (1, seq, d_model)
            logprobs = model.unembed(model.ln_final(resid))[0].float().log_softmax(-1)  # (seq, vocab)
            expected = logprobs.topk(N, dim=-1)
            np.testing.assert_array_equal(top.ids, expected.indices.numpy())
            np.testing.assert_allclose(top.probs, expected.values.exp().numpy(), rtol=1e-5, atol=1e-7)
            assert top.strings[-1] == tuple(engine.token_strings(expected.indices[-1].tolist()))


def test_a_lens_at_some_positions_is_those_rows_of_the_whole_and_says_which(engine: Engine) -> None:
    whole = engine.analyse(PROMPT, n_predictions=N, lens=True)
    seq = len(whole.tokens)
    some = engine.analyse(PROMPT, n_predictions=N, lens=[-1, 3, seq - 1, ROWS + 1])
    assert some.lens_positions == (3, ROWS + 1, seq - 1)
    for part, full in zip(some.lens, whole.lens, strict=True):
        np.testing.assert_array_equal(part.ids, full.ids[list(some.lens_positions)])
        np.testing.assert_allclose(part.probs, full.probs[list(some.lens_positions)], atol=1e-6)
    doc = json.loads(json.dumps(some.to_json()))
    assert doc["logit_lens_positions"] == [3, ROWS + 1, seq - 1]
    assert [len(entry["top"]) for entry in doc["logit_lens"]] == [3] * engine.n_layers
    assert "logit_lens_positions" not in whole.to_json()
    with pytest.raises(UsageError, match="outside the prompt"):
        engine.analyse(PROMPT, lens=[seq])


def test_by_default_an_analysis_reads_no_lens(engine: Engine) -> None:
    analysis = engine.analyse(PROMPT)
    assert analysis.lens == () and analysis.lens_positions is None
    assert analysis.to_json()["logit_lens"] == []
    assert engine.analyse(PROMPT, lens=[]).lens == ()
