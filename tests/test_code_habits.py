"""The habits CI keeps: ruff (lint, import order, formatting) and mypy pass over
the code, so a slip fails here and not in review. Settings are in pyproject.toml."""

from __future__ import annotations

import ast
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


def test_tui_sizes() -> None:
    """tui/ in parts with one job each: the two screens at most 350 lines, no class over 400, no function over 60."""
    limits = {"InspectorScreen": 350, "CircuitScreen": 350}
    found = []
    for path in sorted((ROOT / "tui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = limits.get(node.name, 400) if isinstance(node, ast.ClassDef) else 60
                if lines > limit:
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {lines} lines (at most {limit})"
                    )
    assert found == [], "\n".join(found)
