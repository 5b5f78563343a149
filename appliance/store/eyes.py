"""One result per eye and per patient for retina screening (issue 24), as IDx-DR and
EyeArt give it: a patient's retina photos of one day, grouped by eye.

- An eye is known from DICOM (``ImageLaterality``), the camera's file name
  (ingest/laterality.py) or one tap on the study page (:func:`set_eye`, audited).
- An eye's result is that of its **best gradable photo**: the sharpest (the quality
  check's ``focus`` measure) of the photos the quality check passed; a photo a
  clinician had screened although it was refused (store/routes.py) only where the eye
  has no other.
- The patient's result is the **worse eye** (the higher score).
- An eye whose photos were all refused as ungradable needs a retake; an eye without a
  photo yet is named, so the nurse takes it before the patient leaves.

Worked out when asked (never stored): a photo retaken, an eye chosen or a patient typed
changes it at once. A photo without a patient stands alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit
from appliance.store.patients import PATIENT_ID_SQL
from appliance.store.worklist import clinic_zone, day_bounds_utc

EYES = ("R", "L")


class EyeError(ApplianceError):
    """An eye cannot be set as asked."""


@dataclass
class EyeResult:
    eye: str
    photos: list[int] = field(default_factory=list)  # image ids, oldest first
    best: dict[str, Any] | None = None  # the best gradable photo's result (+ image_id)

    @property
    def needs_retake(self) -> bool:
        return bool(self.photos) and self.best is None


@dataclass
class PatientEyes:
    eyes: dict[str, EyeResult]
    unassigned: list[int]  # retina photos whose eye is not known yet
    worse: dict[str, Any] | None  # the patient's result: the worse eye's

    @property
    def retake(self) -> list[str]:
        return [e for e in EYES if self.eyes[e].needs_retake]

    @property
    def missing(self) -> list[str]:
        return [e for e in EYES if not self.eyes[e].photos]


_PHOTOS = f"""
    SELECT i.id AS image_id, i.laterality, i.received_at, {PATIENT_ID_SQL} AS patient_id,
           r.id AS result_id, r.route, r.score,
           r.probability, r.threshold, r.triage, r.model_name, r.model_version, r.quality
    FROM images i JOIN studies s ON s.id = i.study_id
    JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)
    WHERE {{where}} AND (r.route = 'fundus' OR (r.route = 'refused' AND r.quality IS NOT NULL))
    ORDER BY i.id
"""


def eyes_of(store: Store, image_id: int, timezone_name: str = "UTC") -> PatientEyes | None:
    """Per-eye and patient result of the retina photos of ``image_id``'s patient on the
    clinic's day it arrived; None when ``image_id`` is not a retina photo."""
    conn = store.conn()
    # The photo itself first (by its id): anything but a retina photo ends here, so a
    # chest X-ray's page, slip or SR costs one indexed look-up.
    own = conn.execute(_PHOTOS.format(where="i.id = ?"), (image_id,)).fetchone()
    if own is None:
        return None
    photos = [dict(own)]
    if own["patient_id"]:
        arrived = datetime.fromisoformat(own["received_at"])
        start, end = day_bounds_utc(
            arrived.astimezone(clinic_zone(timezone_name)).date(), timezone_name
        )
        photos = [
            dict(r)
            for r in conn.execute(
                _PHOTOS.format(
                    where=f"i.received_at >= ? AND i.received_at < ? AND {PATIENT_ID_SQL} = ?"
                ),
                (start, end, own["patient_id"]),
            )
        ]
    eyes = {e: EyeResult(e) for e in EYES}
    unassigned = []
    for photo in photos:
        eye = (photo["laterality"] or "").upper()
        if eye not in eyes:
            unassigned.append(photo["image_id"])
            continue
        eyes[eye].photos.append(photo["image_id"])
        if photo["route"] != "fundus":
            continue  # refused: not gradable
        best = eyes[eye].best
        if best is None or _sharpness(photo) >= _sharpness(best):
            eyes[eye].best = photo
    graded = [e.best for e in eyes.values() if e.best is not None]
    worse = max(graded, key=lambda p: (p["probability"], p["image_id"])) if graded else None
    return PatientEyes(eyes, unassigned, worse)


def _sharpness(photo: dict[str, Any]) -> tuple[bool, float]:
    """Photos the quality check passed before one a clinician had screened anyway; then
    the sharpest."""
    quality = json.loads(photo["quality"]) if photo.get("quality") else {}
    return (quality.get("gradable", True) is not False,
            float((quality.get("measures") or {}).get("focus", 0.0)))


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
        for row in conn.execute("SELECT id FROM results WHERE image_id = ?", (image_id,)):
            outbox.refresh_result(conn, row["id"])
            pacs_outbox.revise(conn, row["id"], "laterality")
