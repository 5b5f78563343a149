"""The patient's yes or no to improving the models (issue 27): per study, the latest
answer counts, every answer audited and kept (append-only)."""

from __future__ import annotations

import sqlite3

import pytest
from helpers import TESTS

from appliance.store.consent import (
    ConsentError,
    consent_of,
    consented_studies,
    record_consent,
)

CXR = TESTS / "data" / "cxr64"
NURSE = {"username": "nurse.tembe"}


@pytest.fixture
def images(importer) -> list[int]:
    names = ("IM-0135-0001.png", "IM-0151-0001.png")
    return [importer.import_path(CXR / n, source="usb").image_id for n in names]


def study_of(store, image_id: int) -> int:
    row = store.conn().execute("SELECT study_id FROM images WHERE id = ?", (image_id,))
    return row.fetchone()[0]


def test_the_latest_answer_of_a_study_counts_and_each_is_audited(store, images):
    first, second = images
    assert consent_of(store, first) is None and consented_studies(store.conn()) == set()
    record_consent(store, first, "yes", NURSE)
    record_consent(store, second, "yes", NURSE)
    record_consent(store, second, "no", {"username": "dr.banda"})
    assert consent_of(store, second)["answer"] == "no"
    assert consent_of(store, second)["answered_by"] == "dr.banda"
    assert consented_studies(store.conn()) == {study_of(store, first)}
    audit = store.conn().execute(
        "SELECT actor, subject, detail FROM audit_log WHERE action = 'training.consent'"
        " ORDER BY id"
    ).fetchall()
    assert [tuple(a) for a in audit] == [
        ("nurse.tembe", f"study:{study_of(store, first)}", "yes"),
        ("nurse.tembe", f"study:{study_of(store, second)}", "yes"),
        ("dr.banda", f"study:{study_of(store, second)}", "no"),
    ]


def test_answers_are_never_changed_and_only_yes_or_no_is_taken(store, images):
    record_consent(store, images[0], "yes", NURSE)
    for sql in ("UPDATE training_consent SET answer = 'no'", "DELETE FROM training_consent"):
        with pytest.raises(sqlite3.DatabaseError, match="never"):
            store.conn().execute(sql)
    for answer in ("maybe", "YES", ""):
        with pytest.raises(ConsentError, match="Choose yes or no"):
            record_consent(store, images[0], answer, NURSE)
    with pytest.raises(ConsentError, match="no such image"):
        record_consent(store, 999, "yes", NURSE)
    assert "m023_training_consent" in store.applied_migrations()
