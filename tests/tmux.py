"""A program in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable


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
