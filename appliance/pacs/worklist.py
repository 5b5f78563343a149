"""The modality worklist (MWL): today's scheduled procedures from the RIS, by C-FIND.

``refresh`` asks ``mwl_address`` for the procedures scheduled today (for
``mwl_station_aet`` when set) and replaces today's cached entries (older days are
deleted); when the RIS cannot be asked, or the disk is down to its reserve, the cache
stays as it was and the error is kept for the System page. The study page of an image
without a patient offers the cached entries that fit it (``candidates``): the image's
modality, the station that sent it, the time nearest.

The RIS is trusted for nothing (issue 25). Each answer is read from its raw bytes (no
pydicom value conversion, which warns or raises on hostile text) and checked here:
  * identifiers (patient ID, accession number, study UID) must fit their DICOM VR and
    hold no control character, or the entry is dropped: an identifier is never cut or
    repaired, because a changed one could name another patient;
  * names and descriptions lose control characters (they travel to the SR, the
    capture's banner and the hub) and are cut to the VR's maximum;
  * coded values, dates and times that do not parse are left out (None);
  * an entry scheduled on another day than the one asked for is dropped;
  * at most ``MAX_ENTRIES`` answers are read per refresh, within ``QUERY_SECONDS``.
What was dropped or cut is logged and shown as the worklist's last error.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import ModalityWorklistInformationFind

from appliance.config import Config
from appliance.errors import PacsError, PacsUnreachableError, StorageFullError
from appliance.pacs.scu import probe
from appliance.pacs.targets import parse_target
from appliance.store import mwl
from appliance.store.db import Store

log = logging.getLogger(__name__)
PENDING = (0xFF00, 0xFF01)
# What an image without a DICOM modality is, by the route screening gave it.
ROUTE_MODALITIES = {"fundus": ("OP", "XC"), "chest_xray": ("CR", "DX")}
OFFERED = 8
# A day of one clinic: a screening station sees 100-300 procedures, a district
# hospital's whole RIS (no ``mwl_station_aet``) a few hundred to ~1,500 across all
# modalities. Beyond 2,000 the answer is not a day's list but a fault or an attack;
# 2,000 entries at the field caps below are under 2 MB in the database.
MAX_ENTRIES = 2000
# The whole C-FIND, however slowly a RIS drips its answers (each one may take up to
# ``pacs_timeout_seconds``); at least this long.
QUERY_SECONDS = 120.0

# DICOM PS3.5 table 6.2-1: the longest value of each VR, in characters (PN: per
# component group).
PN, LO, SH, CS, AE_TITLE, UI, DA = 64, 64, 16, 16, 16, 64, 8
# C0 and C1 controls (ESC, CR, LF, NUL...), line/paragraph separators and the
# bidirectional overrides that would show a name reversed.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
CODE = re.compile(r"[A-Z0-9_ ]+")
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
TAGS = {
    "SpecificCharacterSet": 0x00080005,
    "AccessionNumber": 0x00080050,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "PatientBirthDate": 0x00100030,
    "PatientSex": 0x00100040,
    "StudyInstanceUID": 0x0020000D,
    "RequestedProcedureDescription": 0x00321060,
    "Modality": 0x00080060,
    "ScheduledStationAETitle": 0x00400001,
    "ScheduledProcedureStepStartDate": 0x00400002,
    "ScheduledProcedureStepStartTime": 0x00400003,
    "ScheduledProcedureStepDescription": 0x00400007,
    "ScheduledProcedureStepSequence": 0x00400100,
}


class BadEntry(ValueError):
    """A worklist answer that cannot be kept (the reason names the field)."""


@dataclass
class Answer:
    """What one C-FIND gave: the entries kept, and what was dropped or cut."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    cut_at: int | None = None

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def note(self) -> str | None:
        """One line for the System page, or None when the answer was clean."""
        parts = []
        if self.cut_at:
            parts.append(f"more than {self.cut_at} answers, only the first {self.cut_at} read")
        if self.dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()))
            parts.append(f"{sum(self.dropped.values())} entries refused ({reasons})")
        return "worklist answer: " + "; ".join(parts) if parts else None


def today(config: Config) -> date:
    return datetime.now(ZoneInfo(config.timezone)).date()


def plain_text(text: str, limit: int) -> str:
    """``text`` without control characters (each becomes a space), spaces collapsed,
    cut to ``limit`` characters."""
    return " ".join(CONTROL.sub(" ", text).split())[:limit].rstrip()


