"""Helpers shared by test modules (import as ``from helpers import ...``).

Kept out of conftest.py: several conftest modules exist under tests/, and importing
one by name would pick whichever pytest loaded first.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

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
