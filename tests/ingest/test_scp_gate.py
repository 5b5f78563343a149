"""The DICOM listener under hostile connections: real sockets, real echoscu/storescu.

Issue 12: twelve idle TCP connections locked every modality out, and ten that trickle
one byte every few seconds kept it locked. Done when a modality's echo succeeds while
22 hostile connections are open.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers import Served, free_port, require_tool, scaled_rg1, testdata
from pynetdicom import AE, evt
from pynetdicom import ae as pynetdicom_ae
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket

from appliance.ingest.dicom_gate import Limits, PduSocket
from appliance.ingest.importer import Importer
from appliance.ingest.scp import StoreSCP

# The first bytes of an A-ASSOCIATE-RQ of 200 bytes: what a trickler sends, slowly.
RQ_HEAD = bytes([0x01, 0x00, 0x00, 0x00, 0x00, 200, 0x00, 0x01])


@pytest.fixture
def listener(store, config):
    started = []

    def start(host: str = "127.0.0.1", **kwargs) -> StoreSCP:
        scp = StoreSCP(
            Importer(store, kwargs.pop("config", config)),
            ae_title="APPLIANCE",
            port=free_port(),
            host=host,
            **kwargs,
        )
        scp.start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


class Hostile:
    """Idle connections and tricklers (one byte a second), from 127.0.0.1."""

    def __init__(self, port: int, idle: int, trickling: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        self.tricklers = [socket.create_connection(("127.0.0.1", port)) for _ in range(trickling)]
        self.hung_up: set[socket.socket] = set()  # the box closed these
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        for index in range(len(RQ_HEAD) * 100):
            if self.stop.wait(1.0):
                return
            for sock in self.tricklers:
                if sock in self.hung_up:
                    continue
                try:
                    sock.send(RQ_HEAD[index % len(RQ_HEAD) : index % len(RQ_HEAD) + 1])
                except OSError:
                    self.hung_up.add(sock)

    def still_open(self) -> int:
        """How many of the connections the box has not closed yet."""
        count = 0
        for sock in self.idle + self.tricklers:
            sock.setblocking(False)
            try:
                count += sock.recv(1) != b""
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.idle + self.tricklers:
            sock.close()


def echo(port: int, calling: str = "XRAY1", host: str = "127.0.0.1") -> tuple[bool, float]:
    require_tool("echoscu")
    started = time.monotonic()
    done = subprocess.run(
        ["echoscu", "-aet", calling, "-aec", "APPLIANCE", host, str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0, time.monotonic() - started


@pytest.mark.parametrize("allowed", [["XRAY1"], []], ids=["allowed-aets", "any-caller"])
def test_a_modality_echoes_while_22_hostile_connections_are_open(listener, allowed):
    scp = listener(allowed_aets=allowed, limits=Limits(negotiation_seconds=4))
    hostile = Hostile(scp.port, idle=12, trickling=10)
    try:
        time.sleep(1.5)  # every hostile connection accepted and trickling
        for _ in range(3):
            ok, seconds = echo(scp.port)
            assert ok and seconds < 3, seconds
        # No association request after the negotiation deadline: the box hangs up on
        # the idle and the trickling alike (the tricklers kept sending all along).
        time.sleep(4)
        assert hostile.still_open() == 0
        assert echo(scp.port)[0]
    finally:
        hostile.close()


def test_one_address_cannot_hold_the_waiting_room(listener):
    scp = listener(limits=Limits(negotiation_seconds=30, pending_per_address=8))
    hostile = Hostile(scp.port, idle=30, trickling=0)
    try:
        time.sleep(1.5)
        assert hostile.still_open() == 8  # each newer connection pushed the oldest out
        ok, seconds = echo(scp.port)
        assert ok and seconds < 3
    finally:
        hostile.close()


def associate(port: int, calling: str):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="APPLIANCE")


def test_associations_are_limited_per_address(listener):
    scp = listener(limits=Limits(per_address=4))
    held = [associate(scp.port, "ANYONE") for _ in range(5)]
    try:
        assert [a.is_established for a in held] == [True] * 4 + [False]
        assert held[4].is_rejected
        assert not echo(scp.port, "XRAY1")[0]  # nobody is configured: same rules for all
    finally:
        for assoc in held[:4]:
            assoc.release()
    assert echo(scp.port, "XRAY1")[0]


def test_squatters_cannot_lock_out_a_configured_modality(listener):
    """Associations held under a listed title (spoofed, or a modality that leaks them)
    fill every slot; the other configured modality still has one of its own."""
    scp = listener(allowed_aets=["XRAY1", "CR2"], limits=Limits(max_associations=3))
    held = [associate(scp.port, "CR2") for _ in range(4)]
    try:
        assert [a.is_established for a in held] == [True, True, True, False]
        ok, seconds = echo(scp.port, "XRAY1")
        assert ok and seconds < 3
    finally:
        for assoc in held[:3]:
            assoc.release()


def test_the_listener_binds_to_dicom_host_only(listener):
    scp = listener(host="127.0.0.2")
    assert echo(scp.port, host="127.0.0.2")[0]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", scp.port), timeout=5)


def storescu(port: int, *files: Path) -> str:
    require_tool("storescu")
    done = subprocess.run(
        ["storescu", "-v", "-aet", "XRAY1", "-aec", "APPLIANCE", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def test_a_c_store_over_the_limit_is_aborted_early_and_leaves_nothing(
    listener, store, config, tmp_path, monkeypatch
):
    """RG1 (7 MB) to a box taking at most 2 MB: stopped at 2 MB, nothing stored, no
    temporary file left, the refusal listed; the next image goes through."""
    spool = tmp_path / "systmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where pynetdicom spools
    scp = listener(config=config.with_overrides(upload_max_mb=2))
    output = storescu(scp.port, testdata("RG1_UNCR.dcm"))
    assert "Peer Aborted Association" in output, output
    assert store.conn().execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    reason = store.conn().execute("SELECT reason, source FROM quarantine").fetchone()
    assert tuple(reason) == ("The file is larger than the 2 MB limit for one image.", "dicom")
    deadline = time.monotonic() + 5
    while any(spool.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(spool.iterdir()) == []
    assert not any(store.tmp_dir.iterdir())
    small = scaled_rg1(tmp_path, 0.25)
    assert "Received Store Response (Success)" in storescu(scp.port, small)


@pytest.mark.slow
def test_a_large_c_store_is_streamed_to_disk_not_held_in_memory(tmp_path):
    """RG1 scaled to 7820 x 7364 (115 MB) into a real ``appliance serve`` whose worker
    claims nothing (no models: so only receiving is measured): its peak resident memory
    grows by a few MB, where holding the dataset took about three copies (~350 MB) before."""
    big = scaled_rg1(tmp_path, 4)
    no_models = tmp_path / "no-models"
    no_models.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    # A worker does not claim jobs while the models it needs are not loaded (workers
    # cannot be 0).
    env.update(
        APPLIANCE_USB_ROOTS="", APPLIANCE_MIN_FREE_MB="1", APPLIANCE_MODELS_DIR=str(no_models)
    )
    served = Served(tmp_path / "data", env)
    try:
        before = peak_rss_mb(served.proc.pid)
        output = storescu(served.dicom_port, big)
        assert "Received Store Response (Success)" in output, output
        grown = peak_rss_mb(served.proc.pid) - before
        print(f"C-STORE of {big.stat().st_size >> 20} MB: service peak RSS +{grown} MB")
        assert grown < 64
    finally:
        served.close()
    stored = next((tmp_path / "data" / "images").rglob("*.dcm"))
    assert stored.stat().st_size > 100 * 1024 * 1024


def peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def test_the_listener_reads_whole_pdus_in_large_reads(listener, tmp_path):
    """Issue 28: pynetdicom's own socket reads 4 KiB per call (~1,800 calls for RG1);
    the listener's associations read through PduSocket instead."""
    sockets = []
    scp = listener()
    scp.server.bind(evt.EVT_CONN_OPEN, lambda event: sockets.append(event.assoc.dul.socket))
    output = storescu(scp.port, scaled_rg1(tmp_path, 0.25))
    assert "Received Store Response (Success)" in output, output
    assert sockets and all(type(sock) is PduSocket for sock in sockets)


