"""The sizes that keep each part readable in one sitting (issue 18), and the one dependency
rule that keeps circuits off the engine: a slip fails here, not in review.

Exempt: the demo's build pipeline (models/demo/: training scripts run once, read as a
recipe) and the benchmarks' `main`, which print one table each."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("models", "commands", "tui", "benchmarks")
MOST_CLASS_LINES = 400
MOST_FUNCTION_LINES = 60
MOST_LINES_OF = {  # the façade and the two screens, which the next features will grow first
    ("models/engine.py", "Engine"): 300,
    ("tui/screens/inspector.py", "InspectorScreen"): 350,
    ("tui/screens/circuit.py", "CircuitScreen"): 350,
}


def _exempt(path: str, name: str) -> bool:
    return path.startswith("models/demo/") or (path.startswith("benchmarks/") and name == "main")


def _definitions() -> list[tuple[str, ast.AST, str, int]]:
    """(path, node, name, lines) of every class and function in lenstop's parts."""
    found = []
    for part in PARTS:
        for file in sorted((ROOT / part).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(file.read_text(), path)):
                if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    found.append((path, node, node.name, node.end_lineno - node.lineno + 1))
    return found


def test_no_class_or_function_is_too_long_to_read_at_once() -> None:
    too_long = [
        f"{path}:{node.lineno} {name} is {lines} lines (most {most})"
        for path, node, name, lines in _definitions()
        if not _exempt(path, name)
        and lines > (most := MOST_CLASS_LINES if isinstance(node, ast.ClassDef) else MOST_FUNCTION_LINES)
    ]
    assert not too_long, "\n".join(too_long)


def test_the_facade_and_the_screens_stay_small() -> None:
    sizes = {(path, name): lines for path, node, name, lines in _definitions() if isinstance(node, ast.ClassDef)}
    over = [
        f"{name} ({path}) is {sizes[path, name]} lines (most {most})"
        for (path, name), most in MOST_LINES_OF.items()
        if sizes[path, name] > most
    ]
    assert not over, "\n".join(over)


def test_no_circuits_module_imports_the_engine() -> None:
    """Circuits take the model handle (models/runtime/handle.py); the engine is a façade over them."""
    offenders = []
    for file in sorted((ROOT / "models" / "circuits").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "lenstop.models.engine":
                offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name == "lenstop.models.engine" for a in node.names):
                offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
