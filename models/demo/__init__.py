"""The bundled demo: a small GPT-2 trained on the Python standard library, with a
TopK dictionary on every layer's residual stream and a card for every feature.

`lenstop ... demo --sae demo` loads it from the package's own files; the
pipeline that made it is `python -m lenstop.models.demo.build`.
"""

from __future__ import annotations

from pathlib import Path

DEMO_NAME = "demo"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MODEL_DIR = ARTIFACTS / "model"
SAE_ROOT = ARTIFACTS / "saes"
HOLDOUT_SAMPLE = ARTIFACTS / "holdout_sample.txt"


def is_built(root: Path = ARTIFACTS) -> bool:
    return (root / "model" / "config.json").is_file() and (root / "saes").is_dir()
