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

Why this is long: an outcome and a treatment start share their readers (dates, names)
and the register's import, which checks every row of both before storing any; split,
the all-rows-or-none rule would span two modules. (A split of the import into its own
module is the next step if it grows again.)
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, BinaryIO

from appliance.errors import ApplianceError
from appliance.monitoring import lab_register
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


# -- import from a lab register's CSV -----------------------------------------------------
@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    already: int = 0
    images: int = 0
    treatments: int = 0
    treatments_already: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS, said
    problem_rows: int = 0

    MAX_PROBLEMS = 200  # a whole wrong file says so without a line per row

    @property
    def ok(self) -> bool:
        return not self.problem_rows

    def problem(self, text: str) -> None:
        self.problem_rows += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "already_on_the_box": self.already,
            "images": self.images,
            "treatments": self.treatments,
            "treatments_already_on_the_box": self.treatments_already,
            "problems": self.problems,
            "rows_with_problems": self.problem_rows,
            "ok": self.ok,
        }


def _register(source: str | BinaryIO, encoding: str) -> lab_register.RegisterFile:
    """The register, its needed columns checked (the reading itself: lab_register.py)."""
    if isinstance(source, str):  # text already in memory (a test, a library caller)
        source, encoding = io.BytesIO(source.encode("utf-8")), "utf-8-sig"
    register = lab_register.RegisterFile(source, encoding)
    missing = [c for c in REQUIRED_COLUMNS if c not in register.columns]
    if missing and "treatment_started" in register.columns:
        missing = []  # a register of treatment starts only
    if missing or not any(c in register.columns for c in ID_COLUMNS):
        raise OutcomeError(
            "The file needs the columns test, result and date (or treatment_started), and"
            " one of sop_instance_uid, original_name or patient_id (with date) to find the"
            " image."
        )
    return register


def _cells_problem(row: dict[str, str]) -> str | None:
    """The first value the import reads that cannot be taken, with its column."""
    for column in (*REQUIRED_COLUMNS, *ID_COLUMNS, *TREATMENT_COLUMNS):
        problem = lab_register.cell_problem(row.get(column, ""))
        if problem:
            return f"column {column}: {problem}"
    return None


def _image_day(row: sqlite3.Row) -> date | None:
    study_date = (row["study_date"] or "").strip()
    for value, pattern in ((study_date, "%Y%m%d"), (row["received_at"][:10], "%Y-%m-%d")):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    return None


def _match(conn: sqlite3.Connection, row: dict[str, str], day: date, window: int) -> list[int]:
    """The image ids a row names, or OutcomeError saying why none (or too many)."""
    if row.get("sop_instance_uid"):
        found = conn.execute(
            "SELECT id FROM images WHERE sop_instance_uid = ?", (row["sop_instance_uid"],)
        ).fetchall()
        if not found:
            raise OutcomeError(f"no image with SOP Instance UID {row['sop_instance_uid']}")
        return [found[0]["id"]]
    if row.get("original_name"):
        # An image that arrived again under another name was kept once, under its first
        # name; the later names are remembered beside it (image_other_names) and count too.
        found = conn.execute(
            "SELECT id FROM images WHERE original_name = ?"
            " UNION SELECT image_id FROM image_other_names WHERE name = ?",
            (row["original_name"], row["original_name"]),
        ).fetchall()
        if not found:
            raise OutcomeError(f"no image named {row['original_name']}")
        if len(found) > 1:
            raise OutcomeError(
                f"{len(found)} images are named {row['original_name']}: give the "
                "sop_instance_uid instead"
            )
        return [found[0]["id"]]
    if not row.get("patient_id"):
        raise OutcomeError("no sop_instance_uid, original_name or patient_id")
    found = conn.execute(
        "SELECT i.id, i.study_id, i.received_at, s.study_date FROM images i"
        f" JOIN studies s ON s.id = i.study_id WHERE {PATIENT_ID_SQL} = ?",
        (row["patient_id"],),
    ).fetchall()
    by_study: dict[int, tuple[int, list[int]]] = {}
    for image in found:
        taken = _image_day(image)
        if taken is None or abs((taken - day).days) > window:
            continue
        gap, ids = by_study.setdefault(image["study_id"], (abs((taken - day).days), []))
        ids.append(image["id"])
    if not by_study:
        raise OutcomeError(
            f"no image of patient {row['patient_id']} within {window} days of {day.isoformat()}"
        )
    nearest = min(gap for gap, _ in by_study.values())
    closest = [ids for gap, ids in by_study.values() if gap == nearest]
    if len(closest) > 1:
        raise OutcomeError(
            f"patient {row['patient_id']} has {len(closest)} studies equally near "
            f"{day.isoformat()}: give the sop_instance_uid or original_name"
        )
    return sorted(closest[0])


