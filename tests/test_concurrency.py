"""Threads sharing one engine, as the app's workers and a notebook's do: analyses,
generations and logit lenses of different prompts and interventions, run at once,
each equal to what it gives alone."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from lenstop.models.engine import Engine
from lenstop.models.interventions import FeatureAblation, FeatureSteer, HeadKnockout

from helpers import assert_same_analysis

A = "def add(first, second):\n    return first + second\n"
B = "class Point:\n    def __init__(self, x, y):\n        self.x = x\n"
C = "for item in items:\n    if item is None:\n        continue\n"


def test_analyses_generations_and_lenses_at_once_never_mix() -> None:
    engine = Engine.load("demo", device="cpu")
    ablate, steer = (FeatureAblation(1, 446),), (FeatureSteer(1, 446, 6.0), HeadKnockout(0, 0))
    jobs: dict[str, Callable[[], object]] = {
        "analyse A clean": lambda: engine.analyse(A, top_k=8),
        "analyse A ablated": lambda: engine.analyse(A, ablate, top_k=8),
        "analyse B steered": lambda: engine.analyse(B, steer, top_k=8),
        "generate C steered": lambda: engine.generate(C, steer, max_new_tokens=6),
        "lens A ablated": lambda: engine.logit_lens(A, 5, ablate),
        "lens B clean": lambda: engine.logit_lens(B, -1),
    }
    alone = {name: job() for name, job in jobs.items()}
    errors: list[str] = []

    def worker(name: str, job: Callable[[], object]) -> None:
        for _ in range(12):
            got = job()
            try:
                if name.startswith("analyse"):
                    assert_same_analysis(got, alone[name])  # type: ignore[arg-type]
                else:
                    assert got == alone[name]
            except AssertionError as err:
                errors.append(f"{name}: {str(err).splitlines()[0]}")

    threads = [threading.Thread(target=worker, args=item) for item in jobs.items()]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as Python allows: races show, if there are any
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads), "a thread hung: the engine's lock was not released"
    assert not errors, errors[:5]