def test_pdu_socket_returns_exactly_what_was_asked_or_what_came_before_a_close():
    here, there = socket.socketpair()
    pdu = os.urandom(300_000)

    def send_in_pieces() -> None:
        for start in range(0, len(pdu), 7000):
            there.sendall(pdu[start : start + 7000])
        there.sendall(b"next")
        there.close()

    sender = threading.Thread(target=send_in_pieces)
    sender.start()
    wrapped = PduSocket(Association(AE(), "acceptor"), client_socket=here)
    try:
        assert bytes(wrapped.recv(len(pdu))) == pdu
        assert bytes(wrapped.recv(10)) == b"next"  # closed after 4 of 10: a short read
        assert bytes(wrapped.recv(6)) == b""
    finally:
        sender.join()
        here.close()


class SplitWritesSocket(AssociationSocket):
    """A sender like dcmtk's: each PDU written as its 6-byte header, then its body, with
    Nagle's algorithm on (this test's client side only)."""

    def send(self, bytestream: bytes) -> None:
        self.socket.sendall(bytestream[:6])
        self.socket.sendall(bytestream[6:])


def test_a_sender_that_writes_header_and_body_apart_is_not_held_back(listener, monkeypatch):
    """Issue 28: echoscu to the box took ~80 ms, ~40 of them the body of its C-ECHO
    waiting (Nagle) for our delayed acknowledgement of the header. The listener
    acknowledges at once: ten echoes in one association, each well under 40 ms."""
    if not hasattr(socket, "TCP_QUICKACK"):
        pytest.skip("TCP_QUICKACK is Linux's")
    scp = listener()
    monkeypatch.setattr(pynetdicom_ae, "AssociationSocket", SplitWritesSocket)  # the client's
    ae = AE(ae_title="XRAY1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="APPLIANCE")
    assert assoc.is_established
    try:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert assoc.send_c_echo().Status == 0x0000
            times.append(time.perf_counter() - started)
    finally:
        assoc.release()
    assert sorted(times)[5] < 0.02, times  # the median; a held-back body takes >= 40 ms
