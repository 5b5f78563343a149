"""Helpers shared by test modules (import as ``from helpers import ...``).

Kept out of conftest.py: several conftest modules exist under tests/, and importing
one by name would pick whichever pytest loaded first.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

TESTS = Path(__file__).parent
FUNDUS_DIR = TESTS / "data" / "fundus"


# A small, valid PDF: what ends up on USB sticks beside the images.
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)


def count_rows(store, table: str) -> int:
    return store.conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def bundle_dir(name: str) -> Path:
    """The newest committed version of a model bundle (what the box loads)."""
    from appliance.screening.models import newest_bundles

    return newest_bundles(Path(__file__).resolve().parents[1] / "models")[name]


def adult_maps_shown() -> bool:
    """Whether the committed adult chest bundle's maps passed their checks (shown)."""
    from appliance.inference.bundle import load_bundle
    from appliance.screening.heatmaps import maps_validated

    return maps_validated(load_bundle(bundle_dir("cxr-adult-abnormal")).manifest)


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


@contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs: mounting needs root), so the disk really
    fills up; the test is skipped where it cannot be mounted."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(ballast: Path, leave_bytes: int = 0) -> None:
    """Grow ``ballast`` until its filesystem has only ``leave_bytes`` free (0: until the
    filesystem refuses another byte); shrink it with ``os.truncate`` to free space."""
    with open(ballast, "ab", buffering=0) as fh:  # unbuffered: nothing left to flush
        if leave_bytes:
            fh.write(b"\xff" * max(0, shutil.disk_usage(ballast.parent).free - leave_bytes))
            return
        try:
            while fh.write(b"\xff" * 65536):  # the last write may be partial
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


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


class Served:
    """A real ``python -m appliance serve`` on free ports, for tests that need the whole box."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "serve.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.port),
                "--dicom-port",
                str(self.dicom_port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self.wait_healthy()
        except BaseException:
            self.close()  # never leave a server behind when start-up fails
            raise

    def health_request(self) -> urllib.request.Request:
        """/healthz with the device token: the full report (without it: up or not)."""
        headers = {}
        token = self.data_dir / "secrets" / "api_token"
        if token.exists() and token.read_text().strip():
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        return urllib.request.Request(f"{self.url}/healthz", headers=headers)

    def wait_healthy(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.health_request(), timeout=2) as response:
                    return json.load(response)
            except urllib.error.HTTPError as degraded:  # up, and saying what is wrong
                return json.load(degraded)
            except OSError:
                time.sleep(0.2)
        raise AssertionError("serve did not become healthy")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# The PIN the web tests give every user they create.
PIN = "2468"


def csrf_from(html: str) -> str:
    """The CSRF token of the first form on a page."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def logged_in(app, username: str, pin: str = PIN):
    """A test client of the box's web app, logged in as ``username``."""
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"csrf_token": token, "username": username, "pin": pin})
    assert response.status_code == 302
    return client


# A fundus result as the worker stores it, for tests that need one without the models.
FUNDUS_RESULT = {
    "route": "fundus",
    "probability": 0.2,
    "score": 20,
    "threshold": 0.5,
    "triage": "routine",
    "model": {"name": "fundus-referable-dr", "version": "1.0.0", "sha256": "0" * 64},
}
