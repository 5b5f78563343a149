"""A durable job queue in SQLite with leases.

A worker claims a job by writing a lease: its owner (``host:pid:name``) and when it runs
out. If the worker dies, the lease runs out and the job is claimed again; nothing else
has to notice the death. At start-up ``appliance serve`` also hands back at once the
leases its own host's dead processes held (``release_dead_leases``), so after a power
cut the interrupted jobs are screened again without waiting for their leases.

Lease time, and why not the wall clock: a box without a real-time-clock battery boots
at 1970 or at its build date and jumps years ahead when NTP first answers (and an
operator may set the clock back). Wall-clock leases would all run out at once on a jump
forward, taking jobs from live workers, and would last years after a jump back. So a
lease is measured on ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process
on the machine, never set by NTP or by hand, started again at boot): ``lease_taken``
and ``lease_expires`` are points on it, and the rule is

    a lease has run out  <=>  now >= lease_expires          (its time is up), or
                              now <  lease_taken            (taken on an earlier boot's
                                                             clock: its holder is gone), or
                              lease_taken IS NULL           (taken before this rule).

so a live holder never loses its lease early whatever the wall clock does, and a lease
from before a reboot is honoured at most one lease period (``now`` is past
``lease_taken``, so ``lease_expires`` is less than a period away).

Waiting for disk space. A full disk is not the image's fault: a job that meets one goes
back to the queue (``wait_for_disk``) with its attempt given back, and is not offered
again before ``not_before``: 5 s after its first wait, doubling up to 5 minutes
(``disk_waits`` counts the waits in a row). ``not_before`` is a point on the same
monotonic clock as leases; one further ahead than the longest wait was set on an earlier
boot's clock, and the job is ready now. ``wake_waiting`` lets every waiting job go at
once: a worker calls it when it sees space come back.

A screening that has failed for good shows as failed on the worklist (its row is
refreshed with the job) until someone queues it again (``retry_failed``).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.store.db import Store, audit, utc_now
from appliance.store.worklist_items import refresh_item

SCREEN = "screen"

# Lower runs first. A C-STORE marked HIGH (a sender's "stat") and an upload someone is
# waiting for at the screen go before a USB stick's backlog.
PRIORITY_URGENT = 10
PRIORITY_INTERACTIVE = 50
PRIORITY_NORMAL = 100
PRIORITY_LOW = 200

# The module docstring's rule, for a ``:now`` read from the monotonic clock.
_LEASE_RUN_OUT = "(lease_taken IS NULL OR lease_taken > :now OR lease_expires <= :now)"
_GIVEN_UP = "worker stopped while processing"

# Waiting for disk space (module docstring): the first wait, and the longest.
DISK_WAIT_FIRST = 5.0
DISK_WAIT_LONGEST = 300.0
_NOT_WAITING = (
    f"(not_before IS NULL OR not_before <= :now OR not_before > :now + {DISK_WAIT_LONGEST})"
)


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


def lease_owner(name: str) -> str:
    """``host:pid:name``: a lease names the host and process holding it, so a restart
    can tell its dead predecessor's leases from a live process's."""
    return f"{socket.gethostname()}:{os.getpid()}:{name}"


def claim(
    store: Store,
    owner: str,
    lease_seconds: float,
    max_attempts: int,
    clock: Callable[[], float] = time.monotonic,
) -> Job | None:
    """Take the most urgent ready job, or one whose lease has run out (module docstring).

    ``clock`` must be monotonic and shared by every process on the machine. The claim
    need not wait for the disk: after a power cut every lease is void anyway."""
    with store.write(durable=False) as conn:
        # why: read the clock only once the write lock is held. Taken before, a worker
        # that waited for the lock would judge a lease another worker took meanwhile as
        # taken "in the future" (a clock reset), hence run out, and claim the job again.
        now = clock()
        # A job whose lease ran out after too many attempts is given up on, so one
        # image that kills its worker cannot block the queue for ever.
        given_up = conn.execute(
            "UPDATE jobs SET state='failed', lease_owner=NULL, lease_taken=NULL,"
            " lease_expires=NULL, updated_at=:at, last_error=COALESCE(last_error, :why)"
            f" WHERE state='running' AND attempts >= :max AND {_LEASE_RUN_OUT}"
            " RETURNING kind, image_id",
            {"at": utc_now(), "why": _GIVEN_UP, "max": max_attempts, "now": now},
        ).fetchall()
        _show_failed(conn, given_up)
        row = conn.execute(
            "SELECT id, kind, image_id, attempts FROM jobs"
            f" WHERE (state='queued' AND {_NOT_WAITING})"
            f" OR (state='running' AND {_LEASE_RUN_OUT})"
            " ORDER BY priority, id LIMIT 1",
            {"now": now},
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE jobs SET state='running', attempts=attempts+1, lease_owner=?,"
            " lease_taken=?, lease_expires=?, updated_at=? WHERE id=?",
            (owner, now, now + lease_seconds, utc_now(), row["id"]),
        )
    return Job(row["id"], row["kind"], row["image_id"], row["attempts"] + 1, owner)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def release_dead_leases(store: Store, max_attempts: int) -> int:
    """Hand back now the leases this host's dead processes held; returns how many.

    Call at start-up, before this process's own workers claim anything: a lease that
    carries this process's pid then comes from an earlier boot, whose process had the
    same pid. Leases of other hosts, of live processes and of unknown owners keep to
    their time. A job that has used up its attempts is given up on, as in ``claim``.
    """
    host, me = socket.gethostname(), os.getpid()
    dead = []
    with store.write() as conn:
        for row in conn.execute(
            "SELECT id, kind, image_id, lease_owner, attempts FROM jobs WHERE state='running'"
        ).fetchall():
            owner_host, _, rest = (row["lease_owner"] or "").partition(":")
            pid = rest.partition(":")[0]
            if owner_host == host and pid.isdigit():
                if int(pid) == me or not _process_alive(int(pid)):
                    dead.append(row)
        conn.executemany(
            "UPDATE jobs SET state=:state, lease_owner=NULL, lease_taken=NULL,"
            " lease_expires=NULL, updated_at=:at,"
            " last_error=CASE WHEN :state='failed' THEN COALESCE(last_error, :why)"
            " ELSE last_error END WHERE id=:id",
            [
                {
                    "state": "failed" if row["attempts"] >= max_attempts else "queued",
                    "at": utc_now(),
                    "why": _GIVEN_UP,
                    "id": row["id"],
                }
                for row in dead
            ],
        )
        _show_failed(conn, [row for row in dead if row["attempts"] >= max_attempts])
    return len(dead)


def _show_failed(conn: sqlite3.Connection, rows) -> None:
    """Jobs just failed for good: their images' worklist rows say so (screenings only)."""
    for row in rows:
        if row["kind"] == SCREEN:
            refresh_item(conn, row["image_id"])


