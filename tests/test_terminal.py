"""lenstop in a real terminal: tmux starts it on the bundled demo, a prompt is
typed, a layer stepped, a feature ablated, and the screen read with capture-pane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

LENSTOP = Path(sys.executable).parent / "lenstop"


class Tmux:
    def __init__(self, name: str, width: int, height: int, command: str, env: dict[str, str]) -> None:
        assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
        self.name = name
        # COLUMNS and LINES (set by pytest and some shells) would override the window's real size.
        exports = "-u COLUMNS -u LINES " + " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), f"env {exports} {command}"],
            check=True,
        )
        # A running server may size new windows by its own rules: pin this one to the size asked for.
        subprocess.run(["tmux", "set-option", "-t", name, "window-size", "manual"], capture_output=True)
        subprocess.run(["tmux", "resize-window", "-t", name, "-x", str(width), "-y", str(height)], check=True)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)

    def wait_for(self, test: Callable[[str], bool], timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if test(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out; the screen was:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


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
