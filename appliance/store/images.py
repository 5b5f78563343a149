"""Studies, images and quarantine rows; every stored image enqueues its screening job."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from appliance.store import jobs, mwl
from appliance.store.db import Store, audit, utc_now
from appliance.store.worklist_items import refresh_item


@dataclass
class ImageRecord:
    """What the store keeps about one received image (metadata as received)."""

    sha256: str
    size_bytes: int
    file_format: str  # dicom, jpeg, png, tiff
    source: str  # dicom, usb, folder, upload, cli, recovered
    source_detail: str = ""
    original_name: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None  # DICOM DA, YYYYMMDD
    patient_age: str | None = None  # DICOM AS, e.g. 045Y
    study_date: str | None = None
    study_description: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    laterality: str | None = None
    rows: int | None = None
    columns: int | None = None
    frames: int | None = None
    # Which visit a photo may belong to (store/visits.py): its source as one key, and
    # when it was taken, in seconds on the clock ``taken_from`` names (exif, file,
    # received).
    visit_key: str | None = None
    taken_at: float | None = None
    taken_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_STUDY_FIELDS = (
    "patient_id",
    "patient_name",
    "study_date",
    "study_description",
    "accession_number",
    "patient_birth_date",
    "patient_age",
)
_IMAGE_FIELDS = (
    "sop_instance_uid",
    "series_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "modality",
    "body_part",
    "view_position",
    "laterality",
    "rows",
    "columns",
    "frames",
    "file_format",
    "source",
    "source_detail",
    "original_name",
    "sha256",
    "size_bytes",
    "visit_key",
    "taken_at",
    "taken_from",
)


def find_duplicate(
    conn: sqlite3.Connection, sop_instance_uid: str | None, sha256: str
) -> int | None:
    """The id of an image already held: same SOP Instance UID, else same bytes."""
    if sop_instance_uid:
        row = conn.execute(
            "SELECT id FROM images WHERE sop_instance_uid=?", (sop_instance_uid,)
        ).fetchone()
        if row:
            return row["id"]
    row = conn.execute("SELECT id FROM images WHERE sha256=?", (sha256,)).fetchone()
    return row["id"] if row else None


def insert_image(
    conn: sqlite3.Connection,
    record: ImageRecord,
    stored_path: str,
    priority: int = jobs.PRIORITY_NORMAL,
) -> int:
    """Insert study (if new), image, screening job and audit line: call inside one transaction."""
    now = utc_now()
    study = conn.execute(
        "SELECT id FROM studies WHERE study_instance_uid=?", (record.study_instance_uid,)
    ).fetchone()
    if study is None:
        cur = conn.execute(
            f"INSERT INTO studies (study_instance_uid, {', '.join(_STUDY_FIELDS)}, created_at)"
            f" VALUES (?, {', '.join('?' for _ in _STUDY_FIELDS)}, ?)",
            (record.study_instance_uid, *(getattr(record, f) for f in _STUDY_FIELDS), now),
        )
        study_id = cur.lastrowid
        day = mwl.iso_day(record.study_date)
        if record.patient_id and not record.accession_number and day:
            mwl.accession_for(conn, study_id, record.patient_id, day, record.modality)
    else:
        study_id = study["id"]
    columns = ", ".join(_IMAGE_FIELDS)
    marks = ", ".join("?" for _ in _IMAGE_FIELDS)
    cur = conn.execute(
        f"INSERT INTO images (study_id, {columns}, stored_path, received_at)"
        f" VALUES (?, {marks}, ?, ?)",
        (study_id, *(getattr(record, f) for f in _IMAGE_FIELDS), stored_path, now),
    )
    image_id = int(cur.lastrowid)
    jobs.enqueue(conn, jobs.SCREEN, image_id, priority)
    refresh_item(conn, image_id)
    audit(
        conn,
        record.source,
        "image.received",
        f"image:{image_id}",
        json.dumps(
            {"sop": record.sop_instance_uid, "sha256": record.sha256, "from": record.source_detail}
        ),
    )
    return image_id


def insert_quarantine(
    conn: sqlite3.Connection,
    *,
    sha256: str,
    reason: str,
    detail: str | None,
    source: str,
    source_detail: str,
    original_name: str,
    stored_path: str,
    size_bytes: int,
    image_id: int | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO quarantine (image_id, sha256, reason, detail, source, source_detail,"
        " original_name, stored_path, size_bytes, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            sha256,
            reason,
            detail,
            source,
            source_detail,
            original_name,
            stored_path,
            size_bytes,
            utc_now(),
        ),
    )
    quarantine_id = int(cur.lastrowid)
    audit(conn, source, "file.quarantined", f"quarantine:{quarantine_id}", reason)
    return quarantine_id


def quarantined_sha(conn: sqlite3.Connection, sha256: str) -> int | None:
    row = conn.execute("SELECT id FROM quarantine WHERE sha256=? LIMIT 1", (sha256,)).fetchone()
    return row["id"] if row else None


def list_studies(store: Store, limit: int = 500) -> list[dict[str, Any]]:
    """Studies, newest first, each with its images (for ``appliance studies``)."""
    conn = store.conn()
    studies = [
        dict(row)
        for row in conn.execute(
            "SELECT s.*, MAX(i.received_at) AS last_received FROM studies s"
            " JOIN images i ON i.study_id = s.id GROUP BY s.id"
            " ORDER BY last_received DESC LIMIT ?",
            (limit,),
        )
    ]
    if not studies:
        return []
    by_id = {s["id"]: s for s in studies}
    for s in studies:
        s["images"] = []
    marks = ", ".join("?" for _ in by_id)
    for row in conn.execute(
        "SELECT i.*, j.state AS job_state FROM images i"
        " LEFT JOIN jobs j ON j.image_id = i.id AND j.kind = 'screen'"
        f" WHERE i.study_id IN ({marks}) ORDER BY i.id",
        tuple(by_id),
    ):
        image = dict(row)
        image["decode_info"] = json.loads(image["decode_info"]) if image["decode_info"] else None
        by_id[image.pop("study_id")]["images"].append(image)
    return studies


def list_quarantine(store: Store, limit: int = 500) -> list[dict[str, Any]]:
    return [
        dict(row)
        for row in store.conn().execute(
            "SELECT * FROM quarantine ORDER BY id DESC LIMIT ?", (limit,)
        )
    ]
