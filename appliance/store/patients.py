"""Attaching a patient to an image that arrived without one (a fundus camera's JPEG).

What a device sent is never changed: the typed ID is stored beside it, attributed and
audited, and the study's results go to the hub again (a new revision) with the patient.
One entry may cover several photos of a visit (``set_patients``): a photo that already
has another typed patient is left as it is, so a visit's boundary drawn in the wrong
place never moves a photo from one patient to another.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit, utc_now
from appliance.store.eyes import day_results
from appliance.store.patient_fields import (  # noqa: F401 - where callers find them
    PATIENT_ID_SQL,
    PATIENT_NAME_SQL,
)


class PatientError(ApplianceError):
    """A patient cannot be attached as asked."""


def _study_of(conn, image_id: int):
    return conn.execute(
        "SELECT s.id, s.patient_id, s.entered_patient_id FROM images i"
        " JOIN studies s ON s.id = i.study_id WHERE i.id = ?",
        (image_id,),
    ).fetchone()


def patient_of(store: Store, image_id: int) -> tuple[str, str] | None:
    """(ID, name) shown for an image (the device's, else the typed one), None if none."""
    row = (
        store.conn()
        .execute(
            f"SELECT {PATIENT_ID_SQL} AS pid, {PATIENT_NAME_SQL} AS name FROM images i"
            " JOIN studies s ON s.id = i.study_id WHERE i.id = ?",
            (image_id,),
        )
        .fetchone()
    )
    if row is None or not row["pid"]:
        return None
    return row["pid"], row["name"] or ""


def set_patient(
    store: Store,
    image_id: int,
    patient_id: str,
    patient_name: str,
    user: dict[str, Any],
    accession_number: str | None = None,
) -> None:
    """``accession_number``: from the worklist entry tapped, kept where the study has none."""
    set_patients(store, image_id, (), patient_id, patient_name, user, accession_number)


def set_patients(
    store: Store,
    image_id: int,
    also: Iterable[int],
    patient_id: str,
    patient_name: str,
    user: dict[str, Any],
    accession_number: str | None = None,
) -> list[int]:
    """Type the patient of ``image_id`` and of the images in ``also`` (its visit's other
    photos) that have no patient yet or had the same typed patient as ``image_id``
    (a correction). Returns the ids of the images changed, ``image_id`` first."""
    patient_id, patient_name = patient_id.strip(), patient_name.strip()
    if not patient_id or len(patient_id) > 64 or len(patient_name) > 128:
        raise PatientError("Type the patient ID (up to 64 characters).")
    changed = []
    with store.write() as conn:
        study = _study_of(conn, image_id)
        if study is None:
            raise PatientError("No such image.")
        if study["patient_id"]:
            raise PatientError("This image came with a patient ID from the device; it is kept.")
        before = study["entered_patient_id"]
        done: set[int] = set()
        typed: set[int] = set()  # results whose patient changes
        # The retina photos of the patient-days these photos leave, and then join: each
        # carries its patient's result, which this changes (store/eyes.py).
        others_day = day_results(conn, (image_id, *also))
        for other_id in (image_id, *also):
            other = _study_of(conn, other_id)
            if other is None or other["patient_id"] or other["id"] in done:
                continue
            if other_id != image_id and other["entered_patient_id"] not in (None, before):
                continue
            typed |= _enter(conn, other["id"], patient_id, patient_name, user["username"],
                            accession_number if other_id == image_id else None)
            done.add(other["id"])
            changed.append(other_id)
        # Sent again once every photo has its patient: each result once, with its
        # patient and its patient's retina result of the day.
        revise = (typed | others_day | day_results(conn, changed)) if changed else set()
        for result_id in sorted(revise):
            outbox.refresh_result(conn, result_id)
            pacs_outbox.revise(conn, result_id, "patient" if result_id in typed else "eyes")
    return changed


def _enter(conn, study_id: int, patient_id: str, patient_name: str, username: str,
           accession_number: str | None) -> set[int]:
    """Type the study's patient; returns its results (to be sent again)."""
    conn.execute(
        "UPDATE studies SET entered_patient_id=?, entered_patient_name=?, entered_by=?,"
        " entered_at=? WHERE id=?",
        (patient_id, patient_name or None, username, utc_now(), study_id),
    )
    audit(conn, username, "study.patient_entered", f"study:{study_id}", patient_id)
    if accession_number:  # the worklist entry's, kept where the study has none
        conn.execute(
            "UPDATE studies SET accession_number = ? WHERE id = ?"
            " AND COALESCE(accession_number, '') = ''",
            (accession_number[:16], study_id),
        )
    results = conn.execute(
        "SELECT r.id FROM results r JOIN images i ON i.id = r.image_id WHERE i.study_id = ?",
        (study_id,),
    ).fetchall()
    return {row["id"] for row in results}  # the hub and the SR name the patient
