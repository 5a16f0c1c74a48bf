"""Shared fixtures: composed configs and small generated image folders (no real data needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REAL_DATA, make_images, save_tiny_model


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    return make_images(tmp_path / "images", {"man": 24, "woman": 24})


def pytest_collection_modifyitems(config, items):
    """Real-data tests run only when GENDER_REAL_DATA=1 (CI sets it) and the data is there."""
    if os.environ.get("GENDER_REAL_DATA") == "1" and REAL_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason="set GENDER_REAL_DATA=1 with ../shared/data/genderface present")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_hydra_state():
    """Tests that run a Hydra app in-process leave its global state behind; clear it after each."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ``.keras`` model whose predictions are known exactly (red means female)."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.keras")


@pytest.fixture(scope="module")
def model(model_file: Path):
    from gender.inference import load_model

    return load_model(model_file)