@dataclass(frozen=True)
class _Planned:
    """One image's share of one row: its outcome and/or its treatment start."""

    number: int
    image_id: int
    outcome: tuple[str, Reading, date] | None
    treatment: tuple[date, str] | None


def _read_row(
    row: dict[str, str],
) -> tuple[tuple[str, Reading, date] | None, tuple[date, str] | None]:
    """(test, reading, date) when the row gives a result; (start, place) when it gives
    a treatment start; OutcomeError when it gives neither or a value is wrong."""
    outcome = treatment = None
    if any(row.get(c) for c in REQUIRED_COLUMNS):
        outcome = (
            read_test(row.get("test", "")),
            read_result(row.get("result", "")),
            read_date(row.get("date", "")),
        )
    if row.get("treatment_started") or row.get("treatment_site"):
        treatment = (
            read_start(row.get("treatment_started", "")),
            read_place(row.get("treatment_site", "")),
        )
    if outcome is None and treatment is None:
        raise OutcomeError("no test result and no treatment start")
    return outcome, treatment


def _without_outcome(conn: sqlite3.Connection, planned: list[_Planned]) -> list[_Planned]:
    """The treatment starts whose image has no outcome, on the box or in the file."""
    in_file = {
        p.image_id for p in planned if p.outcome is not None and p.outcome[1].result != "withdrawn"
    }
    missing = []
    for p in planned:
        if p.treatment is None or p.image_id in in_file:
            continue
        held = conn.execute(
            "SELECT 1 FROM outcomes WHERE image_id = ? AND result <> 'withdrawn'", (p.image_id,)
        ).fetchone()
        if held is None:
            missing.append(p)
    return missing


def import_csv(
    store: Store,
    register: str | BinaryIO,
    *,
    entered_by: str,
    source: str,
    match_days: int,
    encoding: str = lab_register.DEFAULT_ENCODING,
) -> ImportReport:
    """Check every row first; store them all in one transaction only when every row is
    good (nothing half-imported). A row already on the box (same image, test, result and
    date; for a treatment start, same image, date and place) is skipped, so importing
    the same register again changes nothing.

    A row gives a result (test, result, date), a treatment start (treatment_started,
    treatment_site) or both; an image's treatment start needs its outcome, already on
    the box or in the same file. A treatment-only row matched by patient_id is matched
    with its treatment_started date.

    ``register`` is the CSV's text, or its file opened in binary (read a line at a time
    in ``encoding``, within lab_register.py's limits: a file it refuses raises
    ``RegisterError``, and nothing is imported)."""
    report = ImportReport()
    planned: list[_Planned] = []
    conn = store.conn()
    for number, row in _register(register, encoding).rows():
        report.rows += 1
        try:
            problem = _cells_problem(row)
            if problem:
                raise OutcomeError(problem)
            outcome, treatment = _read_row(row)
            day = outcome[2] if outcome is not None else treatment[0]  # type: ignore[index]
            images = _match(conn, row, day, match_days)
        except OutcomeError as exc:
            report.problem(f"row {number}: {exc}")
            continue
        planned += [_Planned(number, image_id, outcome, treatment) for image_id in images]
    for p in _without_outcome(conn, planned):
        report.problem(
            f"row {p.number}: a treatment start for an image without a test result: add the"
            " test, result and date columns to this row"
        )
    if not report.ok:
        return report
    with store.write() as conn:
        touched = set()
        for p in planned:
            if p.outcome is not None:
                test, reading, day = p.outcome
                same = conn.execute(
                    "SELECT 1 FROM outcomes WHERE image_id = ? AND test = ? AND result = ?"
                    " AND tested_on = ?",
                    (p.image_id, test, reading.result, day.isoformat()),
                ).fetchone()
                if same is not None:
                    report.already += 1
                else:
                    _insert(conn, p.image_id, test, reading, day, entered_by, source)
                    report.imported += 1
                    touched.add(p.image_id)
            if p.treatment is not None:
                start, place = p.treatment
                same = conn.execute(
                    "SELECT 1 FROM treatments WHERE image_id = ? AND started_on = ? AND site = ?",
                    (p.image_id, start.isoformat(), place),
                ).fetchone()
                if same is not None:
                    report.treatments_already += 1
                else:
                    _insert_treatment(conn, p.image_id, start, place, entered_by, source)
                    report.treatments += 1
                    touched.add(p.image_id)
        report.images = len(touched)
    return report
