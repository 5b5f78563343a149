"""Photos of one visit (store/visits.py) and one patient typed for them (patients.py)."""

from __future__ import annotations

from io import BytesIO

import cv2
import numpy as np
import pytest

from appliance.store.patients import PatientError, set_patient, set_patients
from appliance.store.visits import previous_photo, visit_of

USER = {"username": "nurse"}
GAP = 5.0  # minutes, the default visit_gap_minutes


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode(".png", cv2.resize(pixels, (256, 256)))[1].tobytes()


@pytest.fixture
def card(importer):
    """A camera card: photos at 0, 1 and 2 minutes, then 30 minutes later two more
    (the next patient); another card's photo at the same time; one received without
    a file time."""

    def put(seed: int, at: float | None, key: str = "usb:CARD") -> int:
        outcome = importer.import_stream(
            BytesIO(photo(seed)),
            source="usb",
            source_detail=key,
            original_name=f"IMG_{seed:04d}.PNG",
            visit_key=key,
            file_time=at,
        )
        assert outcome.status == "stored", outcome
        return outcome.image_id

    t0 = 1_790_000_000.0
    ids = {
        "a1": put(1, t0),
        "a2": put(2, t0 + 60),
        "a3": put(3, t0 + 120),
        "b1": put(4, t0 + 1920),
        "b2": put(5, t0 + 1980),
        "other": put(6, t0 + 60, key="usb:OTHER"),
        "now": put(7, None),
    }
    return ids


def test_photos_of_one_source_close_in_time_are_one_visit(store, card):
    first = [card["a1"], card["a2"], card["a3"]]
    assert [p["id"] for p in visit_of(store, card["a2"], GAP)] == first
    assert [p["id"] for p in visit_of(store, card["b2"], GAP)] == [card["b1"], card["b2"]]
    assert [p["id"] for p in visit_of(store, card["other"], GAP)] == [card["other"]]
    # A photo without a file time is timed when received: another clock, its own visit.
    assert [p["id"] for p in visit_of(store, card["now"], GAP)] == [card["now"]]
    assert [p["id"] for p in visit_of(store, card["a2"], 0)] == [card["a2"]]  # visits off
    # A gap of an hour joins the two patients' photos: the setting decides.
    assert len(visit_of(store, card["a1"], 60)) == 5


def test_one_entry_names_the_visit_but_never_moves_another_patients_photo(store, card):
    set_patient(store, card["a3"], "P-2", "", USER)  # typed earlier, for another patient
    changed = set_patients(
        store, card["a1"], [p["id"] for p in visit_of(store, card["a1"], GAP)], "P-1", "", USER
    )
    assert changed == [card["a1"], card["a2"]]
    patients = dict(
        store.conn().execute(
            "SELECT i.id, s.entered_patient_id FROM images i JOIN studies s ON s.id = i.study_id"
        )
    )
    assert patients[card["a3"]] == "P-2" and patients[card["b1"]] is None
    # Correcting a typo in the visit's ID corrects the photos that had it, and only them.
    changed = set_patients(store, card["a2"], [card["a1"], card["a3"]], "P-1b", "", USER)
    assert changed == [card["a2"], card["a1"]]
    audited = (
        store.conn()
        .execute("SELECT COUNT(*) FROM audit_log WHERE action = 'study.patient_entered'")
        .fetchone()[0]
    )
    assert audited == 5
    with pytest.raises(PatientError):
        set_patients(store, card["a1"], [], "  ", "", USER)


def test_the_previous_photo_is_the_one_taken_just_before_on_the_same_card(store, card):
    assert previous_photo(store, card["b1"])["id"] == card["a3"]  # across visits
    assert previous_photo(store, card["a1"]) is None
    assert previous_photo(store, card["other"]) is None  # another card
