"""Nothing lost, nothing duplicated: faults, kill -9 on either side, a hub that was down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from helpers import free_port
from sync.synckit import (
    FAST_RETRIES,
    FaultProxy,
    HubProcess,
    HubThread,
    clean_env,
    enrol,
    make_backlog,
)

from appliance.config import load_config
from appliance.hub.db import HubDatabase
from appliance.store.db import Store
from appliance.sync.worker import SyncWorker, sync_status


def hub_rows(database: HubDatabase) -> list[dict]:
    conn = database.connect()
    try:
        return conn.execute("SELECT device_id, entry_id, revision, payload FROM entries")
    finally:
        conn.close()


def assert_exactly_once(store: Store, database: HubDatabase, expected: int) -> None:
    """Every outbox entry is on the hub once, with the box's content; the box knows it."""
    rows = hub_rows(database)
    ids = Counter(r["entry_id"] for r in rows)
    assert len(rows) == expected and max(ids.values()) == 1
    box = {
        r["entry_id"]: json.loads(r["payload"])
        for r in store.conn().execute("SELECT entry_id, payload FROM outbox")
    }
    assert set(ids) == set(box)
    for row in rows[:: max(1, expected // 50)]:
        assert json.loads(row["payload"]) == box[row["entry_id"]]
    counts = (
        store.conn().execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    )
    assert dict(counts) == {"acked": expected}


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_in_background(worker: SyncWorker) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=worker.run_forever, args=(stop,), daemon=True).start()
    return stop


@pytest.fixture
def any_hub(tmp_path, database_url):
    """The hub on SQLite and on a real PostgreSQL server."""
    server = HubThread(tmp_path / "any-hub", database_url)
    yield server
    server.close()


def test_10000_results_through_a_faulty_link_arrive_exactly_once(tmp_path, any_hub):
    hub = any_hub
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
    make_backlog(store, 10_000)
    proxy = FaultProxy(hub.port, drop=0.3, cut=0.15, delay=0.05)
    worker = SyncWorker(store, config.with_overrides(sync_hub_url=proxy.url))
    stop = run_in_background(worker)
    try:
        wait_until(
            lambda: sync_status(store, config)["result_pending"] == 0, 90, "the backlog to drain"
        )
    finally:
        stop.set()
        proxy.close()
    # The link really was bad: requests dropped, answers cut after the hub had committed.
    assert proxy.stats["dropped"] >= 5 and proxy.stats["cut"] >= 3
    assert_exactly_once(store, hub.app.extensions["hub_database"], 10_000)
    store.close()


def test_the_hub_down_the_whole_time_then_up_the_backlog_drains_by_itself(tmp_path):
    port = free_port()
    hub_dir = tmp_path / "hub"
    early = HubThread(hub_dir)  # only to enrol; then the hub is gone
    code = early.enrol_code()
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, early.url, code)
    early.close()
    make_backlog(store, 500)
    config = load_config(
        data_dir,
        environ={},
        usb_roots=[],
        min_free_mb=1,
        **FAST_RETRIES,
        sync_hub_url=f"http://127.0.0.1:{port}",
    )
    stop = run_in_background(SyncWorker(store, config))
    try:
        wait_until(lambda: sync_status(store, config)["failures"] >= 2, 20, "failed attempts")
        status = sync_status(store, config)
        assert status["result_pending"] == 500 and "127.0.0.1" in status["last_error"]
        hub = HubThread(hub_dir, port=port)
        try:
            wait_until(lambda: sync_status(store, config)["result_pending"] == 0, 30, "the drain")
            assert_exactly_once(store, hub.app.extensions["hub_database"], 500)
            # The pass clears the error when it ends, after its model step (sync/models.py).
            wait_until(lambda: sync_status(store, config)["last_error"] is None, 10, "the pass")
        finally:
            stop.set()
            hub.close()
    finally:
        stop.set()
        store.close()


def write_config(data_dir, **values) -> None:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    (data_dir / "config.toml").write_text("\n".join(lines) + "\n")


def enrol_code_from_cli(hub_dir) -> str:
    """A one-time code, as a technician gets it: `appliance hub enrol-code`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "hub",
            "enrol-code",
            "--data-dir",
            str(hub_dir),
            "--site",
            "Clinic K",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout.strip()


def test_kill_9_of_the_box_during_a_batch_then_restart_sends_each_once(tmp_path):
    port = free_port()
    hub = HubProcess(tmp_path / "hub", port, write_delay=0.4)  # each batch sits in the hub
    database = HubDatabase(tmp_path / "hub")
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    try:
        code = enrol_code_from_cli(tmp_path / "hub")
        enrol(data_dir, hub_url := f"http://127.0.0.1:{port}", code)
        make_backlog(store, 2000)
        write_config(data_dir, sync_hub_url=hub_url, sync_batch_size=250, **FAST_RETRIES)
        box = subprocess.Popen(
            [sys.executable, "-m", "appliance", "sync", "--data-dir", str(data_dir), "--once"],
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill it while a batch is in flight: some batches stored, the rest not yet.
        wait_until(lambda: len(hub_rows(database)) >= 500, 30, "a few batches on the hub")
        time.sleep(0.2)
        box.kill()
        box.wait(timeout=10)
        time.sleep(0.5)  # the batch the box was waiting on still commits on the hub
        partial = len(hub_rows(database))
        pending = sync_status(store, load_config(data_dir, environ={}))["result_pending"]
        assert 0 < partial < 2000 and pending >= 2000 - partial  # never acked before stored
        again = subprocess.run(
            [sys.executable, "-m", "appliance", "sync", "--data-dir", str(data_dir), "--once"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert_exactly_once(store, database, 2000)
    finally:
        hub.kill()
        store.close()


def test_kill_9_of_the_hub_mid_write_then_restart_still_exactly_once(tmp_path):
    port = free_port()
    hub_dir = tmp_path / "hub"
    hub = HubProcess(hub_dir, port, write_delay=0.5)
    database = HubDatabase(hub_dir)
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    code = enrol_code_from_cli(hub_dir)
    enrol(data_dir, f"http://127.0.0.1:{port}", code)
    make_backlog(store, 1500)
    config = load_config(
        data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES, sync_batch_size=250
    )
    stop = run_in_background(SyncWorker(store, config))
    try:
        wait_until(lambda: len(hub_rows(database)) >= 250, 30, "a first batch on the hub")
        time.sleep(0.25)  # inside the next batch's write transaction (0.5 s long)
        hub.kill()
        stored = len(hub_rows(database))  # the killed transaction left nothing behind
        assert stored % 250 == 0 and stored < 1500
        hub = HubProcess(hub_dir, port)
        wait_until(lambda: sync_status(store, config)["result_pending"] == 0, 60, "the drain")
        assert_exactly_once(store, database, 1500)
    finally:
        stop.set()
        hub.kill()
        store.close()