def complete(conn: sqlite3.Connection, job: Job) -> bool:
    """Mark done inside the caller's transaction; False if the lease was lost meanwhile."""
    cur = conn.execute(
        "UPDATE jobs SET state='done', lease_owner=NULL, lease_taken=NULL, lease_expires=NULL,"
        " not_before=NULL, disk_waits=0, updated_at=?"
        " WHERE id=? AND lease_owner=? AND state='running'",
        (utc_now(), job.id, job.lease_owner),
    )
    return cur.rowcount == 1


def fail(store: Store, job: Job, error: str, max_attempts: int) -> str:
    """Record a failed attempt: back to the queue, or failed for good. Returns the state."""
    state = "failed" if job.attempts >= max_attempts else "queued"
    with store.write() as conn:
        cur = conn.execute(
            "UPDATE jobs SET state=?, lease_owner=NULL, lease_taken=NULL, lease_expires=NULL,"
            " last_error=?, updated_at=? WHERE id=? AND lease_owner=?",
            (state, error[:2000], utc_now(), job.id, job.lease_owner),
        )
        if state == "failed" and cur.rowcount:
            _show_failed(conn, [{"kind": job.kind, "image_id": job.image_id}])
    return state


def disk_wait_seconds(waits_so_far: int) -> float:
    """How long a job waits after meeting a full disk for the (n+1)th time in a row."""
    return min(DISK_WAIT_LONGEST, DISK_WAIT_FIRST * 2 ** min(waits_so_far, 16))


