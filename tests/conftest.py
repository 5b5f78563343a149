"""Shared fixtures: a real data directory on disk (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store.db import Store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path):
    # No environment leaks into tests: settings come from code defaults and overrides only.
    return load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)


@pytest.fixture
def store(config):
    store = Store.open(config.data_dir)
    yield store
    store.close()


@pytest.fixture
def importer(store, config) -> Importer:
    return Importer(store, config)
