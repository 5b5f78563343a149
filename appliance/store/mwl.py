"""The cached modality worklist: today's scheduled procedures as the RIS last gave them.

``replace_day`` swaps one day's entries for a fresh answer (in one transaction: a
reader sees the old list or the new one) and deletes the days before yesterday, so the
table holds at most two days of at most ``worklist.MAX_ENTRIES`` capped entries; it
refuses to write into the disk's free-space reserve. A failed query leaves the cache as it was,
so the page keeps offering patients during a RIS outage. ``accession_for`` runs inside
the transaction that stores a new DICOM study: an image whose patient ID is scheduled
that day gets the entry's accession number.
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from typing import Any

from appliance.store.db import Store, audit, utc_now
from appliance.store.files import ensure_free_space

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


def replace_day(
    store: Store,
    day: date,
    entries: list[dict[str, Any]],
    *,
    reserve_mb: int,
    note: str | None = None,
) -> None:
    """Cache ``entries`` as ``day``'s list (checked by pacs/worklist.py) and delete
    every other day but the one before (an image taken before midnight still finds
    its accession number). ``note``: what the answer lost, for the System page.
    StorageFullError, and nothing written, when the write would eat into the reserve."""
    ensure_free_space(store.data_dir, _bytes_needed(entries), reserve_mb)
    now = utc_now()
    kept = (day.isoformat(), (day - timedelta(days=1)).isoformat())
    with store.write() as conn:
        conn.execute("DELETE FROM mwl_entries WHERE scheduled_date NOT IN (?, ?)", kept)
        conn.execute("DELETE FROM mwl_entries WHERE scheduled_date = ?", (day.isoformat(),))
        conn.executemany(
            f"INSERT INTO mwl_entries ({', '.join(FIELDS)}, fetched_at)"
            f" VALUES ({', '.join('?' for _ in FIELDS)}, ?)",
            [(*(e.get(f) for f in FIELDS), now) for e in entries if e.get("patient_id")],
        )
        conn.execute(
            "UPDATE mwl_state SET last_attempt_at = ?, last_success_at = ?, last_error = ?,"
            " entries = ? WHERE id = 1",
            (now, now, note[:500] if note else None, len(entries)),
        )


def _bytes_needed(entries: list[dict[str, Any]]) -> int:
    # Each row is written twice (the WAL, then the table) and indexed once; 100 bytes
    # of row and page overhead each. An upper bound, not an estimate.
    text = sum(len(str(v).encode()) for e in entries for v in e.values() if v is not None)
    return 3 * (text + 100 * len(entries)) + (1 << 20)


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
