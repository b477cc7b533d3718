"""A program in a real terminal: tmux runs it, send-keys types, capture-pane reads the screen."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class Tmux:
    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        command: str,
        env: dict[str, str],
        server: str | None = None,
        config: str = "",
    ) -> None:
        """`server` runs the session on a tmux server of its own (`tmux -L server`), whose configuration is
        `config` alone (the user's is not read)."""
        assert shutil.which("tmux"), "tmux is needed for this test (apt-get install tmux)"
        self.name = name
        self.tmux = ["tmux"]
        if server:
            conf = Path(tempfile.gettempdir()) / f"{server}.tmux.conf"
            conf.write_text(config)
            self.tmux = ["tmux", "-L", server, "-f", str(conf)]
        # COLUMNS and LINES (set by pytest and some shells) would override the window's real size.
        exports = "-u COLUMNS -u LINES " + " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run([*self.tmux, "kill-session", "-t", name], capture_output=True)
        subprocess.run(
            [
                *self.tmux,
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                str(width),
                "-y",
                str(height),
                f"env {exports} {command}",
            ],
            check=True,
        )
        # A running server may size new windows by its own rules: pin this one to the size asked for.
        subprocess.run([*self.tmux, "set-option", "-t", name, "window-size", "manual"], capture_output=True)
        subprocess.run([*self.tmux, "resize-window", "-t", name, "-x", str(width), "-y", str(height)], check=True)

    def tmux_says(self, *args: str) -> str:
        """What a tmux command prints about this session's server (its buffers, a pane's title, ...)."""
        return subprocess.run([*self.tmux, *args], capture_output=True, text=True).stdout

    def screen(self) -> str:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)

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
        return subprocess.run([*self.tmux, "has-session", "-t", self.name], capture_output=True).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-session", "-t", self.name], capture_output=True)
        if len(self.tmux) > 1:  # a server of its own: nothing else runs on it
            subprocess.run([*self.tmux, "kill-server"], capture_output=True)
