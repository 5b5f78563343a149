"""A durable job queue in SQLite with leases.

A worker claims a job by writing a lease (owner + expiry). If the worker dies, the lease
runs out and the job is claimed again; nothing else has to notice the death.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from appliance.store.db import Store, utc_now

SCREEN = "screen"

# Lower runs first. A C-STORE marked HIGH (a sender's "stat") and an upload someone is
# waiting for at the screen go before a USB stick's backlog.
PRIORITY_URGENT = 10
PRIORITY_INTERACTIVE = 50
PRIORITY_NORMAL = 100
PRIORITY_LOW = 200


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    image_id: int
    attempts: int
    lease_owner: str


def enqueue(
    conn: sqlite3.Connection, kind: str, image_id: int, priority: int = PRIORITY_NORMAL
) -> None:
    """Add a job inside the caller's transaction (idempotent per kind and image)."""
    now = utc_now()
    conn.execute(
        "INSERT OR IGNORE INTO jobs (kind, image_id, priority, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (kind, image_id, priority, now, now),
    )


def claim(store: Store, owner: str, lease_seconds: float, max_attempts: int) -> Job | None:
    """Take the most urgent ready job, or one whose lease has run out."""
    now = time.time()
    with store.write() as conn:
        # A job whose lease ran out after too many attempts is given up on, so one
        # image that kills its worker cannot block the queue for ever.
        conn.execute(
            "UPDATE jobs SET state='failed', lease_owner=NULL, updated_at=?,"
            " last_error=COALESCE(last_error, 'worker stopped while processing')"
            " WHERE state='running' AND lease_expires < ? AND attempts >= ?",
            (utc_now(), now, max_attempts),
        )
        row = conn.execute(
            "SELECT id, kind, image_id, attempts FROM jobs"
            " WHERE state='queued' OR (state='running' AND lease_expires < ?)"
            " ORDER BY priority, id LIMIT 1",
            (now,),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE jobs SET state='running', attempts=attempts+1, lease_owner=?,"
            " lease_expires=?, updated_at=? WHERE id=?",
            (owner, now + lease_seconds, utc_now(), row["id"]),
        )
    return Job(row["id"], row["kind"], row["image_id"], row["attempts"] + 1, owner)


def complete(conn: sqlite3.Connection, job: Job) -> bool:
    """Mark done inside the caller's transaction; False if the lease was lost meanwhile."""
    cur = conn.execute(
        "UPDATE jobs SET state='done', lease_owner=NULL, lease_expires=NULL, updated_at=?"
        " WHERE id=? AND lease_owner=? AND state='running'",
        (utc_now(), job.id, job.lease_owner),
    )
    return cur.rowcount == 1


def fail(store: Store, job: Job, error: str, max_attempts: int) -> str:
    """Record a failed attempt: back to the queue, or failed for good. Returns the state."""
    state = "failed" if job.attempts >= max_attempts else "queued"
    with store.write() as conn:
        conn.execute(
            "UPDATE jobs SET state=?, lease_owner=NULL, lease_expires=NULL, last_error=?,"
            " updated_at=? WHERE id=? AND lease_owner=?",
            (state, error[:2000], utc_now(), job.id, job.lease_owner),
        )
    return state


def counts(store: Store) -> dict[str, int]:
    rows = store.conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
    result = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    result.update({row["state"]: row["n"] for row in rows})
    return result
