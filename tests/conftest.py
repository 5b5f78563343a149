"""Shared fixtures: a real data directory on disk, real DICOM files from pydicom-data."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store.db import Store

TESTS = Path(__file__).parent
FUNDUS_DIR = TESTS / "data" / "fundus"


def testdata(name: str) -> Path:
    """A file from pydicom's test files or the pydicom-data package (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"{name} is not in pydicom/pydicom-data; install pydicom-data")
    return Path(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed (apt-get install dcmtk); the test command installs it"
        )
    return path


def scaled_rg1(folder: Path, factor: float) -> Path:
    """The real RG1 chest CR resized by dcmtk's dcmscale (smaller files, faster tests)."""
    require_tool("dcmscale")
    target = folder / f"rg1_x{factor}.dcm"
    subprocess.run(
        ["dcmscale", "+Sxf", str(factor), str(testdata("RG1_UNCR.dcm")), str(target)],
        check=True,
        capture_output=True,
    )
    return target


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
