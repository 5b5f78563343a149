"""Confirmatory outcomes: the reference result a lab or specialist gave for an image.

Entered on the study page or imported from a lab register's CSV; append-only (a
correction is a new outcome for the same test, which then counts instead); each one
audited and queued for the hub in the transaction that stores it.

What an image's reference is, for calibration: per test, the latest outcome entered;
the image is positive when any test's latest is positive, negative when every test's
latest is negative. ``indeterminate`` and ``withdrawn`` (entered in error) count as no
result for that test. A grade (0-4, the international diabetic retinopathy scale) is
positive from 2 (moderate) up, the fundus model's definition of referable.

Treatment started (a date and where) is recorded for an image that has an outcome, on
the study page or in the same lab register file (columns ``treatment_started`` and
``treatment_site``): it belongs to the image's latest positive outcome (else its latest
one) and travels to the hub as that outcome's next revision (``outbox.record_treatment``).
Append-only as well: a correction is a new treatment row, the latest counts.

The lab register's import (every row of both kinds checked before any is stored) is in
``outcome_import.py``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from appliance.errors import ApplianceError
from appliance.store import outbox, pacs_outbox
from appliance.store.db import Store, audit, utc_now
from appliance.store.patients import PATIENT_ID_SQL

TESTS = {
    "xpert": "Sputum Xpert MTB/RIF",
    "culture": "Culture",
    "smear": "Sputum smear microscopy",
    "radiologist": "Radiologist's read",
    "ophthalmologist": "Ophthalmologist's grade",
    "follow_up": "Clinical follow-up",
    "other": "Other test",
}
RESULTS = ("positive", "negative", "indeterminate", "withdrawn")
REFERABLE_GRADE = 2
MAX_GRADE = 4
_ALIASES = {"pos": "positive", "+": "positive", "neg": "negative", "-": "negative"}
ID_COLUMNS = ("sop_instance_uid", "original_name", "patient_id")
REQUIRED_COLUMNS = ("test", "result", "date")
TREATMENT_COLUMNS = ("treatment_started", "treatment_site")
MAX_PLACE_CHARS = 100


class OutcomeError(ApplianceError):
    """An outcome that cannot be recorded as given."""


@dataclass(frozen=True)
class Reading:
    """A result as written, normalised: text, positive (or None), grade (or None)."""

    result: str
    positive: bool | None
    grade: int | None


def read_result(text: str) -> Reading:
    value = " ".join(str(text).strip().lower().split())
    value = _ALIASES.get(value, value)
    if value in ("positive", "negative"):
        return Reading(value, value == "positive", None)
    if value in ("indeterminate", "withdrawn"):
        return Reading(value, None, None)
    match = re.fullmatch(r"(?:grade\s*)?([0-9])", value)
    if match and int(match.group(1)) <= MAX_GRADE:
        grade = int(match.group(1))
        return Reading(f"grade {grade}", grade >= REFERABLE_GRADE, grade)
    raise OutcomeError(
        "The result must be positive, negative, a grade from 0 to 4, indeterminate or withdrawn."
    )


def _printable(text: str) -> str:
    """Control characters (a pasted bell, a direction override) dropped, spaces folded:
    a test's name or a place travels to the hub, the PACS report and spreadsheets."""
    value = "".join(
        c for c in str(text) if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf")
    )
    return " ".join(value.split())


def read_test(text: str) -> str:
    value = _printable(text)
    if not value or len(value) > 60:
        raise OutcomeError("Name the test (up to 60 characters), e.g. xpert or culture.")
    for code, label in TESTS.items():
        if value.lower() in (code, label.lower()):
            return code
    return value


DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y")


def read_date(text: str, future: str = "The test date is in the future.") -> date:
    value = str(text).strip()
    for pattern in DATE_FORMATS:
        try:
            day = datetime.strptime(value, pattern).date()
        except ValueError:
            continue
        if day > date.today() + timedelta(days=1):
            raise OutcomeError(future)
        return day
    raise OutcomeError("The date must be written YYYY-MM-DD or DD/MM/YYYY (day first).")


def _insert(
    conn: sqlite3.Connection,
    image_id: int,
    test: str,
    reading: Reading,
    tested_on: date,
    entered_by: str,
    source: str,
) -> int:
    cur = conn.execute(
        "INSERT INTO outcomes (image_id, test, result, positive, grade, tested_on,"
        " entered_by, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_id,
            test,
            reading.result,
            None if reading.positive is None else int(reading.positive),
            reading.grade,
            tested_on.isoformat(),
            entered_by,
            source,
            utc_now(),
        ),
    )
    outcome_id = int(cur.lastrowid)
    outbox.record_outcome(conn, outcome_id)  # same transaction: the hub never misses it
    pacs_outbox.record_change(conn, image_id, "outcome")  # a new SR version
    audit(
        conn,
        entered_by,
        "outcome.added",
        f"image:{image_id}",
        json.dumps({"test": test, "result": reading.result, "date": tested_on.isoformat()}),
    )
    return outcome_id


