"""The nginx example in deploy/hub/ in front of a real gunicorn hub, as a server runs it:
Debian's nginx checks the file, terminates TLS (a private CA the boxes trust), redirects
plain HTTP, refuses bodies over its limit itself, and passes the hub's "come back later"
(503 + Retry-After) through to the boxes untouched, without retrying anything itself.

Only the addresses, ports and certificate paths of the file are changed for the test
(each substitution is checked, so a change to the file's shape fails here)."""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import threading
from pathlib import Path

import pytest
from helpers import free_port
from hub.nginxkit import NGINX, Nginx
from hub.test_server import serve, stop
from sync.synckit import FAST_RETRIES, enrol, enrolment_code, make_backlog, wait_for_port

from appliance.config import load_config
from appliance.hub.db import HubDatabase
from appliance.store.db import Store
from appliance.sync.identity import load_identity
from appliance.sync.worker import SyncWorker

pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx not installed (apt-get install nginx)"),
    pytest.mark.skipif(sys.platform != "linux", reason="gunicorn pre-forks: Linux"),
]


@pytest.fixture
def proxied(tmp_path, postgres):
    """nginx (the deploy file) in front of a hub of 2 workers x 1 thread, 0.3 s a batch."""
    url = postgres.create_database()
    hub_port, http_port, https_port = free_port(), free_port(), free_port()
    hub = serve(
        tmp_path / "hub", url, hub_port, "--threads", "1", "--test-write-delay", "0.3",
        "--shed-after-ms", "100",
    )  # fmt: skip
    proxy = None
    try:
        wait_for_port(hub_port, 30)
        proxy = Nginx(tmp_path, hub_port, http_port, https_port)
        yield {"url": url, "ca": proxy.ca, "https": https_port, "http": http_port, "dir": tmp_path}
    finally:
        if proxy is not None:
            proxy.close()
        stop(hub)


def tls(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def enrolled_box(proxied: dict, name: str, backlog: int) -> Path:
    code = enrolment_code(proxied["dir"] / "hub", proxied["url"], f"Clinic {name}")
    data_dir = proxied["dir"] / name
    store = Store.open(data_dir)
    try:
        enrol(data_dir, f"https://127.0.0.1:{proxied['https']}", code, ca_bundle=proxied["ca"])
        make_backlog(store, backlog)
    finally:
        store.close()
    return data_dir


def test_a_box_syncs_through_nginx_over_tls_exactly_once(proxied):
    data_dir = enrolled_box(proxied, "a", 60)
    store = Store.open(data_dir)
    try:
        config = load_config(
            data_dir,
            environ={},
            sync_batch_size=25,
            sync_ca_bundle=str(proxied["ca"]),
            **FAST_RETRIES,
        )
        assert SyncWorker(store, config).sync_once()["acked"] == 60
    finally:
        store.close()
    conn = HubDatabase(proxied["dir"] / "hub", proxied["url"]).connect()
    try:
        assert conn.one("SELECT COUNT(*) AS n FROM entries")["n"] == 60
    finally:
        conn.close()


def test_nginx_redirects_plain_http_and_refuses_an_oversized_body_itself(proxied):
    plain = http.client.HTTPConnection("127.0.0.1", proxied["http"], timeout=10)
    plain.request("GET", "/api/v1/ping")
    answer = plain.getresponse()
    assert answer.status == 301 and answer.getheader("Location").startswith("https://")
    plain.close()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", proxied["https"], timeout=30, context=tls(proxied["ca"])
    )
    conn.request("PUT", "/api/v1/images/ab/chunks/0", body=b"x" * (10 * 1024 * 1024))
    answer = conn.getresponse()
    assert answer.status == 413 and b"nginx" in answer.read()  # the hub never saw it
    conn.close()


def test_the_hubs_come_back_later_reaches_the_boxes_through_nginx(proxied):
    token = load_identity(enrolled_box(proxied, "b", 0)).token
    answers: list[tuple[int, str | None]] = []

    def post() -> None:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", proxied["https"], timeout=60, context=tls(proxied["ca"])
        )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            conn.request(
                "POST", "/api/v1/entries", body=json.dumps({"entries": []}), headers=headers
            )
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Retry-After")))
        finally:
            conn.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _ in answers)
    assert len(answers) == 8 and 200 in statuses and 503 in statuses, answers
    assert set(statuses) == {200, 503}  # nothing else: nginx neither retried nor failed them
    assert all(int(after) >= 1 for status, after in answers if status == 503)
