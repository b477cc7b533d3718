"""ctrl+c during a load, an analysis and a generation: one line and exit status 130, never a traceback,
and never a terminal left waiting for work that nobody will see.

In the CLI ctrl+c is SIGINT, so a KeyboardInterrupt; in the app the terminal is in raw mode and
ctrl+c is a key, which quits at once even while a worker thread is busy (it cannot be stopped,
and Python would otherwise wait for it at exit)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tmux import Tmux
from typer.testing import CliRunner

from lenstop.commands.cli import app
from lenstop.models.engine import Engine
from lenstop.models.errors import ExitCode

LENSTOP = str(Path(sys.executable).parent / "lenstop")
HANGING_APP = Path(__file__).parent / "blocking_app.py"


def _interrupt(*_args: Any, **_kwargs: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("command", "method"),
    [
        (["info", "demo"], "_load"),
        (["trace", "demo", "-p", "def f(x):"], "analyse"),
        (["generate", "demo", "-p", "def f(x):", "-n", "3"], "generate"),
    ],
)
def test_ctrl_c_in_a_command_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch, command, method) -> None:
    monkeypatch.setattr(Engine, method, _interrupt if method != "_load" else classmethod(_interrupt))
    result = CliRunner().invoke(app, [*command, "--device", "cpu"])
    assert result.exit_code == ExitCode.INTERRUPTED == 130, result.output
    assert result.stderr.strip() == "lenstop: error: interrupted"
    assert "Traceback" not in result.output


def test_sigint_while_the_cli_loads_or_waits(tmp_path: Path) -> None:
    """A real SIGINT once the load has begun. The prompt comes from a stdin that never ends, so the
    signal finds the process either loading or reading its prompt, never done."""
    leader, follower = pty.openpty()  # a terminal on stderr, so the loading steps are shown
    process = subprocess.Popen(
        [LENSTOP, "trace", "demo", "-p", "-", "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 120
    while b"loading" not in seen and time.monotonic() < deadline:
        seen += os.read(leader, 4096)
    assert b"loading" in seen, seen
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == ExitCode.INTERRUPTED
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.stdin is not None
    process.stdin.close()
    text = seen.decode(errors="replace")
    assert "lenstop: error: interrupted" in text and "Traceback" not in text, text


@pytest.mark.parametrize("phase", ["load", "analyse", "generate"])
def test_ctrl_c_in_the_app_quits_at_once_while_work_hangs(tmp_path: Path, phase: str) -> None:
    command = f"{sys.executable} {HANGING_APP} {phase}; echo EXIT=$?; sleep 60"
    tmux = Tmux(f"lenstop-interrupt-{os.getpid()}-{phase}", 100, 30, f"sh -c '{command}'", {"HF_HUB_OFFLINE": "1"})
    try:
        tmux.wait_for(lambda s: "KEYS" in s, timeout=60)
        if phase == "generate":
            tmux.wait_for(lambda s: "analysed" in s)
            tmux.keys("g")
        time.sleep(1.0)  # the hanging work has begun
        assert "EXIT=" not in tmux.screen()
        tmux.keys("C-c")
        # The work would hang for ten minutes: the process ends well before.
        screen = tmux.wait_for(lambda s: "EXIT=" in s, timeout=30)
        assert "EXIT=130" in screen, screen
        assert "lenstop: interrupted; the work in progress was abandoned" in screen
        assert "Traceback" not in screen
    finally:
        tmux.close()


def test_ctrl_c_in_an_idle_app_is_a_plain_quit(tmp_path: Path) -> None:
    command = f"{sys.executable} {HANGING_APP} nothing; echo EXIT=$?; sleep 60"
    tmux = Tmux(f"lenstop-interrupt-{os.getpid()}-idle", 100, 30, f"sh -c '{command}'", {"HF_HUB_OFFLINE": "1"})
    try:
        tmux.wait_for(lambda s: "analysed" in s, timeout=60)
        tmux.keys("C-c")
        screen = tmux.wait_for(lambda s: "EXIT=" in s, timeout=30)
        assert "EXIT=0" in screen and "interrupted" not in screen, screen
    finally:
        tmux.close()
