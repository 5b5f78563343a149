"""Removable volumes the box has seen, with what was found and imported from each."""

from __future__ import annotations

from typing import Any

from appliance.store.db import Store, utc_now


def mark_present(store: Store, path: str, label: str, importable: int, skipped: int) -> bool:
    """Record a volume as present; True when it is newly seen (or seen again after removal)."""
    now = utc_now()
    with store.write() as conn:
        row = conn.execute("SELECT id, present FROM volumes WHERE path=?", (path,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO volumes (path, label, first_seen, last_seen, importable, skipped)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (path, label, now, now, importable, skipped),
            )
            return True
        conn.execute(
            "UPDATE volumes SET present=1, last_seen=?, label=?, importable=?, skipped=?,"
            " state=CASE WHEN present=0 THEN 'seen' ELSE state END WHERE id=?",
            (now, label, importable, skipped, row["id"]),
        )
        return not row["present"]


def mark_absent_except(store: Store, present_paths: list[str]) -> None:
    marks = ", ".join("?" for _ in present_paths) or "''"
    with store.write() as conn:
        conn.execute(
            f"UPDATE volumes SET present=0 WHERE present=1 AND path NOT IN ({marks})",
            tuple(present_paths),
        )


def record_import(store: Store, path: str, counts: dict[str, int]) -> None:
    with store.write() as conn:
        conn.execute(
            "UPDATE volumes SET imported=imported+?, quarantined=quarantined+?,"
            " duplicates=duplicates+?, state='imported', last_seen=? WHERE path=?",
            (
                counts.get("stored", 0),
                counts.get("quarantined", 0) + counts.get("refused", 0),
                counts.get("duplicate", 0),
                utc_now(),
                path,
            ),
        )


def list_volumes(store: Store, present_only: bool = True) -> list[dict[str, Any]]:
    where = "WHERE present=1" if present_only else ""
    return [dict(r) for r in store.conn().execute(f"SELECT * FROM volumes {where} ORDER BY id")]
