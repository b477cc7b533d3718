"""Neuronpedia's graph upload, offline: the checks its `api/graph/save-to-db` route makes before it looks at
its database (the model the scan names must exist there, which no offline check can know).

`neuronpedia/graph-schema.json` is Neuronpedia's own (hijohnnylin/neuronpedia, Apache-2.0, commit
ebb8426fc550ad5d1f76d52c271a624af3c08a57, apps/webapp/app/api/graph/graph-schema.json), validated with Ajv 8
called as the route calls it (`neuronpedia_check.cjs`), from viewer.py's npm folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from viewer import ViewerError, _ensure_npm

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "neuronpedia" / "graph-schema.json"
CHECK = HERE / "neuronpedia_check.cjs"


def check_upload(*files: Path) -> list[dict[str, Any]]:
    """Per file: `valid` (the schema), `errors`, `charset_ok` (scan and slug), `size_ok`."""
    if not shutil.which("node"):
        raise ViewerError("node is missing: install Node.js 18+ (Debian: apt-get install -y nodejs npm)")
    modules = _ensure_npm()
    env = {**os.environ, "NODE_PATH": str(modules)}
    done = subprocess.run(
        ["node", str(CHECK), str(SCHEMA), *map(str, files)], capture_output=True, text=True, env=env, timeout=120
    )
    if done.returncode != 0:
        raise ViewerError(f"neuronpedia_check.cjs failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)
