"""The DICOM listener: C-ECHO and C-STORE for the X-ray and photo SOP classes we screen.

Handlers return DICOM status codes and never raise into pynetdicom's network layer:
0x0000 only after the file is on disk (fsynced) and recorded in the database, 0xA700
when the disk is full or the dataset is over ``upload_max_mb``, 0xC210 when the dataset
cannot be understood (kept in quarantine).

A received dataset is streamed to a file as it arrives (pynetdicom's chunked receive),
exactly as sent (never decoded and encoded again), then renamed into the data dir's
tmp/ (copied only where the system's temporary folder is another file system) and
handed to the importer: no image is ever held in memory whole, and its bytes are
written once. A transfer that grows past ``upload_max_mb`` is aborted as soon as it
does, not stored and then refused. Connections pass dicom_gate.py's limits before
pynetdicom sees them.

Where the time of one C-STORE goes (issue 28; RG1, 7 MB): mostly in dcmtk's storescu
starting and connecting (~20 ms) and in pynetdicom itself (negotiation, PDU reads, its
polling loops) -- a bare pynetdicom SCP that only writes and fsyncs takes about as long.
Accepting 128 KiB PDUs instead of 16 KiB ones saves ~15 ms; the handler (hash, header
checks, fsync of the file and of its folder, the commit) takes ~10 ms, all of it before
the response.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    OphthalmicPhotography8BitImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
    VLPhotographicImageStorage,
)

from appliance.errors import FileTooLargeError, StorageFullError
from appliance.ingest.dicom_gate import Gate, GatedServer, Limits
from appliance.ingest.importer import Importer, Spooled
from appliance.ingest.sources import too_large
from appliance.store.files import ensure_free_space
from appliance.store.jobs import PRIORITY_LOW, PRIORITY_NORMAL, PRIORITY_URGENT

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC210
PROCESSING_FAILURE = 0xA701  # out of resources (retry later): the sender keeps its copy

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
    OphthalmicPhotography8BitImageStorage,
)

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessP14,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


# The largest PDU we accept: fewer, larger reads of a 7 MB radiograph than pynetdicom's
# 16 KiB default (~20 ms less per RG1 here); dcmtk's own receive maximum. Memory per
# association stays small (one PDU is read at a time).
MAX_PDU_BYTES = 128 * 1024

# C-STORE request Priority (PS3.7 9.3.1.1): 0 MEDIUM, 1 HIGH, 2 LOW.
_DIMSE_PRIORITY = {1: PRIORITY_URGENT, 0: PRIORITY_NORMAL, 2: PRIORITY_LOW}


def _priority(event: evt.Event) -> int:
    return _DIMSE_PRIORITY.get(getattr(event.request, "Priority", 0), PRIORITY_NORMAL)


# The most a spool file may hold before its dataset's first byte (preamble, "DICM" and
# the file meta pynetdicom writes): more means it is not the file just begun.
_PREFIX_MAX = 64 * 1024
# Fragments are hashed on a thread of their own (hashlib lets go of the GIL): the
# network thread, the slowest part of a transfer, only hands them over. Past this many
# bytes handed over and not yet hashed, it waits for the hasher.
_HASH_BACKLOG = 8 << 20


@dataclass
class _Arriving:
    """The dataset now arriving on one association (only its DUL thread changes this,
    the hasher only ``hashed``): how many bytes, and the sha-256 of its spool file kept
    up as the bytes arrive, so that little is left to hash when the last one has (the
    whole file took ~4 ms for RG1 here, between the last byte and the response)."""

    received: int = 0
    refused: bool = False
    spool: str | None = None  # the file pynetdicom writes this dataset to
    digest: Any = None  # of that file so far; None: hashed whole when it is complete
    handed: int = 0  # bytes given to the digest (the prefix at once, fragments queued)
    hashed: int = 0
    last: Future | None = None  # the latest fragment queued
    whole: bool = False  # given up following: hashed whole at the end

    def begin(self) -> None:
        self.received, self.spool, self.digest = 0, None, None
        self.handed = self.hashed = 0
        self.last, self.whole = None, False

    def feed(self, digest: Any, fragment: memoryview) -> None:
        digest.update(fragment)
        self.hashed += len(fragment)

    def sha256_of(self, path: Path, size: int) -> str | None:
        """The file's hash, where it was followed from its first byte to its last."""
        if self.digest is None or self.spool != str(path):
            return None
        try:
            if self.last is not None:
                self.last.result()
        except Exception:  # whatever went wrong, the file itself can still be hashed
            return None
        return self.digest.hexdigest() if self.handed == self.hashed == size else None


