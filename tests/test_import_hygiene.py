"""The CLI's fast path must not import the heavy libraries (3 to 11 s each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers", "numpy")


def _modules_after(code: str) -> dict[str, object]:
    probe = f"""
import json, sys
{code}
print(json.dumps({{m: (m in sys.modules) for m in {HEAVY!r}}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after(
        "from typer.testing import CliRunner\n"
        "from lenstop.commands.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0 and 'trace' in r.output, r.output\n"
        "r = CliRunner().invoke(app, ['trace', '--help'])\n"
        "assert r.exit_code == 0 and '--ablate' in r.output, r.output\n"
    )
    assert not any(loaded.values()), loaded


def test_version_imports_no_heavy_library() -> None:
    loaded = _modules_after(
        "from typer.testing import CliRunner\n"
        "from lenstop.commands.cli import app\n"
        "r = CliRunner().invoke(app, ['--version'])\n"
        "assert r.exit_code == 0 and r.output.startswith('lenstop '), r.output\n"
    )
    assert not any(loaded.values()), loaded


def test_installed_command_answers_version() -> None:
    from importlib.metadata import version

    script = Path(sys.executable).parent / "lenstop"  # the console script installed beside this python
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lenstop {version('lenstop')}"


def test_interventions_and_errors_are_torch_free() -> None:
    loaded = _modules_after("import lenstop.models.interventions, lenstop.models.errors")
    assert not any(loaded.values()), loaded


def test_the_engine_does_not_import_the_ui() -> None:
    probe = """
import json, sys
import lenstop.models.engine, lenstop.models.demo.build, lenstop.models.feature_cards
print(json.dumps({m: m in sys.modules for m in ("textual", "rich", "typer", "lenstop.tui", "lenstop.commands")}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), loaded


def test_the_app_module_is_torch_free() -> None:
    loaded = _modules_after("import lenstop.tui.app")
    assert not loaded["torch"] and not loaded["transformer_lens"] and not loaded["sae_lens"], loaded
