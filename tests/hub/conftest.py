"""The hub's tests run against both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from sync.synckit import PostgresServer, postgres_binaries


@pytest.fixture(scope="session")
def postgres():
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
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").create_database()
