"""``appliance serve`` as a real process: clean SIGTERM, and kill -9 losing nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from helpers import Served, adult_maps_shown, bundle_dir, require_tool, scaled_rg1, testdata
from pydicom.uid import generate_uid

from appliance.store.files import sha256_file


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        {
            "APPLIANCE_USB_ROOTS": "",  # no USB bus here
            "APPLIANCE_JOB_LEASE_SECONDS": "2",
            "APPLIANCE_MIN_FREE_MB": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def test_sigterm_stops_cleanly(tmp_path, env):
    served = Served(tmp_path / "data", env)
    try:
        health = served.wait_healthy()
        assert health["status"] == "ok" and "dicom" in health["components"]
        # made by serve itself (umask 077, database created 0600 before SQLite opens it)
        data = tmp_path / "data"
        for path, mode in [
            (data, 0o700),
            (data / "previews", 0o700),
            (data / "appliance.db", 0o600),
            (data / "appliance.db-wal", 0o600),
            (data / "appliance.db-shm", 0o600),
        ]:
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=20) == 0
    finally:
        served.close()
    assert "appliance stopped" in (tmp_path / "serve.log").read_text()


@pytest.fixture(scope="module")
def many_instances(tmp_path_factory) -> list[Path]:
    """40 distinct instances of a real radiograph (RG1 at 1/4 scale, new UIDs)."""
    out = tmp_path_factory.mktemp("instances")
    small = scaled_rg1(out, 0.25)
    ds = pydicom.dcmread(small)
    files = []
    for n in range(40):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        path = out / f"img{n:03d}.dcm"
        ds.save_as(path)
        files.append(path)
    return files


def acknowledged(storescu_output: str) -> list[str]:
    """SOP Instance UIDs the SCP answered with success (from storescu -d's response dumps)."""
    found = []
    for block in storescu_output.split("INCOMING DIMSE MESSAGE")[1:]:
        uid = re.search(r"Affected SOP Instance UID\s*:\s*([0-9.]+)", block)
        status = re.search(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})", block)
        if uid and status and status.group(1) == "0x0000":
            found.append(uid.group(1))
    return found


def test_kill_9_mid_transfer_loses_no_acknowledged_image(tmp_path, env, many_instances):
    require_tool("storescu")
    data_dir = tmp_path / "data"
    served = Served(data_dir, env)
    out_path = tmp_path / "storescu.log"
    try:
        with open(out_path, "w") as out:
            sender = subprocess.Popen(
                [
                    "storescu",
                    "-d",
                    "-aec",
                    "APPLIANCE",
                    "127.0.0.1",
                    str(served.dicom_port),
                    *map(str, many_instances),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 60
            while len(acknowledged(out_path.read_text())) < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            served.proc.kill()  # kill -9: no cleanup of any kind
            served.proc.wait()
            sender.wait(timeout=60)
    finally:
        served.close()

    acked = acknowledged(out_path.read_text())
    assert 12 <= len(acked) < len(many_instances), "the kill should land mid-transfer"

    # Restart on the same data directory: everything acknowledged is there, intact.
    served = Served(data_dir, env)
    try:
        conn = sqlite3.connect(data_dir / "appliance.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT sop_instance_uid, stored_path FROM images"))
        missing = [uid for uid in acked if uid not in rows]
        assert missing == []
        for uid in acked:
            stored = data_dir / rows[uid]
            assert pydicom.dcmread(stored).SOPInstanceUID == uid
            sha = conn.execute(
                "SELECT sha256 FROM images WHERE sop_instance_uid=?", (uid,)
            ).fetchone()[0]
            assert sha256_file(stored) == sha
        # Jobs interrupted by the kill are re-claimed after their lease; all get done.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
            if set(states) == {"done"}:
                break
            time.sleep(0.5)
        assert set(states) == {"done"}, states
        assert states["done"] == len(rows) >= len(acked)
        conn.close()
    finally:
        served.close()


def test_a_job_its_dead_predecessor_was_screening_is_screened_at_once(tmp_path, env):
    """After a power cut the lease of the process that died is not waited out (an hour
    here): serve hands it back at start-up."""
    from appliance.config import load_config
    from appliance.ingest.importer import Importer
    from appliance.store import jobs
    from appliance.store.db import Store

    data_dir = tmp_path / "data"
    store = Store.open(data_dir)
    Importer(store, load_config(data_dir, environ={})).import_path(
        testdata("RG1_UNCR.dcm"), source="dicom"
    )
    predecessor = subprocess.Popen([sys.executable, "-c", "pass"])
    predecessor.wait()  # gone, as after a power cut
    owner = f"{socket.gethostname()}:{predecessor.pid}:worker-0"
    assert jobs.claim(store, owner, lease_seconds=3600, max_attempts=3) is not None
    store.close()

    served = Served(data_dir, {**env, "APPLIANCE_JOB_LEASE_SECONDS": "3600"})
    try:
        conn = sqlite3.connect(data_dir / "appliance.db")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state, attempts FROM jobs").fetchone()
            if row[0] == "done":
                break
            time.sleep(0.2)
        assert row == ("done", 2)
        conn.close()
    finally:
        served.close()
    assert "1 job(s) of a stopped process queued again" in (tmp_path / "serve.log").read_text()


def test_a_2_gb_upload_is_refused_at_once_by_the_real_server(tmp_path, env):
    import http.client

    served = Served(tmp_path / "data", env)
    try:
        token = (tmp_path / "data" / "secrets" / "api_token").read_text().strip()
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        conn.putrequest("POST", "/api/upload")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(2 * 1024**3))
        conn.endheaders()
        conn.send(b"\0" * 65536)  # a client that really starts sending 2 GB
        started = time.monotonic()
        response = conn.getresponse()
        assert response.status == 413
        assert time.monotonic() - started < 5
        conn.close()
        assert served.wait_healthy()["status"] == "ok"  # and the box carries on
        assert not any((tmp_path / "data" / "tmp").iterdir())
    finally:
        served.close()


