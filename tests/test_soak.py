"""A long session on the demo: 1,000 analyses with interventions toggled, some of which
fail mid-pass (a NaN strength, a ctrl+c inside a hook). Afterwards no hook is left on
the model, memory has not grown, and the engine answers as a fresh one does."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from lenstop.models.engine import Engine
from lenstop.models.errors import NumericError
from lenstop.models.interventions import FeatureAblation, FeatureClamp, FeatureSteer, HeadKnockout, Intervention

from helpers import assert_same_analysis

PROMPTS = (
    "def add(first, second):\n    return first + second\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
    "for item in items:\n    if item is None:\n        continue\n",
)
CHOICES: tuple[Intervention, ...] = (
    FeatureAblation(0, 547),
    FeatureAblation(1, 446),
    FeatureAblation(2, 12, position=3),
    FeatureSteer(1, 446, 6.0),
    FeatureSteer(2, 100, -4.0, position=-1),
    FeatureClamp(1, 680, 3.0),
    HeadKnockout(0, 0),
    HeadKnockout(1, 5, position=4),
)
NAN = FeatureSteer(0, 547, 1e39)  # overflows the residual stream: the output is NaN or infinite


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _hook_counts(engine: Engine) -> list[tuple[str, int, int, int]]:
    """Every module's torch hooks: a lenstop hook left behind would show up here."""
    return [
        (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in engine.model.named_modules()
    ]


def test_a_thousand_analyses_leave_no_hook_no_growth_and_the_same_answers() -> None:
    engine = Engine.load("demo", device="cpu")
    hooks_at_load = _hook_counts(engine)
    rng = random.Random(0)
    interrupt_at = {137, 512, 901}
    encode = engine.dictionaries[1].sae.encode
    failures = {"nan": 0, "interrupt": 0}
    rss_warm = 0.0
    for step in range(1000):
        if step == 200:
            rss_warm = _rss_mb()
        chosen = tuple(iv for iv in CHOICES if rng.random() < 0.25)
        if step % 50 == 7:
            chosen = (*chosen, NAN)
        prompt = PROMPTS[step % len(PROMPTS)]
        if step in interrupt_at:

            def interrupted(*args: object, **kwargs: object) -> None:
                raise KeyboardInterrupt

            engine.dictionaries[1].sae.encode = interrupted  # type: ignore[method-assign]
            engine.forget()  # nothing kept to reuse: the pass must read layer 1, where the interrupt waits
        try:
            engine.analyse(prompt, chosen, top_k=8, n_predictions=5)
        except NumericError:
            failures["nan"] += 1
            assert NAN in chosen
        except KeyboardInterrupt:
            failures["interrupt"] += 1
            assert step in interrupt_at
        else:
            assert NAN not in chosen and step not in interrupt_at
        finally:
            engine.dictionaries[1].sae.encode = encode  # type: ignore[method-assign]
        if step % 100 == 3:
            engine.logit_lens(prompt, -1, chosen if NAN not in chosen else ())
        assert _hook_counts(engine) == hooks_at_load, f"hooks left on the model after step {step}"
    assert failures == {"nan": 20, "interrupt": 3}
    grown = _rss_mb() - rss_warm
    print(f"soak: resident memory {rss_warm:.0f} MB after 200 analyses, {grown:+.1f} MB after 1,000")  # pytest -s
    assert grown < 40, f"resident memory grew {grown:.0f} MB over 800 analyses"

    fresh = Engine.load("demo", device="cpu")
    for prompt in PROMPTS:
        for chosen in ((), (FeatureAblation(1, 446),), (FeatureSteer(1, 446, 6.0), HeadKnockout(0, 0))):
            assert_same_analysis(
                engine.analyse(prompt, chosen, top_k=8, n_predictions=5),
                fresh.analyse(prompt, chosen, top_k=8, n_predictions=5),
            )
    generated = engine.generate(PROMPTS[0], [FeatureSteer(1, 446, 6.0)], max_new_tokens=8)
    assert generated == fresh.generate(PROMPTS[0], [FeatureSteer(1, 446, 6.0)], max_new_tokens=8)


@pytest.mark.parametrize("step", ["analyse", "generate"])
def test_ctrl_c_inside_a_pass_leaves_the_engine_usable(step: str) -> None:
    """The lock is released and the hooks removed, so the next call neither hangs nor sees a stale hook."""
    engine = Engine.load("demo", device="cpu")
    hooks_at_load = _hook_counts(engine)
    clean = engine.analyse(PROMPTS[0], [FeatureSteer(1, 446, 6.0)])
    encode = engine.dictionaries[1].sae.encode

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    engine.dictionaries[1].sae.encode = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        if step == "analyse":
            engine.analyse(PROMPTS[0], [FeatureAblation(1, 446)])
        else:
            engine.generate(PROMPTS[0], [FeatureClamp(1, 446, 2.0)], max_new_tokens=4)
    engine.dictionaries[1].sae.encode = encode  # type: ignore[method-assign]
    assert _hook_counts(engine) == hooks_at_load
    assert_same_analysis(engine.analyse(PROMPTS[0], [FeatureSteer(1, 446, 6.0)]), clean)
