"""One result per eye and per patient for retina screening (issue 24), worked out from a
connection: what the study page, the slip, the SR and the hub's payload all read.

- An eye's result is that of its **best gradable photo**: the sharpest (the quality
  check's ``focus`` measure) of the photos the quality check passed; a photo a
  clinician had screened although it was refused (store/routes.py) only where the eye
  has no other.
- The patient's result is the **worse eye** (the higher score).
- An eye whose photos were all refused as ungradable needs a retake; an eye without a
  photo yet is named, so the nurse takes it before the patient leaves.

Worked out when asked (never stored): a photo retaken, an eye chosen or a patient typed
changes it at once, and the hub gets every photo of that patient's day again
(store/eyes.py ``revise_patient_day``). A photo without a patient stands alone.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.store.clinic_day import clinic_zone, day_bounds_utc
from appliance.store.patient_fields import PATIENT_ID_SQL

EYES = ("R", "L")


@dataclass
class EyeResult:
    eye: str
    photos: list[int] = field(default_factory=list)  # image ids, oldest first
    best: dict[str, Any] | None = None  # the best gradable photo's result (+ image_id)

    @property
    def needs_retake(self) -> bool:
        return bool(self.photos) and self.best is None

    @property
    def state(self) -> str:
        return "graded" if self.best is not None else "retake" if self.photos else "no photo"


@dataclass
class PatientEyes:
    eyes: dict[str, EyeResult]
    unassigned: list[int]  # retina photos whose eye is not known yet
    worse: dict[str, Any] | None  # the patient's result: the worse eye's
    day: str = ""  # the clinic's day the photos were taken (ISO date)
    result_ids: list[int] = field(default_factory=list)  # every photo's latest result

    @property
    def retake(self) -> list[str]:
        return [e for e in EYES if self.eyes[e].needs_retake]

    @property
    def missing(self) -> list[str]:
        return [e for e in EYES if not self.eyes[e].photos]

    def summary(self, this_eye: str | None) -> dict[str, Any]:
        """What the hub is sent (``patient_eyes``) and wire/eyes.py states."""
        eyes = {}
        for code in EYES:
            eye = self.eyes[code]
            best = eye.best or {}
            eyes[code] = {
                "state": eye.state,
                "photos": len(eye.photos),
                **({k: best[k] for k in _SCORED} if eye.best is not None else {}),
                **({"image_sha256": best["sha256"]} if eye.best is not None else {}),
            }
        worse = self.worse
        return {
            "this_eye": (this_eye or "").upper() or None,
            "day": self.day,
            "eyes": eyes,
            "patient": (
                {"eye": _eye_of(self, worse), **{k: worse[k] for k in _SCORED}}
                if worse is not None
                else None
            ),
            "unassigned": len(self.unassigned),
        }


_SCORED = ("triage", "score", "probability", "threshold")

_PHOTOS = f"""
    SELECT i.id AS image_id, i.sha256, i.laterality, i.received_at,
           {PATIENT_ID_SQL} AS patient_id,
           r.id AS result_id, r.route, r.score,
           r.probability, r.threshold, r.triage, r.model_name, r.model_version, r.quality
    FROM images i JOIN studies s ON s.id = i.study_id
    JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)
    WHERE {{where}} AND (r.route = 'fundus' OR (r.route = 'refused' AND r.quality IS NOT NULL))
    ORDER BY i.id
"""


def patient_eyes(
    conn: sqlite3.Connection, image_id: int, timezone_name: str = "UTC"
) -> PatientEyes | None:
    """Per-eye and patient result of the retina photos of ``image_id``'s patient on the
    clinic's day it arrived; None when ``image_id`` is not a retina photo."""
    # The photo itself first (by its id): anything but a retina photo ends here, so a
    # chest X-ray's page, slip, SR or hub payload costs one indexed look-up.
    own = conn.execute(_PHOTOS.format(where="i.id = ?"), (image_id,)).fetchone()
    if own is None:
        return None
    day = datetime.fromisoformat(own["received_at"]).astimezone(clinic_zone(timezone_name))
    photos = [dict(own)]
    if own["patient_id"]:
        start, end = day_bounds_utc(day.date(), timezone_name)
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
    return PatientEyes(
        eyes, unassigned, worse, day.date().isoformat(), [p["result_id"] for p in photos]
    )


def _eye_of(eyes: PatientEyes, photo: dict[str, Any]) -> str | None:
    return next((e for e in EYES if eyes.eyes[e].best is photo), None)


def _sharpness(photo: dict[str, Any]) -> tuple[bool, float]:
    """Photos the quality check passed before one a clinician had screened anyway; then
    the sharpest."""
    quality = json.loads(photo["quality"]) if photo.get("quality") else {}
    return (quality.get("gradable", True) is not False,
            float((quality.get("measures") or {}).get("focus", 0.0)))
