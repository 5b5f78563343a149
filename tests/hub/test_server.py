"""``appliance hub serve --workers N``: gunicorn's pre-forked workers on PostgreSQL with a
pool each. A worker killed with -9 in the middle of a box's sync is replaced and the
box's backlog still arrives exactly once; HUP replaces every worker gracefully; a
database newer than the code stops the hub before it serves anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port
from sync.synckit import (
    FAST_RETRIES,
    clean_env,
    enrol,
    enrolment_code,
    hub_database_from_the_future,
    make_backlog,
    wait_for_port,
)

from appliance.config import load_config
from appliance.hub import tallies
from appliance.hub.db import HubDatabase
from appliance.hub.migrations import LATEST
from appliance.store.db import Store
from appliance.sync.worker import SyncWorker

ROOT = Path(__file__).resolve().parents[2]


def serve(data_dir: Path, url: str, port: int, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "appliance", "hub", "serve", "--data-dir", str(data_dir)]
    args += ["--port", str(port), "--database-url", url, "--workers", "2", "--threads", "2"]
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    with open(data_dir.parent / "hub.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen([*args, *extra], stdout=log, stderr=log, env=env)


def stop(proc: subprocess.Popen) -> None:
    """TERM (gunicorn drains), then kill if it takes too long."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()


def workers(master: int, count: int = 2, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = Path(f"/proc/{master}/task/{master}/children")
        found = [int(p) for p in path.read_text().split()] if path.exists() else []
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"{count} workers did not start")


@pytest.fixture
def hub(tmp_path, postgres):
    url = postgres.create_database()
    port = free_port()
    proc = serve(tmp_path / "hub", url, port, "--test-write-delay", "0.05")
    wait_for_port(port, 30)
    yield proc, url, port
    stop(proc)


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn pre-forks: Linux")
def test_a_worker_killed_mid_sync_loses_nothing(tmp_path, hub):
    proc, url, port = hub
    first = workers(proc.pid)
    database = HubDatabase(tmp_path / "hub", url)
    code = enrolment_code(tmp_path / "hub", url)
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    try:
        enrol(data_dir, f"http://127.0.0.1:{port}", code)
        make_backlog(store, 1500)
        config = load_config(data_dir, environ={}, sync_batch_size=50, **FAST_RETRIES)
        worker = SyncWorker(store, config)
        killer = subprocess.Popen(  # kill -9 one worker while the batches are being written
            ["sh", "-c", f"sleep 0.8; kill -9 {first[0]}"]
        )
        report = worker.sync_once()
        killer.wait(timeout=5)
    finally:
        store.close()
    assert report["acked"] == 1500
    replaced = workers(proc.pid)
    assert first[0] not in replaced  # gunicorn replaced the dead worker
    conn = database.connect()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 1500
        assert tallies.tallied(conn) == tallies.recount(conn)
    finally:
        conn.close()


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn pre-forks: Linux")
def test_hup_replaces_every_worker_and_the_hub_keeps_answering(hub):
    proc, _, port = hub
    before = set(workers(proc.pid))
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = set(workers(proc.pid))
        if len(now) == 2 and not now & before:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the workers were not replaced")
    wait_for_port(port, 10)


def test_a_newer_database_stops_the_hub_before_it_serves(tmp_path, postgres):
    url = postgres.create_database()
    hub_database_from_the_future(tmp_path / "hub", url)
    proc = serve(tmp_path / "hub", url, free_port())
    assert proc.wait(timeout=60) != 0
    log = (tmp_path / "hub.log").read_text()
    assert f"schema version {LATEST + 1}, newer than this hub knows" in log