def add_outcome(
    store: Store, *, image_id: int, user: dict[str, Any], test: str, result: str, tested_on: str
) -> int:
    """One outcome typed on the study page."""
    reading, code, day = read_result(result), read_test(test), read_date(tested_on)
    with store.write() as conn:
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise OutcomeError("There is no such image.")
        return _insert(conn, image_id, code, reading, day, user["username"], "page")


def read_start(text: str) -> date:
    return read_date(text, "The treatment start date is in the future.")


def read_place(text: str) -> str:
    value = _printable(text)
    if not value or len(value) > MAX_PLACE_CHARS:
        raise OutcomeError(
            "Say where the treatment started (up to 100 characters), e.g. the clinic's name."
        )
    return value


def _insert_treatment(
    conn: sqlite3.Connection,
    image_id: int,
    started_on: date,
    place: str,
    entered_by: str,
    source: str,
) -> int:
    """Treatment started for the image's latest positive outcome (else its latest)."""
    outcome = conn.execute(
        "SELECT id FROM outcomes WHERE image_id = ? AND result <> 'withdrawn'"
        " ORDER BY COALESCE(positive, 0) DESC, id DESC LIMIT 1",
        (image_id,),
    ).fetchone()
    if outcome is None:
        raise OutcomeError(
            "Enter the confirmatory test's result first: a treatment start goes with it."
        )
    cur = conn.execute(
        "INSERT INTO treatments (image_id, outcome_id, started_on, site, entered_by, source,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (image_id, outcome["id"], started_on.isoformat(), place, entered_by, source, utc_now()),
    )
    treatment_id = int(cur.lastrowid)
    outbox.record_treatment(conn, treatment_id)  # same transaction: the hub never misses it
    audit(
        conn,
        entered_by,
        "treatment.added",
        f"image:{image_id}",
        json.dumps({"started_on": started_on.isoformat(), "site": place}),
    )
    return treatment_id


def add_treatment(
    store: Store, *, image_id: int, user: dict[str, Any], started_on: str, place: str
) -> int:
    """Treatment started (a date and where), typed on the study page."""
    day, where = read_start(started_on), read_place(place)
    with store.write() as conn:
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise OutcomeError("There is no such image.")
        return _insert_treatment(conn, image_id, day, where, user["username"], "page")


def treatments_for(store: Store, image_id: int) -> list[dict[str, Any]]:
    rows = store.conn().execute(
        "SELECT * FROM treatments WHERE image_id = ? ORDER BY id DESC", (image_id,)
    )
    return [dict(row) for row in rows]


def outcomes_for(store: Store, image_id: int) -> list[dict[str, Any]]:
    rows = store.conn().execute(
        "SELECT * FROM outcomes WHERE image_id = ? ORDER BY id DESC", (image_id,)
    )
    return [dict(row) for row in rows]


def list_outcomes(store: Store, limit: int = 1000) -> list[dict[str, Any]]:
    """Newest first, with what identifies the image and its latest result."""
    rows = store.conn().execute(
        "SELECT o.*, i.sop_instance_uid, i.original_name, i.sha256,"
        f" {PATIENT_ID_SQL} AS patient_id, r.model_name, r.model_version, r.score,"
        " CASE WHEN r.probability IS NULL THEN NULL"
        " WHEN r.probability >= r.threshold THEN 1 ELSE 0 END AS flagged"
        " FROM outcomes o JOIN images i ON i.id = o.image_id"
        " JOIN studies s ON s.id = i.study_id"
        " LEFT JOIN results r ON r.id = (SELECT MAX(id) FROM results WHERE image_id = i.id)"
        " ORDER BY o.id DESC LIMIT ?",
        (limit,),
    )
    return [dict(row) for row in rows]


# The reference per image (see the module's docstring), in SQL for speed: tens of
# thousands of outcomes in a few milliseconds.
REFERENCE_SQL = """
    SELECT image_id, MAX(positive) AS positive FROM outcomes o
    WHERE o.id = (SELECT MAX(id) FROM outcomes l WHERE l.image_id = o.image_id
                  AND l.test = o.test)
      AND positive IS NOT NULL
    GROUP BY image_id
"""


def references(conn: sqlite3.Connection) -> dict[int, bool]:
    """image id -> confirmed positive (True) or negative (False)."""
    return {row[0]: bool(row[1]) for row in conn.execute(REFERENCE_SQL)}
