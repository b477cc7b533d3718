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
from lenstop.models.runtime.handle import ModelHandle

LENSTOP = str(Path(sys.executable).parent / "lenstop")
HANGING_APP = Path(__file__).parent / "blocking_app.py"


def _interrupt(*_args: Any, **_kwargs: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("command", "method"),
    [
        (["info", "demo"], "_processed"),
        (["trace", "demo", "-p", "def f(x):"], "analyse"),
        (["generate", "demo", "-p", "def f(x):", "-n", "3"], "generate"),
    ],
)
def test_ctrl_c_in_a_command_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch, command, method) -> None:
    if method == "_processed":  # the load, inside ModelHandle.load
        monkeypatch.setattr(ModelHandle, method, classmethod(_interrupt))
    else:
        monkeypatch.setattr(Engine, method, _interrupt)
    result = CliRunner().invoke(app, [*command, "--device", "cpu"])
    assert result.exit_code == ExitCode.INTERRUPTED == 130, result.output
    assert result.stderr.strip() == "lenstop: error: interrupted"
    assert "Traceback" not in result.output


def test_sigint_while_the_cli_waits_for_its_prompt(tmp_path: Path) -> None:
    """A real SIGINT, delivered while the command blocks reading a prompt from a stdin that never ends."""
    process = subprocess.Popen(
        [LENSTOP, "trace", "demo", "-p", "-", "--device", "cpu"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wchan = Path(f"/proc/{process.pid}/wchan")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "pipe_read" not in (wchan.read_text() if wchan.exists() else ""):
        time.sleep(0.1)  # the kernel names what a process sleeps in: here, reading its stdin pipe
    assert "pipe_read" in wchan.read_text(), "the command never came to read its prompt"
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED
    assert err.decode().strip() == "lenstop: error: interrupted"


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


@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_from_outside_mid_load_restores_the_terminal_and_ends_at_once(number: int, code: int) -> None:
    """`kill -INT` or `kill -TERM` while a load hangs: the app leaves the alternate screen first, then ends."""
    import threading

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(HANGING_APP), "load"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "HF_HUB_OFFLINE": "1"},
    )
    os.close(follower)
    screen = bytearray()

    def drain() -> None:  # a terminal nobody reads would fill and block the app's writes
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while b"loading" not in screen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"loading" in screen, bytes(screen[-500:])
    assert b"\x1b[?1049h" in screen  # the app is on the alternate screen
    process.send_signal(number)
    assert process.wait(timeout=30) == code
    reader.join(timeout=5)
    os.close(leader)
    assert b"\x1b[?1049l" in screen, "the terminal was left on the alternate screen"
    if number == signal.SIGINT:
        assert b"lenstop: interrupted; the work in progress was abandoned" in screen
    assert b"Traceback" not in screen