def wait_for_disk(
    store: Store, job: Job, error: str, clock: Callable[[], float] = time.monotonic
) -> float | None:
    """Put a job that met a full disk back in the queue without spending its attempt,
    not to be offered again for a while (module docstring). Returns the wait in
    seconds, or None if the lease was lost meanwhile (someone else has the job)."""
    with store.write() as conn:
        row = conn.execute(
            "SELECT disk_waits FROM jobs WHERE id=? AND lease_owner=? AND state='running'",
            (job.id, job.lease_owner),
        ).fetchone()
        if row is None:
            return None
        wait = disk_wait_seconds(row["disk_waits"])
        # The decode (if any) is over: the next attempt need not decode in a child.
        conn.execute(
            "UPDATE jobs SET state='queued', attempts=MAX(attempts - 1, 0), lease_owner=NULL,"
            " lease_taken=NULL, lease_expires=NULL, not_before=?, disk_waits=disk_waits + 1,"
            " decoding_since=NULL, last_error=?, updated_at=? WHERE id=?",
            (clock() + wait, f"waiting for disk space: {error}"[:2000], utc_now(), job.id),
        )
    return wait


def wake_waiting(store: Store) -> int:
    """Space is back: every job waiting for disk space may go now. Returns how many."""
    with store.write() as conn:
        cur = conn.execute(
            "UPDATE jobs SET not_before=NULL, disk_waits=0, updated_at=?"
            " WHERE state='queued' AND not_before IS NOT NULL",
            (utc_now(),),
        )
    return cur.rowcount


def waiting_for_disk(store: Store) -> int:
    """How many jobs are waiting for disk space now."""
    row = (
        store.conn()
        .execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND disk_waits > 0")
        .fetchone()
    )
    return row[0]


def failed_screenings(store: Store) -> int:
    """How many images' screenings have failed for good (``retry_failed`` queues them)."""
    row = (
        store.conn()
        .execute("SELECT COUNT(*) FROM jobs WHERE kind=? AND state='failed'", (SCREEN,))
        .fetchone()
    )
    return row[0]


def retry_failed(store: Store, actor: str, image_id: int | None = None) -> int:
    """Queue failed screenings again with fresh attempts (every one, or one image's),
    audited per image. The note that a decode stopped the box stays: such an image is
    decoded again only in a memory-limited child (worker.py). Returns how many."""
    only_one = "" if image_id is None else " AND image_id = :image"
    with store.write() as conn:
        retried = conn.execute(
            "UPDATE jobs SET state='queued', attempts=0, lease_owner=NULL, lease_taken=NULL,"
            " lease_expires=NULL, not_before=NULL, disk_waits=0, last_error=NULL,"
            " priority=MIN(priority, :priority), updated_at=:at"
            f" WHERE kind=:kind AND state='failed'{only_one}"
            " RETURNING image_id",
            {"priority": PRIORITY_INTERACTIVE, "at": utc_now(), "kind": SCREEN, "image": image_id},
        ).fetchall()
        for row in retried:
            refresh_item(conn, row["image_id"])
            audit(conn, actor, "screening.retried", f"image:{row['image_id']}")
    if retried:
        store.jobs_waiting.set()
    return len(retried)


def counts(store: Store) -> dict[str, int]:
    rows = store.conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
    result = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    result.update({row["state"]: row["n"] for row in rows})
    return result


def requeue(
    conn: sqlite3.Connection, kind: str, image_id: int, priority: int = PRIORITY_INTERACTIVE
) -> None:
    """Screen an image again (inside the caller's transaction): its finished job goes
    back to the queue with fresh attempts, or a job is added if it never had one. A job
    still queued or running is left alone: it will read what the caller wrote."""
    now = utc_now()
    conn.execute(
        "UPDATE jobs SET state='queued', attempts=0, priority=MIN(priority, ?), last_error=NULL,"
        " lease_owner=NULL, lease_taken=NULL, lease_expires=NULL, not_before=NULL,"
        " disk_waits=0, updated_at=?"
        " WHERE kind=? AND image_id=? AND state IN ('done', 'failed')",
        (priority, now, kind, image_id),
    )
    enqueue(conn, kind, image_id, priority)
