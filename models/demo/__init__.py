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
# Per-layer transcoders and a cross-layer transcoder, in circuit-tracer's disk format (config.yaml).
TRANSCODER_ROOT = ARTIFACTS / "transcoders"
CLT_ROOT = ARTIFACTS / "clt"
HOLDOUT_SAMPLE = ARTIFACTS / "holdout_sample.txt"


def is_built(root: Path = ARTIFACTS) -> bool:
    return (root / "model" / "config.json").is_file() and (root / "saes").is_dir()


def require_built(path: Path, what: str) -> str:
    """`path` as a string, or a one-line error saying how to build the demo when it is missing."""
    if not is_built():
        from lenstop.models.errors import NotFoundError

        raise NotFoundError(
            f"the bundled demo's {what} is missing from {path}; build it with python -m lenstop.models.demo.build"
        )
    return str(path)
