"""The habits CI keeps: ruff (lint, import order, formatting) and mypy pass over
the code, so a slip fails here and not in review. Settings are in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*command: str) -> None:
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"


def test_ruff_finds_nothing() -> None:
    _run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")


def test_ruff_format_changes_nothing() -> None:
    _run(sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")


def test_mypy_finds_nothing() -> None:
    """models/, commands/ and tui/ as lenstop.*, with the app's test fake held to EngineProtocol."""
    _run("bash", str(ROOT / ".ci" / "typecheck"))
