"""Attaching a patient to an image that arrived without one (a fundus camera's JPEG).

What a device sent is never changed: the typed ID is stored beside it, attributed and
audited, and the study's results go to the hub again (a new revision) with the patient.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit, utc_now

# Shown wherever a patient is shown: what the device sent, else what staff typed.
PATIENT_ID_SQL = "COALESCE(NULLIF(s.patient_id, ''), s.entered_patient_id)"
PATIENT_NAME_SQL = "COALESCE(NULLIF(s.patient_name, ''), s.entered_patient_name)"


class PatientError(ApplianceError):
    """A patient cannot be attached as asked."""


def set_patient(
    store: Store,
    image_id: int,
    patient_id: str,
    patient_name: str,
    user: dict[str, Any],
    accession_number: str | None = None,
) -> None:
    """``accession_number``: from the worklist entry tapped, kept where the study has none."""
    patient_id, patient_name = patient_id.strip(), patient_name.strip()
    if not patient_id or len(patient_id) > 64 or len(patient_name) > 128:
        raise PatientError("Type the patient ID (up to 64 characters).")
    with store.write() as conn:
        study = conn.execute(
            "SELECT s.id, s.patient_id FROM images i JOIN studies s ON s.id = i.study_id"
            " WHERE i.id = ?",
            (image_id,),
        ).fetchone()
        if study is None:
            raise PatientError("No such image.")
        if study["patient_id"]:
            raise PatientError("This image came with a patient ID from the device; it is kept.")
        conn.execute(
            "UPDATE studies SET entered_patient_id=?, entered_patient_name=?, entered_by=?,"
            " entered_at=? WHERE id=?",
            (patient_id, patient_name or None, user["username"], utc_now(), study["id"]),
        )
        audit(conn, user["username"], "study.patient_entered", f"study:{study['id']}", patient_id)
        if accession_number:
            conn.execute(
                "UPDATE studies SET accession_number = ? WHERE id = ?"
                " AND COALESCE(accession_number, '') = ''",
                (accession_number[:16], study["id"]),
            )
        results = conn.execute(
            "SELECT r.id FROM results r JOIN images i ON i.id = r.image_id WHERE i.study_id = ?",
            (study["id"],),
        ).fetchall()
        for row in results:
            outbox.refresh_result(conn, row["id"])
            pacs_outbox.revise(conn, row["id"], "patient")  # the SR names the patient
