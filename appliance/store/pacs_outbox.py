"""PACS deliveries in the outbox: one row per (result, configured PACS) and SR version.

The store never reads settings, so the configured PACS live in ``pacs_targets``
(``set_targets`` writes them from ``pacs_destinations`` at start-up). ``record_result``
and ``record_change`` run inside the caller's write transaction, like the hub's rows: a
result is never committed without its PACS rows. Each change to what the box says of a
result (a review, an outcome, a patient typed in) is the next *version* of its
Structured Report, the same number for every PACS; a pending older version is
superseded, since the sender always builds from what is known when it sends.

Each PACS keeps its own backoff here (``failures``, ``next_attempt_at``, wall clock so
it survives a restart); a row the PACS refused counts its tries in ``attempts``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from appliance.store import deliveries, outbox
from appliance.store.db import Store, utc_now

PACS = outbox.PACS


def set_targets(store: Store, targets: list[tuple[str, str]]) -> None:
    """Make ``(address, objects)`` the configured PACS; others stay, inactive, with
    their history (their pending rows wait until they are configured again)."""
    now = utc_now()
    with store.write() as conn:
        conn.execute("UPDATE pacs_targets SET active = 0, updated_at = ?", (now,))
        for address, objects in targets:
            conn.execute(
                "INSERT INTO pacs_targets (address, objects, active, updated_at)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (address) DO UPDATE SET"
                " objects = excluded.objects, active = 1, updated_at = excluded.updated_at",
                (address, objects, now),
            )


def targets(conn: sqlite3.Connection, *, active_only: bool = True) -> list[dict[str, Any]]:
    sql = "SELECT * FROM pacs_targets" + (" WHERE active = 1" if active_only else "")
    return [dict(row) for row in conn.execute(sql + " ORDER BY address")]


def record_result(conn: sqlite3.Connection, result_id: int, why: str = "result") -> int:
    """Queue the result's next SR version for every configured PACS; returns the version
    (0: no PACS configured, nothing queued)."""
    configured = targets(conn)
    if not configured:
        return 0
    image_id = conn.execute("SELECT image_id FROM results WHERE id = ?", (result_id,)).fetchone()[0]
    version = conn.execute(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM outbox"
        " WHERE destination = ? AND kind = 'result' AND local_id = ?",
        (PACS, result_id),
    ).fetchone()[0]
    for target in configured:
        entry_id = f"result:{result_id}@{target['address']}"
        conn.execute(
            "UPDATE outbox SET state = 'superseded'"
            " WHERE destination = ? AND entry_id = ? AND state = 'pending'",
            (PACS, entry_id),
        )
        outbox._add(  # the outbox's own insert (it checks destination and kind)
            conn,
            destination=PACS,
            entry_id=entry_id,
            revision=version,
            kind="result",
            local_id=result_id,
            image_id=image_id,
            payload={"address": target["address"], "version": version, "why": why},
        )
    return int(version)


def record_change(conn: sqlite3.Connection, image_id: int, why: str) -> int:
    """A review or outcome changed what the box says of an image: a new SR version of
    its latest result, where that result went to PACS before. Returns the version or 0."""
    row = conn.execute(
        "SELECT id FROM results WHERE image_id = ? ORDER BY id DESC LIMIT 1", (image_id,)
    ).fetchone()
    return 0 if row is None else revise(conn, row["id"], why)


def revise(conn: sqlite3.Connection, result_id: int, why: str) -> int:
    """The result's next SR version, where it went to PACS before; returns it or 0."""
    queued = conn.execute(
        "SELECT 1 FROM outbox WHERE destination = ? AND kind = 'result' AND local_id = ?",
        (PACS, result_id),
    ).fetchone()
    return 0 if queued is None else record_result(conn, result_id, why)


def pending_for(
    conn: sqlite3.Connection, address: str, max_attempts: int, limit: int = 50
) -> list[dict[str, Any]]:
    """The PACS's pending rows still worth trying, oldest first."""
    rows = conn.execute(
        "SELECT id, entry_id, revision, local_id, image_id, payload, attempts FROM outbox"
        " WHERE destination = ? AND state = 'pending' AND attempts < ?"
        " AND json_extract(payload, '$.address') = ? ORDER BY id LIMIT ?",
        (PACS, max_attempts, address, limit),
    ).fetchall()
    return [{**dict(row), "payload": json.loads(row["payload"])} for row in rows]


def mark_sent(store: Store, row: dict[str, Any]) -> None:
    deliveries.mark_acked(store, [(row["entry_id"], row["revision"])], PACS)


def mark_refused(store: Store, row_id: int, error: str) -> None:
    with store.write() as conn:
        conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:500], row_id),
        )


def target_attempt(
    store: Store, address: str, *, error: str | None = None, retry_at: float | None = None
) -> None:
    """Record a pass for one PACS: reached (``error`` None) or not, and when to retry."""
    now = utc_now()
    with store.write() as conn:
        if error is None:
            conn.execute(
                "UPDATE pacs_targets SET failures = 0, next_attempt_at = NULL,"
                " last_attempt_at = ?, last_success_at = ?, last_error = NULL WHERE address = ?",
                (now, now, address),
            )
        else:
            conn.execute(
                "UPDATE pacs_targets SET failures = failures + 1, next_attempt_at = ?,"
                " last_attempt_at = ?, last_error = ? WHERE address = ?",
                (retry_at, now, f"{now} {error}"[:500], address),
            )


def retry_everything(store: Store) -> int:
    """``appliance pacs send --all-pending``: forget backoffs and refusals; returns how
    many pending rows there are."""
    with store.write() as conn:
        conn.execute("UPDATE pacs_targets SET next_attempt_at = NULL")
        conn.execute(
            "UPDATE outbox SET attempts = 0 WHERE destination = ? AND state = 'pending'", (PACS,)
        )
        return conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE destination = ? AND state = 'pending'", (PACS,)
        ).fetchone()[0]


def counts(conn: sqlite3.Connection, address: str, max_attempts: int) -> dict[str, int]:
    """Rows for one PACS: pending (still tried), failed (refused too often), sent."""
    row = conn.execute(
        "SELECT SUM(state = 'pending' AND attempts < :max) AS pending,"
        " SUM(state = 'pending' AND attempts >= :max) AS failed,"
        " SUM(state = 'acked') AS sent FROM outbox"
        " WHERE destination = :pacs AND json_extract(payload, '$.address') = :address",
        {"max": max_attempts, "pacs": PACS, "address": address},
    ).fetchone()
    return {key: int(row[key] or 0) for key in ("pending", "failed", "sent")}
