"""The sync worker keeps one connection for a pass (one TCP and TLS handshake, not one per
request: fewer round trips on a 2G link), closes it at the end, and replaces at once a
kept connection the other end closed while it was idle."""

from __future__ import annotations

import socket
import threading

from helpers import free_port
from sync.synckit import (
    FAST_RETRIES,
    FaultProxy,
    HubProcess,
    enrol,
    enrolment_code,
    make_backlog,
)

from appliance.config import load_config
from appliance.store.db import Store
from appliance.sync.client import HubClient
from appliance.sync.worker import SyncWorker


def test_a_pass_sends_everything_over_one_connection(tmp_path):
    hub_dir, port = tmp_path / "hub", free_port()
    hub = HubProcess(hub_dir, port)  # waitress: HTTP/1.1 keep-alive, as gunicorn and nginx
    try:
        code = enrolment_code(hub_dir)
        data_dir = tmp_path / "box"
        store = Store.open(data_dir)
        enrol(data_dir, f"http://127.0.0.1:{port}", code)
        make_backlog(store, 300)
        counter = FaultProxy(port, drop=0, cut=0, delay=0)  # counts connections and requests
        config = load_config(
            data_dir, environ={}, usb_roots=[], min_free_mb=1, sync_batch_size=50, **FAST_RETRIES
        )
        worker = SyncWorker(store, config.with_overrides(sync_hub_url=counter.url))
        try:
            assert worker.sync_once()["acked"] == 300
            assert counter.stats["requests"] >= 7  # the probe and six batches at least
            assert counter.stats["connections"] == 1
            assert worker.client()._kept is None  # closed at the end of the pass
            worker.sync_once()  # the next pass: a connection of its own
            assert counter.stats["connections"] == 2
        finally:
            counter.close()
            store.close()
    finally:
        hub.kill()


def test_a_kept_connection_the_hub_closed_is_replaced_at_once(tmp_path):
    """A server that answers one request per connection while announcing keep-alive (as
    one whose idle timeout ran out between two requests): every call still succeeds,
    each on a new connection, without a failure for the worker to back off from."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connections = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                body = b'{"site": "Clinic A"}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
                )
                conn.shutdown(socket.SHUT_RDWR)  # then it is gone, as if idle too long

    threading.Thread(target=serve, daemon=True).start()
    client = HubClient(f"http://127.0.0.1:{port}", "token", keep_alive=True)
    try:
        for _ in range(3):
            assert client.ping()["site"] == "Clinic A"
    finally:
        client.close()
        server.close()
    assert len(connections) == 3
