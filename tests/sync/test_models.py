"""Model bundles from the hub to real boxes over loopback: a staged rollout reaches only
the chosen box; a download cut mid-file resumes from the part's size; a tampered or
untrusted file is refused (audited, the part deleted, not fetched again); a version is
activated only once the rollout says so, and only once."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
from helpers import free_port
from lifecycle.modelkit import NAME, NEW, SHIPPED, new_version
from sync.synckit import FAST_RETRIES, HubProcess, enrol, wait_for_port

from appliance.config import load_config
from appliance.hub import distribution, records
from appliance.hub.db import HubDatabase
from appliance.lifecycle import activation
from appliance.lifecycle.keys import trust
from appliance.lifecycle.pack import pack
from appliance.store import model_versions
from appliance.store.db import Store
from appliance.sync.client import HubClient
from appliance.sync.identity import load_identity
from appliance.sync.models import downloads_dir
from appliance.sync.worker import SyncWorker, sync_status
from appliance.wire.model_signature import new_key


@pytest.fixture
def programme(tmp_path):
    """(signed file of NAME NEW, the programme's public key)."""
    public = new_key(tmp_path / "programme.key")
    out = tmp_path / f"{NAME}-{NEW}.tar"
    pack(new_version(tmp_path / "built"), tmp_path / "programme.key", out)
    return out, public


def published(hub, programme) -> str:
    conn = hub.conn()
    try:
        distribution.trust_key(conn, programme[1])
        return distribution.publish(conn, hub.data_dir, programme[0])["sha256"]
    finally:
        conn.close()


def roll_out(hub, targets: list[str], activate: bool = False) -> None:
    conn = hub.conn()
    try:
        distribution.rollout(conn, NAME, NEW, targets, activate)
    finally:
        conn.close()


def device_id(config) -> str:
    return load_identity(config.data_dir).device_id


def state(store, version: str = NEW) -> str | None:
    row = model_versions.row(store.conn(), NAME, version)
    return row["state"] if row else None


def audits(store, action: str) -> list[dict]:
    return [
        dict(r) for r in store.conn().execute("SELECT * FROM audit_log WHERE action=?", (action,))
    ]


@pytest.fixture
def second_box(tmp_path, hub):
    data_dir = tmp_path / "box2"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code("Clinic B"))
    yield store, load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
    store.close()


def test_a_staged_rollout_reaches_the_chosen_box_and_activates_only_when_told(
    hub, box, second_box, programme
):
    (store, config), (other_store, other_config) = box, second_box
    for data in (config, other_config):
        trust(data.data_dir, programme[1])
    published(hub, programme)
    roll_out(hub, [f"device:{device_id(config)}"])

    assert SyncWorker(other_store, other_config).sync_once()["models"]["installed"] == 0
    assert state(other_store) is None
    report = SyncWorker(store, config).sync_once()
    assert report["models"] == {"installed": 1, "activated": 0, "refused": 0}
    assert state(store) == "shadow" and state(store, SHIPPED) == "active"
    assert not list(downloads_dir(config.data_dir).iterdir())
    assert audits(store, "model.installed")[0]["actor"] == "hub"

    conn = hub.conn()
    try:
        reported = distribution.device_models(conn)
    finally:
        conn.close()
    assert {
        (r["version"], r["state"]) for r in reported[device_id(config)] if r["name"] == NAME
    } == {
        (SHIPPED, "active"),
        (NEW, "shadow"),
    }

    # Nothing is activated until the programme says so; then once, and an admin's
    # rollback on the box afterwards stands.
    assert SyncWorker(store, config).sync_once()["models"]["activated"] == 0
    roll_out(hub, [f"device:{device_id(config)}"], activate=True)
    assert SyncWorker(store, config).sync_once()["models"]["activated"] == 1
    assert state(store) == "active"
    assert audits(store, "model.activated")[-1]["actor"] == "hub"
    activation.rollback(store, config, NAME, actor="admin")
    SyncWorker(store, config).sync_once()
    assert state(store) == "installed" and state(store, SHIPPED) == "active"
    conn = hub.conn()
    try:
        reported = distribution.device_models(conn)[device_id(config)]
    finally:
        conn.close()
    assert (NEW, "installed") in {(r["version"], r["state"]) for r in reported}

    # The rest later: everyone, in shadow.
    roll_out(hub, ["all"])
    SyncWorker(other_store, other_config).sync_once()
    assert state(other_store) == "shadow"


