"""A retina photo's patient result, per eye and for the patient, as the box sends it to
the hub (``patient_eyes`` in a result's payload) and states it in the DICOM SR and the
hub's FHIR report: one text for both, so PACS and the hub say the same (issue 24).

The summary is worked out on the box (store/eye_results.py); this module only reads it.
"""

from __future__ import annotations

from typing import Any

EYE_NAMES = {"R": "right eye", "L": "left eye"}
STATES = ("graded", "retake", "no photo")


def statement(summary: dict[str, Any]) -> str:
    """One sentence: this photo's eye, each eye's result from its best gradable photo,
    and the patient's (the worse eye's)."""
    this = EYE_NAMES.get(str(summary.get("this_eye") or "").upper(), "eye not known")
    parts = []
    eyes = summary.get("eyes") or {}
    for code in ("R", "L"):
        eye = eyes.get(code) or {}
        if eye.get("state") == "graded":
            said = f"{eye.get('triage')} (score {eye.get('score')})"
        elif eye.get("state") == "retake":
            said = "no gradable photo, retake"
        else:
            said = "no photo"
        parts.append(f"{EYE_NAMES[code]}: {said}")
    patient = summary.get("patient") or {}
    worse = patient.get("triage") or "not graded"
    return (
        f"This photo: {this}. Patient's retina photos that day, each eye from its best"
        f" gradable photo: {'; '.join(parts)}; patient (worse eye): {worse}."
    )
