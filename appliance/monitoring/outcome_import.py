"""Confirmatory outcomes and treatment starts imported from a lab register's CSV
(``appliance outcomes import``): every row read and checked, then all stored in one
transaction or none (the reading itself, its limits and encodings: lab_register.py; what
an outcome is: outcomes.py)."""

from __future__ import annotations

import io
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, BinaryIO

from appliance.monitoring import lab_register
from appliance.monitoring.outcomes import (
    ID_COLUMNS,
    REQUIRED_COLUMNS,
    TREATMENT_COLUMNS,
    OutcomeError,
    Reading,
    _insert,
    _insert_treatment,
    read_date,
    read_place,
    read_result,
    read_start,
    read_test,
)
from appliance.store.db import Store
from appliance.store.patients import PATIENT_ID_SQL


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
