"""Retina photos by eye (issue 24): which eye a photo shows, chosen by staff, and the
per-eye and per-patient result the page, the slip, the SR and the hub read
(worked out in store/eye_results.py).

- An eye is known from DICOM (``ImageLaterality``), the camera's file name
  (ingest/laterality.py) or one tap on the study page (:func:`set_eye`, audited).
- Whatever changes a patient's retina photos of a day (a photo screened, an eye chosen,
  a patient typed) sends every photo of that day to the hub and PACS again
  (:func:`revise_patient_days`): each carries its patient's result, which just changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.clinic_day import configured_timezone
from appliance.store.db import Store, audit
from appliance.store.eye_results import (  # noqa: F401 - the names callers know
    EYES,
    EyeResult,
    PatientEyes,
    patient_eyes,
)


class EyeError(ApplianceError):
    """An eye cannot be set as asked."""


def eyes_of(store: Store, image_id: int, timezone_name: str = "UTC") -> PatientEyes | None:
    """Per-eye and patient result of the retina photos of ``image_id``'s patient on the
    clinic's day it arrived; None when ``image_id`` is not a retina photo."""
    return patient_eyes(store.conn(), image_id, timezone_name)


def day_results(conn: sqlite3.Connection, image_ids: Iterable[int]) -> set[int]:
    """The latest result of every retina photo of the patient-days of ``image_ids``."""
    zone = configured_timezone(conn)
    found: set[int] = set()
    for image_id in image_ids:
        eyes = patient_eyes(conn, image_id, zone)
        if eyes is not None:
            found.update(eyes.result_ids)
    return found


def revise_patient_days(
    conn: sqlite3.Connection, result_ids: Iterable[int], done: Iterable[int] = ()
) -> None:
    """Send these retina results to the hub and PACS again (next revision): their
    patient's result changed. ``done``: results the caller has just queued itself."""
    for result_id in sorted(set(result_ids) - set(done)):
        outbox.refresh_result(conn, result_id)
        pacs_outbox.revise(conn, result_id, "eyes")


def set_eye(store: Store, image_id: int, eye: str, user: dict[str, Any]) -> None:
    """Which eye a photo shows, chosen by staff (one tap): audited; its result goes to
    the hub and PACS again with the eye. An eye the DICOM header gave is kept."""
    eye = (eye or "").strip().upper()
    if eye not in EYES:
        raise EyeError("Choose the right or the left eye.")
    with store.write() as conn:
        image = conn.execute(
            "SELECT file_format, laterality FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if image is None:
            raise EyeError("No such image.")
        if image["file_format"] == "dicom" and image["laterality"]:
            raise EyeError("The device gave this image's eye; it is kept.")
        if image["laterality"] == eye:
            return
        conn.execute("UPDATE images SET laterality = ? WHERE id = ?", (eye, image_id))
        audit(conn, user["username"], "image.eye_chosen", f"image:{image_id}", eye)
        own = [r["id"] for r in conn.execute("SELECT id FROM results WHERE image_id = ?",
                                             (image_id,))]
        for result_id in own:
            outbox.refresh_result(conn, result_id)
            pacs_outbox.revise(conn, result_id, "laterality")
        revise_patient_days(conn, day_results(conn, [image_id]), done=own)
