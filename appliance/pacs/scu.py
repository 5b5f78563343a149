"""C-STORE SCU: one association per PACS per pass, objects sent in order.

pynetdicom's outcomes are translated here, once: no association, or one that breaks
or times out, is ``PacsUnreachableError`` (the whole PACS waits and is tried again);
a failure status for one object is ``PacsRejectedError`` (that object counts a try).
Warning statuses (0xB000, 0xB006, 0xB007: e.g. coerced elements) are success: the PACS
kept the object.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pydicom
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE
from pynetdicom.association import Association

from appliance.errors import PacsRejectedError, PacsUnreachableError
from appliance.pacs.targets import Target

log = logging.getLogger(__name__)
SOP_CLASSES = (SecondaryCaptureImageStorage, Comprehensive3DSRStorage)
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


@contextmanager
def association(target: Target, calling_aet: str, timeout: float) -> Iterator[Association]:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class in SOP_CLASSES:
        ae.add_requested_context(sop_class, TRANSFER_SYNTAXES)
    try:
        probe(target, timeout)
        assoc = ae.associate(target.host, target.port, ae_title=target.aet)
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else "could not be reached"
            raise PacsUnreachableError(f"{target.address} {why}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        ae.shutdown()


def probe(target: Target, timeout: float) -> None:
    """Connect once ourselves: pynetdicom 3.0 leaves the socket of a refused connection
    open (a ResourceWarning per try, every few seconds while a PACS is down)."""
    try:
        socket.create_connection((target.host, target.port), timeout=timeout).close()
    except OSError as exc:
        raise PacsUnreachableError(f"{target.address} could not be reached ({exc})") from exc


def store(assoc: Association, target: Target, dataset: pydicom.Dataset) -> None:
    """Send one object; returns when the PACS says it holds it."""
    try:
        status = assoc.send_c_store(dataset)
    except (RuntimeError, ValueError) as exc:  # no accepted context, or association lost
        if not assoc.is_established:
            raise PacsUnreachableError(f"{target.address}: {exc}") from exc
        raise PacsRejectedError(f"{target.address}: {exc}") from exc
    if "Status" not in status:  # no answer: timed out, aborted or the link went
        raise PacsUnreachableError(f"{target.address} did not answer the C-STORE")
    if status.Status not in STORED:
        raise PacsRejectedError(
            f"{target.address} refused {dataset.SOPClassUID.name}: status 0x{status.Status:04X}"
        )
    log.debug("pacs: %s holds %s", target.address, dataset.SOPInstanceUID)
