"""In a real terminal, a label file full of escape sequences writes no clipboard and sets no title.

tmux obeys OSC 52 (it keeps what is written as a paste buffer when set-clipboard is on) and
OSC 0/2 (the pane's title), so a label that reached it raw would leave a buffer or a title
behind: the attack found against `lenstop trace` and the app. The same sequences printed raw
by the shell do leave them (the first test), so the others could fail. capture-pane -e then
shows what the terminal holds: the escapes as visible characters, and only colours besides."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from tmux import Tmux

from lenstop.models.demo import SAE_ROOT

LENSTOP = Path(sys.executable).parent / "lenstop"
CLIPBOARD = "\x1b]52;c;b3duZWQ=\x07"  # "owned"
TITLE = "\x1b]2;owned\x07"
CONFIG = "set -g set-clipboard on\nset -g default-terminal tmux-256color\n"
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """Every feature of the demo's layer-1 dictionary labelled with a clipboard write and a retitle."""
    n = json.loads((SAE_ROOT / "L1" / "cfg.json").read_text())["d_sae"]
    path = tmp_path / "labels.json"
    path.write_text(json.dumps([{"index": i, "description": f"{CLIPBOARD}{TITLE}[/]x"} for i in range(n)]))
    return path


def _terminal(name: str, command: str, width: int = 120, height: int = 40) -> Tmux:
    env = {"HF_HUB_OFFLINE": "1", "TERM": "tmux-256color"}
    return Tmux(name, width, height, command, env, server=f"lenstop-safe-{os.getpid()}-{name}", config=CONFIG)


def _nothing_obeyed(tmux: Tmux) -> str:
    """No paste buffer, the pane's title not ours, and nothing held but text and colours; the screen."""
    assert tmux.tmux_says("list-buffers") == "", "a clipboard write reached the terminal"
    assert "owned" not in tmux.tmux_says("display", "-p", "-t", tmux.name, "#{pane_title}")
    held = tmux.tmux_says("capture-pane", "-p", "-e", "-t", tmux.name)
    assert "\x1b" not in SGR.sub("", held)
    return held


def test_the_shell_printing_the_same_sequences_raw_does_write_the_clipboard_and_title() -> None:
    tmux = _terminal(
        "control", f"printf '{CLIPBOARD}{TITLE}'; sleep 60".replace("\x1b", "\\033").replace("\x07", "\\007")
    )
    try:
        tmux.wait_for(lambda _s: tmux.tmux_says("list-buffers") != "", timeout=10)
        assert "owned" in tmux.tmux_says("display", "-p", "-t", tmux.name, "#{pane_title}")
    finally:
        tmux.close()


def test_trace_prints_hostile_labels_as_text(labels: Path) -> None:
    prompt = r"def add(first, second):\n    return first + second"
    command = f"sh -c '{LENSTOP} trace -p \"{prompt}\" --labels 1={labels} --device cpu --top-k 12; sleep 60'"
    tmux = _terminal("trace", command, width=200)
    try:
        tmux.wait_for(lambda s: "logit lens" in s, timeout=120)
        assert "␛]52;c;b3duZWQ=␇␛]2;owned␇[/]x" in _nothing_obeyed(tmux)
    finally:
        tmux.close()


def test_the_app_shows_hostile_labels_in_its_panes_and_cards_as_text(labels: Path) -> None:
    tmux = _terminal("app", f"{LENSTOP} --labels 1={labels} --device cpu")
    try:
        tmux.wait_for(lambda s: "analysed" in s, timeout=120)
        if "[1]" not in tmux.screen().splitlines()[0]:
            tmux.keys("]")  # to layer 1, whose features carry the labels
        tmux.wait_for(lambda s: "␛]52;c;" in s, timeout=30)
        _nothing_obeyed(tmux)
        tmux.keys("Enter")  # the selected feature's card
        tmux.wait_for(lambda s: "top contexts" in s or "fires on" in s, timeout=30)
        assert "␛]52;c;b3duZWQ=␇" in _nothing_obeyed(tmux)
        tmux.keys("Escape")  # alone: ESC then t in one burst reads as alt+t
        tmux.wait_for(lambda s: "top contexts" not in s, timeout=30)
        tmux.keys("t")  # the circuit view's contributors carry labels too
        tmux.wait_for(lambda s: "contributors" in s and "nodes" in s, timeout=60)
        _nothing_obeyed(tmux)
    finally:
        tmux.close()
