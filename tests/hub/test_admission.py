"""Load shedding (``appliance/hub/admission.py``): a box's request that waited too long for
a gunicorn worker thread is answered 503 with Retry-After before any work; people's pages
and enrolment wait their turn; boxes told to come back still deliver everything once."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import random
import sys
import threading
from pathlib import Path

import pytest
from helpers import free_port
from hub.test_server import serve, stop
from sync.synckit import FAST_RETRIES, enrol, enrolment_code, make_backlog, wait_for_port

from appliance.config import load_config
from appliance.hub import admission, tallies
from appliance.hub.db import HubDatabase
from appliance.store.db import Store
from appliance.sync.identity import load_identity
from appliance.sync.worker import SyncWorker

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="gunicorn pre-forks: Linux")


def test_the_longer_the_wait_the_later_boxes_are_asked_back():
    rng = random.Random(0).random
    short = [admission.retry_after_seconds(0.2, rng) for _ in range(200)]
    long = [admission.retry_after_seconds(5.0, rng) for _ in range(200)]
    assert min(short) >= 1 and max(short) <= 2
    assert min(long) >= 15 and max(long) <= 45 and len(set(long)) > 10  # spread out
    assert admission.retry_after_seconds(3600.0) == admission.MAX_RETRY_AFTER_S


def test_only_the_boxes_sync_requests_are_shed():
    assert admission.sheddable("/api/v1/entries")
    assert admission.sheddable("/api/v1/ping")
    assert admission.sheddable("/api/v1/images/ab/chunks/0")
    assert not admission.sheddable("/api/v1/enrol")
    for page in ("/", "/login", "/export/indicators.json", "/fhir/DiagnosticReport"):
        assert not admission.sheddable(page)


@pytest.fixture
def slow_hub(tmp_path, postgres):
    """Two workers of one thread each; every batch takes 0.6 s to write."""
    url = postgres.create_database()
    port = free_port()
    log = tmp_path / "access.log"
    proc = serve(
        tmp_path / "hub",
        url,
        port,
        "--threads",
        "1",
        "--test-write-delay",
        "0.6",
        "--shed-after-ms",
        "100",
        "--access-log",
        str(log),
    )
    wait_for_port(port, 30)
    yield url, port, log
    stop(proc)


def enrolled_box(tmp_path: Path, url: str, port: int, name: str, backlog: int) -> Path:
    code = enrolment_code(tmp_path / "hub", url, f"Clinic {name}")
    data_dir = tmp_path / name
    store = Store.open(data_dir)
    try:
        enrol(data_dir, f"http://127.0.0.1:{port}", code)
        make_backlog(store, backlog)
    finally:
        store.close()
    return data_dir


def test_queued_sync_requests_are_told_when_to_come_back_and_pages_are_not(tmp_path, slow_hub):
    url, port, _ = slow_hub
    token = load_identity(enrolled_box(tmp_path, url, port, "a", 0)).token
    body = gzip.compress(json.dumps({"entries": []}).encode())
    answers: list[tuple[str, int, str | None, bytes]] = []

    def call(method: str, path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if method == "POST":
            headers["Content-Encoding"] = "gzip"
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            response = conn.getresponse()
            retry_after = response.getheader("Retry-After")
            answers.append((path, response.status, retry_after, response.read()))
        finally:
            conn.close()

    # Two threads in all, each request 0.6 s: six batches at once queue behind two.
    calls = [("POST", "/api/v1/entries")] * 6 + [("GET", "/login")] * 2
    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batches = [a for a in answers if a[0] == "/api/v1/entries"]
    shed = [a for a in batches if a[1] == 503]
    assert len(batches) == 6 and 1 <= len(shed) <= 5  # at least one got a thread at once
    assert {a[1] for a in batches} == {200, 503}
    for _, _, retry_after, payload in shed:
        assert retry_after is not None and 1 <= int(retry_after) <= admission.MAX_RETRY_AFTER_S
        error = json.loads(payload)["error"]  # the hub's one error shape
        assert set(error) == {"code", "message"} and error["code"] == "busy"
        assert f"send again in {retry_after} s" in error["message"]
    # Pages waited, never shed (a hub without an admin yet sends /login to /first-run).
    pages = [a[1] for a in answers if a[0] == "/login"]
    assert len(pages) == 2 and set(pages) <= {200, 302}


def test_boxes_asked_to_come_back_still_deliver_everything_exactly_once(tmp_path, slow_hub, caplog):
    url, port, access_log = slow_hub
    boxes = [enrolled_box(tmp_path, url, port, name, 120) for name in "abcd"]
    reports: dict[str, dict] = {}

    def sync(data_dir: Path) -> None:
        store = Store.open(data_dir)
        try:
            config = load_config(data_dir, environ={}, sync_batch_size=40, **FAST_RETRIES)
            reports[data_dir.name] = SyncWorker(store, config).sync_once()
        finally:
            store.close()

    caplog.set_level(logging.INFO, logger="appliance.sync.worker")
    threads = [threading.Thread(target=sync, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["acked"] for r in reports.values()) == [120] * 4
    assert " 503 " in access_log.read_text()  # some were shed ...
    assert "the hub is busy" in caplog.text  # ... and the boxes waited as told
    conn = HubDatabase(tmp_path / "hub", url).connect()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 480
        assert tallies.tallied(conn) == tallies.recount(conn)
    finally:
        conn.close()
