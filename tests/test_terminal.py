"""lenstop in a real terminal: tmux starts it on the bundled demo, a prompt is
typed, a layer stepped, a feature ablated, and the screen read with capture-pane."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from tmux import Tmux

LENSTOP = Path(sys.executable).parent / "lenstop"


@pytest.mark.parametrize(("width", "height", "colour"), [(120, 40, "256"), (80, 24, "none")])
def test_type_step_ablate_in_tmux(tmp_path: Path, width: int, height: int, colour: str) -> None:
    env = {"HF_HUB_OFFLINE": "1", "TERM": "tmux-256color" if colour == "256" else "xterm"}
    if colour == "none":
        env["NO_COLOR"] = "1"
    tmux = Tmux(f"lenstop-test-{os.getpid()}-{width}", width, height, f"{LENSTOP} --device cpu", env)
    try:
        first = tmux.wait_for(lambda s: "lenstop" in s, timeout=20)
        assert "loading" in first or "tokens" in first
        tmux.wait_for(lambda s: "analysed" in s)
        assert "KEYS" in tmux.screen()  # the demo opens on a prompt: keys navigate
        footer = tmux.screen().rstrip("\n").splitlines()[-1]
        first = ["←/→ token", "[ ] layer", "a ablate", "s steer", "x head", "g generate"]
        more = ["t circuit", "/ prompt", "z zoom", "u undo", "w save"]  # once cut off at 120 columns
        for keys in first + (more if width >= 120 else []):
            assert keys in footer, (keys, footer)
        assert footer.rstrip().endswith("? more"), footer  # the rest, always on screen
        tmux.keys("/")  # to the prompt
        tmux.wait_for(lambda s: "EDIT" in s)
        tmux.keys("C-u")  # clear the prompt box
        tmux.keys(r"class Point:\n    def __init__(self, x):\n        self.x = x", literal=True)
        tmux.keys("Enter")
        screen = tmux.wait_for(lambda s: "Point" in s and "analysed" in s and "__init__" in s)
        layer_before = "[0]" in screen.splitlines()[0]
        tmux.keys("]")
        screen = tmux.wait_for(lambda s: ("[1]" in s.splitlines()[0]) or ("L1/" in s.splitlines()[0]))
        assert layer_before or "[1]" in screen.splitlines()[0] or "L1/" in screen.splitlines()[0]
        tmux.keys("a")
        if width >= 100:
            screen = tmux.wait_for(lambda s: "ablate L1 #" in s and "KL(clean‖intervened)" in s)
        else:
            screen = tmux.wait_for(lambda s: "✗" in s and "KL" in s)  # compact: the mark and the summary's KL
            tmux.keys("4")
            screen = tmux.wait_for(lambda s: "ablate L1 #" in s)
        assert " error:" not in screen  # the status line reports no failure
        tmux.keys("q")
        deadline = time.monotonic() + 10
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive(), "q should quit and end the session"
    finally:
        tmux.close()
