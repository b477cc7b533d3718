"""Shared fixtures: one tiny model directory and a few dictionaries per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LENSTOP_CACHE", tempfile.mkdtemp(prefix="lenstop-test-cache-"))  # not the user's cache

from helpers import build_model, build_sae  # noqa: E402 - after the environment above, which it reads

D_MODEL = 32
N_LAYERS = 2


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-gpt2"), n_layers=N_LAYERS, d_model=D_MODEL)


@pytest.fixture(scope="session")
def resid_saes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one raw-numerics standard SAE per layer on resid_pre."""
    root = tmp_path_factory.mktemp("resid-saes")
    for layer in range(N_LAYERS):
        build_sae(root / f"L{layer}", hook=f"blocks.{layer}.hook_resid_pre", d_in=D_MODEL, seed=layer)
    return root


@pytest.fixture(scope="session")
def engine(tiny_model: Path, resid_saes: Path):
    from lenstop.models.engine import Engine

    return Engine.load(str(tiny_model), [str(resid_saes)], device="cpu")


@pytest.fixture(scope="session")
def bare_sae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's layer-1 SAE with its card and label files removed: what shows is what lenstop makes of it."""
    import shutil

    from lenstop.models import demo
    from lenstop.models.feature_cards import CARDS_FILE, LABELS_FILE

    folder = tmp_path_factory.mktemp("bare") / "L1"
    shutil.copytree(demo.SAE_ROOT / "L1", folder)
    for name in (CARDS_FILE, LABELS_FILE):
        (folder / name).unlink()
    assert not list(folder.glob("*card*")) and not list(folder.glob("*label*"))
    return folder
