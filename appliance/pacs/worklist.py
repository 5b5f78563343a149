"""The modality worklist (MWL): today's scheduled procedures from the RIS, by C-FIND.

``refresh`` asks ``mwl_address`` for the procedures scheduled today (for
``mwl_station_aet`` when set) and replaces today's cached entries; when the RIS cannot
be asked, the cache stays as it was and the error is kept for the System page. The
study page of an image without a patient offers the cached entries that fit it
(``candidates``): the image's modality, the station that sent it, the time nearest.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from appliance.config import Config
from appliance.errors import PacsError, PacsUnreachableError
from appliance.pacs.scu import probe
from appliance.pacs.targets import parse_target
from appliance.store import mwl
from appliance.store.db import Store

log = logging.getLogger(__name__)
PENDING = (0xFF00, 0xFF01)
# What an image without a DICOM modality is, by the route screening gave it.
ROUTE_MODALITIES = {"fundus": ("OP", "XC"), "chest_xray": ("CR", "DX")}
OFFERED = 8


def today(config: Config) -> date:
    return datetime.now(ZoneInfo(config.timezone)).date()


def _query(day: date, station: str) -> Dataset:
    ds = Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
    ):
        setattr(ds, keyword, "")
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = ""
    step.ScheduledProcedureStepDescription = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def _entry(found: Dataset, day: date) -> dict[str, Any]:
    step = (found.get("ScheduledProcedureStepSequence") or [Dataset()])[0]
    start = str(step.get("ScheduledProcedureStepStartTime") or "")
    return {
        "scheduled_date": mwl.iso_day(str(step.get("ScheduledProcedureStepStartDate") or ""))
        or day.isoformat(),
        "scheduled_time": f"{start[:2]}:{start[2:4]}" if len(start) >= 4 else None,
        "modality": str(step.get("Modality") or "") or None,
        "station_aet": str(step.get("ScheduledStationAETitle") or "") or None,
        "patient_id": str(found.get("PatientID") or ""),
        "patient_name": str(found.get("PatientName") or "").replace("^", " ").strip() or None,
        "patient_birth_date": str(found.get("PatientBirthDate") or "") or None,
        "patient_sex": str(found.get("PatientSex") or "") or None,
        "accession_number": str(found.get("AccessionNumber") or "") or None,
        "study_instance_uid": str(found.get("StudyInstanceUID") or "") or None,
        "description": str(
            step.get("ScheduledProcedureStepDescription")
            or found.get("RequestedProcedureDescription")
            or ""
        )
        or None,
    }


def query(config: Config, day: date) -> list[dict[str, Any]]:
    """Every procedure the worklist SCP has scheduled on ``day``; PacsError if it
    cannot be asked."""
    target = parse_target(config.mwl_address)
    timeout = config.pacs_timeout_seconds
    probe(target, timeout)
    ae = AE(ae_title=config.dicom_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(
        ModalityWorklistInformationFind, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.aet)
        if not assoc.is_established:
            raise PacsUnreachableError(f"worklist {target.address} refused the association")
        found = []
        try:
            request = _query(day, config.mwl_station_aet)
            for status, identifier in assoc.send_c_find(request, ModalityWorklistInformationFind):
                if "Status" not in status:
                    raise PacsUnreachableError(f"worklist {target.address} did not answer")
                if status.Status in PENDING and identifier is not None:
                    found.append(_entry(identifier, day))
                elif status.Status != 0x0000:
                    raise PacsError(f"worklist {target.address}: status 0x{status.Status:04X}")
        finally:
            assoc.release()
    finally:
        ae.shutdown()
    return found


def refresh(store: Store, config: Config) -> int:
    """Ask the worklist for today and cache the answer; returns how many entries (the
    cache is left alone, and the error recorded, when it cannot be asked)."""
    day = today(config)
    try:
        entries = query(config, day)
    except PacsError as exc:
        mwl.record_failure(store, str(exc))
        raise
    mwl.replace_day(store, day.isoformat(), entries)
    return len(entries)


def run_forever(store: Store, config: Config, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            count = refresh(store, config)
            log.info("worklist: %s procedures scheduled today", count)
        except PacsError as exc:
            log.warning("worklist: %s (the cached list is kept)", exc)
        except Exception:  # never let the thread die silently
            log.exception("worklist: unexpected failure")
        stop.wait(config.mwl_interval_seconds)


def candidates(store: Store, config: Config, image: dict[str, Any]) -> list[dict[str, Any]]:
    """Today's cached entries that could be this image's patient, best first: the
    image's modality (or its route's), the station that sent it, the nearest time."""
    conn = store.conn()
    entries = mwl.entries_for(conn, today(config).isoformat())
    modalities = (image.get("modality"),) if image.get("modality") else ()
    route = (image.get("result") or {}).get("route") or ""
    modalities = modalities or ROUTE_MODALITIES.get(route, ())
    if modalities:
        entries = [e for e in entries if not e["modality"] or e["modality"] in modalities]
    station = (image.get("source_detail") or "").strip()
    received = _local_minutes(image.get("received_at"), config)

    def rank(entry: dict[str, Any]) -> tuple[int, int]:
        other = entry["station_aet"] is not None and entry["station_aet"] != station
        scheduled = entry["scheduled_time"]
        minutes = int(scheduled[:2]) * 60 + int(scheduled[3:5]) if scheduled else None
        gap = abs(minutes - received) if minutes is not None and received is not None else 9999
        return (1 if station and other else 0, gap)

    return sorted(entries, key=rank)[:OFFERED]


def _local_minutes(when: str | None, config: Config) -> int | None:
    if not when:
        return None
    moment = datetime.fromisoformat(when)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(ZoneInfo(config.timezone))
    return local.hour * 60 + local.minute
