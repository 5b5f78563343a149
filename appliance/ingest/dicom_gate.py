"""The DICOM listener's front door: who may hold a connection, and for how long.

pynetdicom accepts every TCP connection and gives it an association thread at once; its
one limit (10 associations) counts connections that never sent a byte, and a peer that
sends its A-ASSOCIATE-RQ one byte every few seconds blocks the reading thread without
end. Twelve idle connections therefore locked every modality out. Here, before
pynetdicom sees a connection:

* it must deliver a whole A-ASSOCIATE-RQ within ``negotiation_seconds`` (read with
  MSG_PEEK, so pynetdicom then reads the same bytes itself and never waits);
* one address may have at most ``pending_per_address`` connections waiting to do so; a
  newer one pushes out its oldest (a modality sends its request at once, idle
  connections wait: the idle ones go), and at most ``pending_total`` wait in all;
* then an association slot: ``max_associations`` in all, at most ``per_address`` from
  one address; and a calling AE title listed in ``dicom_allowed_aets`` that holds no
  association gets one even when those are all taken -- peers squatting on the slots
  (under any title, even another listed one) cannot lock a configured modality out.

A connection refused a slot gets an A-ASSOCIATE-RJ (transient, local limit exceeded),
as pynetdicom's own limit would send.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
# A-ASSOCIATE-RJ: result 2 rejected-transient, source 3 service provider (presentation),
# reason 2 local-limit-exceeded (PS3.8 9.3.4).
REJECT_LOCAL_LIMIT = bytes([0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2])
MAX_REQUEST_BYTES = 64 * 1024  # 128 presentation contexts fit in a fraction of this
_NO_PROGRESS_PAUSE = 0.05  # peeked data stays readable: pause instead of spinning
_READ_BYTES = 256 * 1024  # the most one socket read asks for
# Linux: acknowledge what arrives at once, not after the kernel's delayed-ACK timer. A
# sender that writes a PDU's header and its body separately with Nagle's algorithm on
# (dcmtk's echoscu here) holds the body back until the header is acknowledged: ~40 ms
# per small PDU (echoscu to the box: 74 -> 31 ms here). Not a lasting socket option:
# set again before each read.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


@dataclass
class Limits:
    negotiation_seconds: float = 10.0
    pending_per_address: int = 8
    pending_total: int = 64
    max_associations: int = 10
    per_address: int = 4
    network_timeout: float = 60.0  # a peer silent this long mid-PDU is dropped


@dataclass(eq=False)
class _Waiting:
    address: str
    pushed_out: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Slot:
    address: str
    calling_aet: str
    assoc: Any = None  # the Association thread once started

    def alive(self) -> bool:
        return self.assoc is None or self.assoc.is_alive()


class Gate:
    """Bookkeeping for the limits above; every method is safe from any thread."""

    def __init__(self, limits: Limits, allowed_aets: list[str] | None = None) -> None:
        self.limits = limits
        self.allowed = {aet.strip() for aet in allowed_aets or [] if aet.strip()}
        self._lock = threading.Lock()
        self._waiting: deque[_Waiting] = deque()
        self._slots: list[_Slot] = []

    def arrive(self, address: str) -> _Waiting:
        """Register a new connection; pushes out the oldest waiting one over a limit."""
        ticket = _Waiting(address)
        with self._lock:
            same = [w for w in self._waiting if w.address == address]
            if len(same) >= self.limits.pending_per_address:
                self._push_out(same[0])
            if len(self._waiting) >= self.limits.pending_total:
                self._push_out(self._waiting[0])
            self._waiting.append(ticket)
        return ticket

    def _push_out(self, ticket: _Waiting) -> None:
        ticket.pushed_out.set()
        self._waiting.remove(ticket)

    def leave(self, ticket: _Waiting) -> None:
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    def admit(self, address: str, calling_aet: str) -> _Slot | None:
        """An association slot for this caller, or None when the limits are reached."""
        with self._lock:
            self._slots = [s for s in self._slots if s.alive()]
            from_address = sum(s.address == address for s in self._slots)
            admitted = (
                len(self._slots) < self.limits.max_associations
                and from_address < self.limits.per_address
            )
            if not admitted and calling_aet in self.allowed:
                # A configured modality's own slot, whatever the others are doing.
                admitted = not any(s.calling_aet == calling_aet for s in self._slots)
            if not admitted:
                return None
            slot = _Slot(address, calling_aet)
            self._slots.append(slot)
            return slot

    def release(self, slot: _Slot) -> None:
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)


def await_association_request(
    sock: socket.socket, deadline: float, pushed_out: threading.Event
) -> bytes | None:
    """The peer's whole A-ASSOCIATE-RQ PDU, peeked (left in the socket for pynetdicom),
    or None if it does not come complete by ``deadline``, is not one, or is too large."""
    need, seen = 6, -1
    while not pushed_out.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([sock], [], [], min(remaining, 0.25))
        if not readable:
            continue
        data = sock.recv(need, socket.MSG_PEEK)
        if not data:
            return None  # closed by the peer
        if len(data) >= 6:
            kind, _, length = struct.unpack(">BBI", data[:6])
            if kind != A_ASSOCIATE_RQ or length > MAX_REQUEST_BYTES:
                return None
            need = 6 + length
            if len(data) >= need:
                return data
        if len(data) == seen:
            time.sleep(_NO_PROGRESS_PAUSE)
        seen = len(data)
    return None


def calling_ae_title(request: bytes) -> str:
    """Calling AE Title of an A-ASSOCIATE-RQ: bytes 26-41 (PS3.8 9.3.2)."""
    return request[26:42].decode("ascii", "replace").strip()


class PduSocket(AssociationSocket):
    """pynetdicom's socket, reading a PDU in as few calls as the network allows (its own
    recv asks for 4 KiB at a time: ~1,800 calls and copies for a 7 MB radiograph, ~4 ms
    of a C-STORE here; what is held still grows only as bytes arrive), acknowledging at
    once what arrived (``_QUICKACK``)."""

    def recv(self, nr_bytes: int) -> bytearray:
        sock, data = self.socket, bytearray()
        if sock is None:
            return data
        if _QUICKACK is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass  # closed meanwhile: the read below says so
        while len(data) < nr_bytes:
            chunk = sock.recv(min(nr_bytes - len(data), _READ_BYTES))
            if not chunk:
                break  # closed: a short read, which pynetdicom handles as with its own
            data += chunk
        return data


class GatedHandler(RequestHandler):
    """pynetdicom's request handler, behind the gate."""

    server: GatedServer

    def handle(self) -> None:
        gate, sock = self.server.gate, self.request
        address = str(self.client_address[0])
        ticket = gate.arrive(address)
        try:
            deadline = time.monotonic() + gate.limits.negotiation_seconds
            request = await_association_request(sock, deadline, ticket.pushed_out)
        except OSError:
            request = None
        finally:
            gate.leave(ticket)
        if request is None:
            log.info("DICOM connection from %s closed: no association request in time", address)
            _close(sock)
            return
        calling = calling_ae_title(request)
        slot = gate.admit(address, calling)
        if slot is None:
            log.warning(
                "DICOM association from %s@%s refused: connection limits reached", calling, address
            )
            _reject(sock)
            return
        try:
            # pynetdicom reads with blocking calls: a peer that stops mid-PDU must not
            # hold the reading thread for ever.
            sock.settimeout(gate.limits.network_timeout)
            # Our own PDUs go out as written (a response, then the release), not held
            # back by Nagle's algorithm for the peer's delayed acknowledgement.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # What RequestHandler.handle does, with the association kept in its slot.
            assoc = self._create_association()
            # The same socket object with PduSocket's reads (it adds no state); a second
            # socket object would announce the connection to pynetdicom a second time.
            assoc.dul.socket.__class__ = PduSocket
            slot.assoc = assoc
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
        except BaseException:
            gate.release(slot)
            raise


class GatedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with ``GatedHandler``; made by ``AE.make_server``."""

    daemon_threads = True
    block_on_close = False  # a connection still negotiating must not hold up stop()

    def __init__(self, *args: Any, gate: Gate, **kwargs: Any) -> None:
        self.gate = gate
        super().__init__(*args, request_handler=GatedHandler, **kwargs)

    def shutdown(self) -> None:
        # AssociationServer.shutdown also removes the server from the AE's list, which
        # only AE.start_server fills.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _reject(sock: socket.socket, linger: float = 2.0) -> None:
    """Send the A-ASSOCIATE-RJ, then let the peer close first (as PS3.8's ARTIM timer
    does): closing at once can reach it before the rejection does."""
    try:
        sock.sendall(REJECT_LOCAL_LIMIT)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(linger)
        while sock.recv(4096):
            pass
    except OSError:
        pass
    sock.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
