"""Fixtures for sync tests: a real hub on loopback and an enrolled box data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync.synckit import FAST_RETRIES, HubThread, enrol

from appliance.config import load_config
from appliance.store.db import Store


@pytest.fixture
def hub(tmp_path: Path):
    server = HubThread(tmp_path / "hub")
    yield server
    server.close()


@pytest.fixture
def box(tmp_path: Path, hub):
    """An enrolled box: (store, config) with quick retries for tests."""
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
    yield store, config
    store.close()