class CuttingProxy:
    """Forwards to the hub; cuts the first model download after ``cut_after`` bytes of
    its body, then drops every connection (the link is down) until ``up()``. Records
    each request line and its Range header."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port, self.cut_after = target_port, cut_after
        self.down = False
        self.requests: list[tuple[str, str | None]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> None:
        self.down = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            if self.down:
                return
            head = client.recv(65536)
            line = head.split(b"\r\n", 1)[0].decode()
            found = re.search(rb"\r\nRange: ([^\r]+)", head)
            self.requests.append((line, found.group(1).decode() if found else None))
            cut = self.cut_after if re.match(r"GET \S+/models/[0-9a-f]{64} ", line) else None
            with socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
                upstream.sendall(head)
                pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
                pump.start()
                if cut is None:
                    _pipe(upstream, client)
                    return
                self.cut_after, self.down = None, True
                upstream.settimeout(10)
                received = b""
                while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < cut:
                    data = upstream.recv(65536)
                    if not data:  # the hub answered less than the cut: pass it on as is
                        break
                    received += data
                header, body = received.split(b"\r\n\r\n", 1)
                client.sendall(header + b"\r\n\r\n" + body[:cut])

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_a_download_cut_mid_file_resumes_from_the_part_size(hub, box, programme):
    store, config = box
    trust(config.data_dir, programme[1])
    sha = published(hub, programme)
    roll_out(hub, [f"device:{device_id(config)}"], activate=True)
    proxy = CuttingProxy(hub.port, cut_after=300_000)
    # One range for the whole file, so the cut falls inside one response.
    config = config.with_overrides(sync_hub_url=proxy.url, sync_image_chunk_kb=8192)
    try:
        report = SyncWorker(store, config).sync_once()
        assert isinstance(report["models"], str)  # the link went down mid-file
        part = downloads_dir(config.data_dir) / f"{sha}.part"
        assert part.stat().st_size == 300_000
        assert sync_status(store, config)["models_error"]
        assert state(store) is None
        proxy.up()
        proxy.requests.clear()
        report = SyncWorker(store, config).sync_once()
    finally:
        proxy.close()
    assert report["models"] == {"installed": 1, "activated": 1, "refused": 0}
    ranges = [r for line, r in proxy.requests if f"/models/{sha}" in line]
    assert ranges == [f"bytes=300000-{programme[0].stat().st_size - 1}"]
    assert not part.exists() and state(store) == "active"
    assert sync_status(store, config)["models_error"] is None


def test_a_tampered_file_on_the_hub_is_refused_and_not_fetched_again(hub, box, programme):
    store, config = box
    trust(config.data_dir, programme[1])
    sha = published(hub, programme)
    roll_out(hub, [f"device:{device_id(config)}"], activate=True)
    stored = hub.data_dir / "models" / f"{sha}.tar"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the model's weights
    stored.write_bytes(bytes(data))

    assert SyncWorker(store, config).sync_once()["models"]["refused"] == 1
    refused = audits(store, "model.refused")
    assert len(refused) == 1 and "does not match the sha256" in refused[0]["detail"]
    assert not list(downloads_dir(config.data_dir).iterdir())
    assert state(store) is None and state(store, SHIPPED) in (None, "active")
    assert SyncWorker(store, config).sync_once()["models"]["refused"] == 0  # not again
    assert len(audits(store, "model.refused")) == 1


def test_a_file_signed_by_a_key_the_box_does_not_trust_is_refused_by_install(hub, box, programme):
    store, config = box  # the hub trusts the programme's key; this box does not
    published(hub, programme)
    roll_out(hub, ["all"], activate=True)
    assert SyncWorker(store, config).sync_once()["models"]["refused"] == 1
    refused = audits(store, "model.refused")
    assert len(refused) == 1 and "does not trust" in refused[0]["detail"]
    assert state(store) == "refused"
    assert not list(downloads_dir(config.data_dir).iterdir())
    assert SyncWorker(store, config).sync_once()["models"]["refused"] == 0


def test_the_hub_killed_mid_download_then_restarted_the_box_resumes(tmp_path, programme):
    """The real `appliance hub serve` (waitress), killed with -9 while a bundle comes down
    slowly (bandwidth cap), started again: the next pass fetches only the rest."""
    hub_dir, port = tmp_path / "hub", free_port()
    hub = HubProcess(hub_dir, port)
    box_dir = tmp_path / "box"
    store = Store.open(box_dir)
    database = HubDatabase(hub_dir)
    conn = database.connect()
    try:
        code = records.create_enrolment_code(conn, "Clinic A")
    finally:
        conn.close()
    enrol(box_dir, f"http://127.0.0.1:{port}", code)
    config = load_config(
        box_dir,
        environ={},
        usb_roots=[],
        min_free_mb=1,
        **FAST_RETRIES,
        sync_image_chunk_kb=64,
        sync_max_kbps=3000,  # ~1.6 MB in ~4 s: time to kill the hub mid-file
    )
    trust(config.data_dir, programme[1])
    conn = database.connect()
    try:
        distribution.trust_key(conn, programme[1])
        sha = distribution.publish(conn, hub_dir, programme[0])["sha256"]
        distribution.rollout(conn, NAME, NEW, [f"device:{device_id(config)}"], activate=False)
    finally:
        conn.close()
    part = downloads_dir(config.data_dir) / f"{sha}.part"
    reports: list = []
    worker = threading.Thread(target=lambda: reports.append(SyncWorker(store, config).sync_once()))
    try:
        worker.start()
        start = time.monotonic()
        while not (part.exists() and part.stat().st_size > 300_000):
            assert time.monotonic() - start < 60, "the download never started"
            time.sleep(0.02)
        hub.kill()
        worker.join(timeout=60)
        assert isinstance(reports[0]["models"], str)
        kept = part.stat().st_size
        size = programme[0].stat().st_size
        assert 300_000 < kept < size
        hub = HubProcess(hub_dir, port)
        wait_for_port(port, 20)
        identity = load_identity(config.data_dir)
        client = HubClient(f"http://127.0.0.1:{port}", identity.token)
        report = SyncWorker(
            store, config.with_overrides(sync_max_kbps=0), client=client
        ).sync_once()
    finally:
        hub.kill()
        store.close()
    assert report["models"]["installed"] == 1 and state(store) == "shadow"
    assert client.bytes_received < size - kept + 20_000  # only the rest came down again
    assert not part.exists()
