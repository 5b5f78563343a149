"""The cached modality worklist: today's scheduled procedures as the RIS last gave them.

``replace_day`` swaps one day's entries for a fresh answer (in one transaction: a
reader sees the old list or the new one); a failed query leaves the cache as it was,
so the page keeps offering patients during a RIS outage. ``accession_for`` runs inside
the transaction that stores a new DICOM study: an image whose patient ID is scheduled
that day gets the entry's accession number.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.store.db import Store, audit, utc_now

FIELDS = (
    "scheduled_date",
    "scheduled_time",
    "modality",
    "station_aet",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "accession_number",
    "study_instance_uid",
    "description",
)


def replace_day(store: Store, day: str, entries: list[dict[str, Any]]) -> None:
    now = utc_now()
    with store.write() as conn:
        conn.execute("DELETE FROM mwl_entries WHERE scheduled_date = ?", (day,))
        conn.executemany(
            f"INSERT INTO mwl_entries ({', '.join(FIELDS)}, fetched_at)"
            f" VALUES ({', '.join('?' for _ in FIELDS)}, ?)",
            [(*(e.get(f) for f in FIELDS), now) for e in entries if e.get("patient_id")],
        )
        conn.execute(
            "UPDATE mwl_state SET last_attempt_at = ?, last_success_at = ?, last_error = NULL,"
            " entries = ? WHERE id = 1",
            (now, now, len(entries)),
        )


def record_failure(store: Store, error: str) -> None:
    with store.write() as conn:
        conn.execute(
            "UPDATE mwl_state SET last_attempt_at = ?, last_error = ? WHERE id = 1",
            (utc_now(), error[:500]),
        )


def state(conn: sqlite3.Connection) -> dict[str, Any]:
    return dict(conn.execute("SELECT * FROM mwl_state WHERE id = 1").fetchone())


def entries_for(conn: sqlite3.Connection, day: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM mwl_entries WHERE scheduled_date = ? ORDER BY scheduled_time, id", (day,)
    )
    return [dict(row) for row in rows]


def entry(conn: sqlite3.Connection, entry_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM mwl_entries WHERE id = ?", (entry_id,)).fetchone()
    return dict(row) if row else None


def accession_for(
    conn: sqlite3.Connection, study_id: int, patient_id: str, day: str, modality: str | None
) -> str | None:
    """Give a new study without an accession number the one its patient is scheduled
    under today (same modality where the entry names one); returns it or None."""
    rows = conn.execute(
        "SELECT accession_number, modality FROM mwl_entries WHERE scheduled_date = ?"
        " AND patient_id = ? AND COALESCE(accession_number, '') != '' ORDER BY scheduled_time",
        (day, patient_id),
    ).fetchall()
    found = [r["accession_number"] for r in rows if not r["modality"] or r["modality"] == modality]
    if not found:
        return None
    conn.execute("UPDATE studies SET accession_number = ? WHERE id = ?", (found[0], study_id))
    audit(conn, "worklist", "study.accession_from_worklist", f"study:{study_id}", found[0])
    return found[0]


def iso_day(value: str | None) -> str | None:
    """``YYYYMMDD`` (DICOM DA) or ``YYYY-MM-DD...`` as ``YYYY-MM-DD``; None otherwise."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    if len(text) >= 10 and text[4] == "-" and text[7] == "-":
        return text[:10]
    return None