def _encoding(ds: Dataset, inherited: str) -> str:
    raw = _raw(ds, "SpecificCharacterSet", "ascii")
    terms = [t.strip() for t in raw.split("\\") if t.strip()]
    codecs = [python_encoding[t] for t in terms if t in python_encoding]
    # ISO 2022 codecs read the escape sequences that switch between the listed sets.
    multi = [c for c in codecs if c.startswith("iso2022")]
    return (multi or codecs or [inherited])[0]


def _raw(ds: Dataset, keyword: str, encoding: str) -> str:
    """An element's text as sent (trailing padding removed), decoded without pydicom's
    value conversion; undecodable bytes become U+FFFD."""
    element = ds.get_item(TAGS[keyword])
    value = None if element is None else element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode(encoding, errors="replace")
    return str(value).rstrip(" \x00")


def _identifier(text: str, limit: int, name: str, pattern: re.Pattern[str] | None = None) -> str:
    text = text.strip(" ")  # DICOM's padding; any other character counts
    if len(text) > limit or "\\" in text or CONTROL.search(text):
        raise BadEntry(f"bad {name}")
    if text and pattern is not None and not pattern.fullmatch(text):
        raise BadEntry(f"bad {name}")
    return text


def _code(text: str, limit: int = CS) -> str | None:
    text = text.strip().upper()
    return text if text and len(text) <= limit and CODE.fullmatch(text) else None


def _ae_title(text: str) -> str | None:
    """A station's AE title, or None when it is not one (the entry is still offered)."""
    text = text.strip()
    fits = len(text) <= AE_TITLE and text.isprintable() and "\\" not in text
    return text if text and fits else None


def _day(text: str) -> date | None:
    """A DICOM DA (``YYYYMMDD``; ``YYYY.MM.DD`` from old systems) as a date."""
    text = text.strip().replace(".", "")
    if len(text) != DA or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def hh_mm(text: str | None) -> str | None:
    """A DICOM TM (``HH``, ``HHMM``, ``HHMMSS.FFFFFF``; ``HH:MM:SS`` from old systems)
    as ``HH:MM``; None when it is not a time of day."""
    text = (text or "").strip().replace(":", "")
    digits, dot, fraction = text.partition(".")
    if len(text) > 16 or len(digits) not in (2, 4, 6) or not digits.isdigit():
        return None
    if dot and (len(digits) != 6 or not fraction.isdigit() or len(fraction) > 6):
        return None
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:] or 0)
    valid = hours < 24 and minutes < 60 and seconds < 61  # 60: a leap second
    return f"{hours:02d}:{minutes:02d}" if valid else None


def _person_name(text: str) -> str | None:
    """The first component group that has a name (alphabetic, else ideographic or
    phonetic), as words: ``Banda^Amina`` -> ``Banda Amina``."""
    groups = [g[:PN] for g in text.split("=") if g.replace("^", "").strip()]
    if not groups:
        return None
    return plain_text(groups[0].replace("^", " "), PN) or None


def parse_entry(found: Dataset, day: date) -> dict[str, Any]:
    """One C-FIND answer as a cache entry; BadEntry when it cannot be kept."""
    encoding = _encoding(found, "iso8859")  # DICOM's default repertoire, as pydicom reads it
    items = found.get_item(TAGS["ScheduledProcedureStepSequence"])
    steps = found["ScheduledProcedureStepSequence"].value if items is not None else None
    step = steps[0] if isinstance(steps, Sequence) and len(steps) else Dataset()
    step_encoding = _encoding(step, encoding)
    patient_id = _identifier(_raw(found, "PatientID", encoding), LO, "patient ID")
    if not patient_id:
        raise BadEntry("no patient ID")
    scheduled = _raw(step, "ScheduledProcedureStepStartDate", "ascii").strip()
    on = _day(scheduled) if scheduled else day  # no date: the day asked for
    if on != day:
        raise BadEntry("not scheduled on the day asked" if on else "bad scheduled date")
    born = _day(_raw(found, "PatientBirthDate", "ascii"))
    sex = _code(_raw(found, "PatientSex", "ascii"))
    description = _raw(step, "ScheduledProcedureStepDescription", step_encoding) or _raw(
        found, "RequestedProcedureDescription", encoding
    )
    return {
        "scheduled_date": day.isoformat(),
        "scheduled_time": hh_mm(_raw(step, "ScheduledProcedureStepStartTime", "ascii")),
        "modality": _code(_raw(step, "Modality", "ascii")),
        "station_aet": _ae_title(_raw(step, "ScheduledStationAETitle", "ascii")),
        "patient_id": patient_id,
        "patient_name": _person_name(_raw(found, "PatientName", encoding)),
        "patient_birth_date": born.strftime("%Y%m%d") if born and born <= day else None,
        "patient_sex": sex if sex in ("M", "F", "O") else None,
        "accession_number": _identifier(
            _raw(found, "AccessionNumber", encoding), SH, "accession number"
        )
        or None,
        "study_instance_uid": _identifier(
            _raw(found, "StudyInstanceUID", "ascii"), UI, "study UID", UID
        )
        or None,
        "description": plain_text(description, LO) or None,
    }


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