def _spool_file(assoc: Any) -> Any:
    """The temporary file pynetdicom streams the arriving dataset into, if any."""
    message = getattr(assoc.dimse, "message", None)
    return getattr(message, "_data_set_file", None)


class StoreSCP:
    """A pynetdicom AE bound to the importer; start() returns at once, stop() waits."""

    def __init__(
        self,
        importer: Importer,
        *,
        ae_title: str,
        port: int,
        host: str = "0.0.0.0",
        allowed_aets: list[str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.importer = importer
        self.address = (host, port)
        self.limits = limits or Limits()
        self.gate = Gate(self.limits, allowed_aets)
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        if allowed_aets:
            self.ae.require_calling_aet = list(allowed_aets)
        # The gate enforces the real limits; pynetdicom's own count must not be lower.
        self.ae.maximum_associations = self.limits.max_associations + len(self.gate.allowed)
        self.ae.network_timeout = self.limits.network_timeout
        self.ae.maximum_pdu_size = MAX_PDU_BYTES
        self.ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self.server: Any = None
        # The dataset now arriving, per association.
        self._receiving: dict[Any, _Arriving] = {}
        self._hasher: ThreadPoolExecutor | None = None

    def start(self) -> None:
        # Process-wide in pynetdicom: datasets go to a temporary file as they arrive
        # (event.dataset_path), not into a BytesIO; this process is the only SCP.
        _config.STORE_RECV_CHUNKED_DATASET = True
        # Process-wide in pydicom: values read are no longer checked against their VR's
        # pattern, a check that only ever warns (it refuses nothing) and that the box
        # acts on nowhere. pynetdicom makes a pydicom UID of every syntax an association
        # proposes: with storescu's 128 contexts the checks took ~4 of ~11 ms of CPU
        # per association here.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        handlers = [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_DATA_RECV, self.on_data),
            (evt.EVT_CONN_CLOSE, self.on_close),
        ]
        self.server = self.ae.make_server(
            self.address, evt_handlers=handlers, server_class=GatedServer, gate=self.gate
        )
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="dicom-hash")
        thread = threading.Thread(
            target=self.server.serve_forever, name="dicom-listener", daemon=True
        )
        thread.start()
        log.info("DICOM listener %s on %s:%s", self.ae.ae_title, *self.address)

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        if self._hasher is not None:
            self._hasher.shutdown(wait=False)

    def on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def on_data(self, event: evt.Event) -> None:
        """Count the dataset bytes of each P-DATA-TF as it arrives (past the limit, abort
        the association: nothing more is written, and the quarantine list says so) and
        hash them on the way (before pynetdicom writes them to its spool file)."""
        data = event.data
        if data[:1] != b"\x04":  # only P-DATA-TF carries datasets
            return
        arriving = self._receiving.setdefault(event.assoc, _Arriving())
        if arriving.refused:
            return
        view = memoryview(data)
        command_here = False
        pos = 6
        while pos + 6 <= len(data):  # PDV items: length, context id, control header
            (length,) = struct.unpack_from(">I", data, pos)
            control = data[pos + 5]
            if control & 1:  # a command fragment: a new message starts, its dataset after
                arriving.begin()
                command_here = True
            else:
                arriving.received += max(0, length - 2)
                self._follow(arriving, event.assoc, view[pos + 6 : pos + 4 + length], command_here)
            pos += 4 + length
        limit = self.importer.max_bytes
        if arriving.received > limit:
            self._refuse_oversized(event.assoc, limit)

    def _follow(
        self, arriving: _Arriving, assoc: Any, fragment: memoryview, command_here: bool
    ) -> None:
        """Hash one dataset fragment as pynetdicom will append it. The file's first bytes
        (its meta, written once the command is complete) are read at the first fragment;
        where they cannot be yet (the command ended in this same PDU), the file is hashed
        whole at the end instead."""
        if arriving.whole:
            return
        if arriving.digest is None:
            spool = None if command_here else _spool_file(assoc)
            try:
                if spool is not None:
                    spool.flush()  # the meta may still be in its buffer (this thread's own)
                prefix = Path(spool.name).read_bytes() if spool is not None else b""
            except (OSError, ValueError):
                prefix = b""
            if not prefix or len(prefix) > _PREFIX_MAX or self._hasher is None:
                arriving.whole = True
                return
            arriving.spool, arriving.digest = spool.name, hashlib.sha256(prefix)
            arriving.handed = arriving.hashed = len(prefix)
        try:
            arriving.last = self._hasher.submit(arriving.feed, arriving.digest, fragment)
            arriving.handed += len(fragment)
            if arriving.handed - arriving.hashed > _HASH_BACKLOG:
                arriving.last.result()
        except Exception:  # the listener stopping (no more hashing): hashed whole
            arriving.whole = True

    def _refuse_oversized(self, assoc: Any, limit: int) -> None:
        self._receiving[assoc].refused = True  # refused once: what still arrives is ignored
        sender = f"{assoc.requestor.ae_title}@{assoc.requestor.address}"
        message = getattr(assoc.dimse, "message", None)
        command = getattr(message, "command_set", None)
        instance = str(getattr(command, "AffectedSOPInstanceUID", "") or "")
        reason = too_large(limit).reason
        log.error("C-STORE of %s from %s aborted: %s", instance or "?", sender, reason)
        try:
            self.importer.record_refusal(
                instance, reason, "dicom", f"{sender} {instance}".strip(), limit
            )
        except Exception:  # the refusal stands even if it cannot be noted
            log.exception("could not record the refused C-STORE from %s", sender)
        # From the network thread itself: queue the A-ABORT, never wait for it here.
        assoc.abort(block=False)

    def on_close(self, event: evt.Event) -> None:
        """Drop what was received of a dataset the association never finished (an
        abort, a sender that went away): pynetdicom leaves its temporary file behind."""
        self._receiving.pop(event.assoc, None)
        spool = _spool_file(event.assoc)
        if spool is not None:
            spool.close()
            Path(spool.name).unlink(missing_ok=True)

    def on_store(self, event: evt.Event) -> int:
        requestor = event.assoc.requestor
        sender = f"{requestor.ae_title}@{requestor.address}"
        importer = self.importer
        try:
            spooled = self._take(Path(event.dataset_path), self._receiving.get(event.assoc))
        except (StorageFullError, FileTooLargeError) as exc:
            log.error("C-STORE from %s refused: %s", sender, exc)
            return OUT_OF_RESOURCES
        except Exception:
            log.exception("C-STORE from %s: dataset could not be read", sender)
            return CANNOT_UNDERSTAND
        try:
            outcome = importer.import_spooled(
                spooled, source="dicom", source_detail=sender, priority=_priority(event)
            )
        except StorageFullError as exc:
            log.error("C-STORE from %s refused: %s", sender, exc)
            return OUT_OF_RESOURCES
        except Exception:
            # Never raise into the network layer: the sender keeps its copy and retries.
            log.exception("C-STORE from %s failed", sender)
            return PROCESSING_FAILURE
        if outcome.status == "quarantined":
            log.warning("C-STORE from %s refused: %s", sender, outcome.reason)
            return CANNOT_UNDERSTAND
        return SUCCESS

    def _take(self, received: Path, arriving: _Arriving | None = None) -> Spooled:
        """pynetdicom's file of the dataset, as received, moved into the data dir's tmp/
        (where the importer's spooled copies live, cleared after a crash) and hashed
        (the hash kept up while it arrived, where it covers the whole file); refused over
        ``upload_max_mb`` or into the free-space reserve. pynetdicom's own attempt to
        delete it afterwards then finds nothing, as it allows."""
        importer = self.importer
        size = received.stat().st_size
        if size > importer.max_bytes:
            raise too_large(importer.max_bytes, size)
        ensure_free_space(importer.store.data_dir, size, importer.config.min_free_mb)
        tmp_dir = importer.store.tmp_dir
        if received.stat().st_dev != tmp_dir.stat().st_dev:  # another file system
            with open(received, "rb") as fh:
                return importer.spool(fh)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="incoming-")
        os.close(fd)
        spooled = Path(name)
        try:
            os.replace(received, spooled)
            sha256 = arriving.sha256_of(received, size) if arriving is not None else None
            if sha256 is None:
                with open(spooled, "rb") as fh:
                    sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        except BaseException:
            spooled.unlink(missing_ok=True)
            raise
        return Spooled(spooled, sha256, size)
