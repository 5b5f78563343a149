"""Fixtures for the engine tests (helpers in enginekit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from inference.engines.enginekit import BUNDLES, CXR, ROUTER, Models

from appliance.config import load_config
from appliance.inference.bundle import Bundle, load_bundle


@pytest.fixture(scope="module")
def bundles() -> dict[str, Bundle]:
    return {name: load_bundle(path) for name, path in BUNDLES.items()}


@pytest.fixture
def config(tmp_path: Path):
    return load_config(tmp_path / "data", environ={}, inference_backend="auto")


@pytest.fixture
def models(bundles: dict[str, Bundle]):
    loaded = Models(bundles, (CXR, ROUTER))
    yield loaded
    loaded.close()