def test_storescu_to_result_row_end_to_end(tmp_path, env):
    require_tool("storescu")
    served = Served(tmp_path / "data", env)
    try:
        subprocess.run(
            [
                "storescu",
                "-aec",
                "APPLIANCE",
                "127.0.0.1",
                str(served.dicom_port),
                str(testdata("RG1_UNCR.dcm")),
            ],
            check=True,
            capture_output=True,
        )
        conn = sqlite3.connect(tmp_path / "data" / "appliance.db")
        deadline = time.monotonic() + 20
        row = None
        while row is None and time.monotonic() < deadline:
            row = conn.execute("SELECT route, score, triage, heatmap_path FROM results").fetchone()
            time.sleep(0.05)
        assert row is not None and row[0] == "chest_xray" and 0 <= row[1] <= 100
        assert (row[3] is not None) == adult_maps_shown()  # only maps that passed
        health = served.wait_healthy()
        assert health["models"]["cxr-pneumonia"]["loaded"] is True
        conn.close()
    finally:
        served.close()


def test_a_tampered_bundle_leaves_the_box_running_and_says_so(tmp_path, env):
    import shutil

    from appliance.screening.models import default_models_dir

    models = tmp_path / "models"
    shutil.copytree(
        default_models_dir(),
        models,
        ignore=shutil.ignore_patterns("training", "quality", "*.py", "__pycache__"),
    )
    onnx = models / "cxr-pneumonia" / bundle_dir("cxr-pneumonia").name / "model.int8.onnx"
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    onnx.write_bytes(bytes(data))
    env = {**env, "APPLIANCE_MODELS_DIR": str(models)}

    served = Served(tmp_path / "data", env)
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(served.health_request(), timeout=5)
        assert caught.value.code == 503
        health = json.load(caught.value)
        assert health["status"] == "degraded"
        assert "sha256 mismatch" in health["models"]["cxr-pneumonia"]["error"]
        assert health["models"]["modality-router"]["loaded"] is True
    finally:
        served.close()

    doctor = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert doctor.returncode == 1
    assert "!! cxr-pneumonia: refused:" in doctor.stdout and "sha256 mismatch" in doctor.stdout
