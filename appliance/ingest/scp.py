"""The DICOM listener: C-ECHO and C-STORE for the X-ray and photo SOP classes we screen.

Handlers return DICOM status codes and never raise into pynetdicom's network layer:
0x0000 only after the file is on disk (fsynced) and recorded in the database, 0xA700
when the disk is full, 0xC210 when the dataset cannot be understood (kept in quarantine).
"""

from __future__ import annotations

import logging
from typing import Any

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
from pynetdicom import AE, evt
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

from appliance.errors import StorageFullError
from appliance.ingest.importer import Importer
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


# C-STORE request Priority (PS3.7 9.3.1.1): 0 MEDIUM, 1 HIGH, 2 LOW.
_DIMSE_PRIORITY = {1: PRIORITY_URGENT, 0: PRIORITY_NORMAL, 2: PRIORITY_LOW}


def _priority(event: evt.Event) -> int:
    return _DIMSE_PRIORITY.get(getattr(event.request, "Priority", 0), PRIORITY_NORMAL)


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
    ) -> None:
        self.importer = importer
        self.address = (host, port)
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        if allowed_aets:
            self.ae.require_calling_aet = list(allowed_aets)
        self.ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self.server: Any = None

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo)]
        self.server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        log.info("DICOM listener %s on %s:%s", self.ae.ae_title, *self.address)

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def on_store(self, event: evt.Event) -> int:
        requestor = event.assoc.requestor
        sender = f"{requestor.ae_title}@{requestor.address}"
        try:
            raw = event.encoded_dataset(include_meta=True)
        except Exception:
            log.exception("C-STORE from %s: dataset could not be read", sender)
            return CANNOT_UNDERSTAND
        try:
            outcome = self.importer.import_bytes(
                raw, source="dicom", source_detail=sender, priority=_priority(event)
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
