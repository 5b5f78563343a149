"""What the box knows of one result, read from the store, for the DICOM objects.

The objects are built when they are sent, from what is known then: a review or
outcome recorded before the send is in the SR at once (the older version was
superseded in the outbox). The UIDs are derived from the image's sha256, the result's
id and the SR version, so building again gives the same objects: a resend replaces
nothing, and every PACS gets the same instance for the same version.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from appliance.store.db import Store
from appliance.store.eyes import PatientEyes, eyes_of
from appliance.store.patients import PATIENT_ID_SQL, PATIENT_NAME_SQL


def stable_uid(*parts: object) -> str:
    """A ``2.25.`` UID (PS3.5 B.2: a UUID as an integer) from a hash of ``parts``: the
    same parts, the same UID. (pydicom's ``generate_uid(prefix=None)`` is random.)"""
    digest = hashlib.sha256("\x1f".join(["appliance-pacs", *map(str, parts)]).encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


@dataclass
class ResultFacts:
    result: dict[str, Any]
    image: dict[str, Any]
    study: dict[str, Any]
    review: dict[str, Any] | None
    outcome: dict[str, Any] | None
    source: pydicom.Dataset | None  # the original DICOM's header; None: a JPEG or PNG
    preview: Path | None
    heatmap: Path | None
    version: int
    # A retina photo: its patient's result per eye that day (store/eyes.py).
    eyes: PatientEyes | None = None

    # -- the stable UIDs ---------------------------------------------------------
    @property
    def sha(self) -> str:
        return self.image["sha256"]

    @property
    def sr_series_uid(self) -> str:
        return stable_uid("sr-series", self.sha)

    @property
    def sr_uid(self) -> str:
        return self.sr_uid_of(self.version)

    def sr_uid_of(self, version: int) -> str:
        return stable_uid("sr", self.sha, self.result["id"], version)

    @property
    def sc_series_uid(self) -> str:
        return stable_uid("sc-series", self.sha)

    @property
    def sc_uid(self) -> str:
        # The patient is in the capture's header: a patient typed in later is a new one.
        patient = (self.study["shown_patient_id"], self.study["accession_number"])
        return stable_uid("sc", self.sha, self.result["id"], *patient)

    @property
    def device_uid(self) -> str:
        model = self.result
        return stable_uid("model", model["model_name"], model["model_version"])


def read_facts(
    store: Store, result_id: int, version: int, timezone_name: str = "UTC"
) -> ResultFacts:
    conn = store.conn()
    result = dict(conn.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone())
    image = dict(
        conn.execute("SELECT * FROM images WHERE id = ?", (result["image_id"],)).fetchone()
    )
    study = dict(
        conn.execute(
            f"SELECT s.*, {PATIENT_ID_SQL} AS shown_patient_id,"
            f" {PATIENT_NAME_SQL} AS shown_patient_name FROM studies s WHERE s.id = ?",
            (image["study_id"],),
        ).fetchone()
    )
    review = conn.execute(
        "SELECT r.verdict, r.reasons, r.note, r.created_at, u.username FROM reviews r"
        " JOIN users u ON u.id = r.user_id WHERE r.result_id = ? ORDER BY r.id DESC LIMIT 1",
        (result_id,),
    ).fetchone()
    outcome = conn.execute(
        "SELECT test, result, positive, tested_on FROM outcomes WHERE image_id = ?"
        " ORDER BY id DESC LIMIT 1",
        (image["id"],),
    ).fetchone()
    source = None
    if image["file_format"] == "dicom":
        source = pydicom.dcmread(store.data_dir / image["stored_path"], stop_before_pixels=True)
    return ResultFacts(
        result=result,
        image=image,
        study=study,
        review={**dict(review), "reasons": json.loads(review["reasons"])} if review else None,
        outcome=dict(outcome) if outcome else None,
        source=source,
        preview=_existing(store, image.get("preview_path")),
        heatmap=_drawn(store, result.get("heatmap_path")),
        version=version,
        eyes=eyes_of(store, image["id"], timezone_name),
    )


def _existing(store: Store, relative: str | None) -> Path | None:
    if not relative:
        return None
    path = store.data_dir / relative
    return path if path.exists() else None


# The worker writes a result's overlay just after the result is stored (worker.py): a
# sender that comes in between waits this long for it, then sends without it.
OVERLAY_WAIT_S = 2.0


def _drawn(store: Store, relative: str | None) -> Path | None:
    """The result's overlay, once written (None: no map shown, or it never came)."""
    deadline = time.monotonic() + OVERLAY_WAIT_S
    while True:
        path = _existing(store, relative)
        if path is not None or not relative or time.monotonic() >= deadline:
            return path
        time.sleep(0.05)