def query(config: Config, day: date) -> Answer:
    """The procedures the worklist SCP has scheduled on ``day`` (at most MAX_ENTRIES
    answers read); PacsError if it cannot be asked."""
    target = parse_target(config.mwl_address)
    timeout = config.pacs_timeout_seconds
    deadline = time.monotonic() + max(QUERY_SECONDS, 4 * timeout)
    probe(target, timeout)
    ae = AE(ae_title=config.dicom_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(
        ModalityWorklistInformationFind, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    # Process-wide in pynetdicom (as STORE_RECV_CHUNKED_DATASET in ingest/scp.py): it
    # would otherwise convert every answer's values to log them, which warns on hostile
    # text and, when it fails, yields that answer twice (once without its identifier).
    _config.LOG_RESPONSE_IDENTIFIERS = False
    answer = Answer()
    try:
        assoc = ae.associate(target.host, target.port, ae_title=target.aet)
        if not assoc.is_established:
            raise PacsUnreachableError(f"worklist {target.address} refused the association")
        try:
            _read(assoc, config, day, answer, deadline, target.address)
        finally:
            assoc.release()  # nothing to release once aborted
    finally:
        ae.shutdown()
    return answer


def _read(assoc, config: Config, day: date, answer: Answer, deadline: float, address: str):
    received = 0
    request = _query(day, config.mwl_station_aet)
    for status, identifier in assoc.send_c_find(request, ModalityWorklistInformationFind):
        if "Status" not in status:
            raise PacsUnreachableError(f"worklist {address} did not answer")
        if status.Status not in PENDING:
            if status.Status != 0x0000:
                raise PacsError(f"worklist {address}: status 0x{status.Status:04X}")
            return
        if time.monotonic() > deadline:
            assoc.abort()
            raise PacsUnreachableError(f"worklist {address} took too long to answer")
        received += 1
        if received > MAX_ENTRIES:
            answer.cut_at = MAX_ENTRIES
            assoc.abort()  # stop it sending: the rest is not read
            return
        if identifier is None:  # pynetdicom could not decode it
            answer.drop("unreadable")
            continue
        try:
            answer.entries.append(parse_entry(identifier, day))
        except BadEntry as exc:
            answer.drop(str(exc))
        except Exception as exc:  # one malformed answer never costs the others
            log.warning("worklist: an answer could not be read: %r", exc)
            answer.drop("unreadable")


def refresh(store: Store, config: Config, day: date | None = None) -> int:
    """Ask the worklist for today (or ``day``) and cache the answer, deleting the days
    before yesterday; returns how many entries were kept (the cache is left alone, and
    the error recorded, when it cannot be asked or the disk is down to its reserve)."""
    day = day or today(config)
    try:
        answer = query(config, day)
        note = answer.note()
        if note:
            log.warning("worklist: %s", note)
        mwl.replace_day(store, day, answer.entries, reserve_mb=config.min_free_mb, note=note)
    except (PacsError, StorageFullError) as exc:
        mwl.record_failure(store, str(exc))
        raise
    return len(answer.entries)


def run_forever(store: Store, config: Config, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            count = refresh(store, config)
            log.info("worklist: %s procedures scheduled today", count)
        except (PacsError, StorageFullError) as exc:
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
        # A cached time is checked again: rows written before the checks may hold anything.
        scheduled = hh_mm(entry["scheduled_time"])
        minutes = int(scheduled[:2]) * 60 + int(scheduled[3:]) if scheduled else None
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
