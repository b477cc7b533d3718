"""What a wheel of lenstop holds and needs: every subpackage found without a list kept by
hand, every third-party module the code imports declared, and an install that works from
the wheel alone (not the checkout) in a fresh virtual environment."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"models": "lenstop.models", "commands": "lenstop.commands", "tui": "lenstop.tui"}


def _sources() -> list[Path]:
    return [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if "artifacts" not in p.parts]


def _modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_module_imported_is_a_declared_dependency() -> None:
    declared = {
        _normalise(re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0])
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    imported = set().union(*(_modules(p) for p in _sources())) - set(sys.stdlib_module_names) - {"lenstop"}
    assert imported >= {"torch", "numpy", "safetensors", "huggingface_hub", "transformers"}  # the scan sees them
    missing = {m: providers.get(m) for m in imported if not {_normalise(d) for d in providers.get(m, [m])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("lenstop-*.whl")
    return built


def test_the_wheel_holds_every_package_the_demo_and_the_licence(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            inside = init.relative_to(ROOT / folder).as_posix()
            assert f"{package.replace('.', '/')}/{inside}" in names, f"{init} is not in the wheel"
    assert any(n.endswith("lenstop/tui/inspector.tcss") or n.endswith(".tcss") for n in names)
    assert "lenstop/models/demo/artifacts/saes/L1/sae_weights.safetensors" in names
    assert "lenstop/models/demo/artifacts/saes/L1/feature_labels.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "models/", "tui/", "commands/")) for n in names)


def test_a_fresh_environment_runs_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    """The wheel installed without the checkout: every module imports, the CLI answers, the app paints.

    The dependencies come from this environment's site-packages through a path file, so the test
    installs no torch; the editable install's own finder there is not processed, so only the
    wheel can provide lenstop."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "borrowed_dependencies.pth").write_text("\n".join(ours) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    imported = run(
        str(python),
        "-c",
        "import importlib, pkgutil, lenstop.models, lenstop.commands, lenstop.tui\n"
        "names = []\n"
        "for top in (lenstop.models, lenstop.commands, lenstop.tui):\n"
        "    for info in pkgutil.walk_packages(top.__path__, top.__name__ + '.'):\n"
        "        importlib.import_module(info.name); names.append(info.name)\n"
        "print(lenstop.models.__file__); print(len(names))",
    ).split()
    assert imported[0].startswith(str(site)), f"lenstop came from {imported[0]}, not the wheel"
    modules = sum(1 for p in _sources() if p.name != "__init__.py")
    assert int(imported[1]) >= modules
    assert "inspect" in run(str(env_dir / "bin" / "lenstop"), "--help")
    info = json.loads(run(str(env_dir / "bin" / "lenstop"), "info", "demo", "--json", "--device", "cpu"))
    assert info["n_layers"] == 3 and len(info["dictionaries"]) == 3
    painted = run(
        str(python),
        "-c",
        "import asyncio\n"
        "from lenstop.models.engine_spec import EngineSpec\n"
        "from lenstop.tui.app import LenstopApp\n"
        "app = LenstopApp(EngineSpec('demo', device='cpu'))\n"
        "async def main():\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        while app.inspector.analysis is None:\n"
        "            await pilot.pause(0.05)\n"
        "        await pilot.pause()\n"
        "        print(len(app.inspector.analysis.tokens))\n"
        "asyncio.run(main())",
    )
    assert int(painted.strip().splitlines()[-1]) > 10
