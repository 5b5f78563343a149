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


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The committed bundles, loaded once for the whole run (ONNX Runtime on the CPU)."""
    from appliance.screening.models import ModelSet

    config = load_config(tmp_path_factory.mktemp("models-data"), environ={})
    loaded = ModelSet(config, log_progress=lambda line: None).load()
    assert not loaded.errors, loaded.errors
    yield loaded
    loaded.close()


@pytest.fixture
def screener(models, config):
    from appliance.screening.pipeline import Screener

    return Screener(models, config)


@pytest.fixture
def hub(tmp_path: Path):
    """A real hub on loopback (SQLite), in a thread."""
    from sync.synckit import HubThread

    server = HubThread(tmp_path / "hub")
    yield server
    server.close()


@pytest.fixture
def box(tmp_path: Path, hub):
    """An enrolled box: (store, config) with quick retries for tests."""
    from sync.synckit import FAST_RETRIES, enrol

    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
    yield store, config
    store.close()


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster (Debian's postgresql) on a free loopback port."""
    import shutil
    import tempfile

    from sync.synckit import PostgresServer, postgres_binaries

    bindir = postgres_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="hub-pg-"))
    server = PostgresServer(bindir, base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """The hub's database: "" for SQLite, or a fresh database on the test cluster."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").create_database()
