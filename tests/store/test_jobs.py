import os
import socket
import subprocess
import sys
import threading
import time

from sqlite_utils import Database

from appliance.store import jobs
from appliance.store.db import Store, utc_now
from appliance.store.migrations import migrations
from appliance.store.worklist_items import refresh_item


def _image(store, n: int) -> int:
    with store.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO studies (id, study_instance_uid, created_at)"
            " VALUES (1, '1.2', ?)",
            (utc_now(),),
        )
        cur = conn.execute(
            "INSERT INTO images (study_id, file_format, source, sha256, size_bytes, stored_path,"
            " received_at) VALUES (1, 'png', 'test', ?, 1, 'x', ?)",
            (f"sha{n}", utc_now()),
        )
        return cur.lastrowid


def test_urgent_jobs_first_then_oldest(store):
    ids = [_image(store, n) for n in range(3)]
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, ids[0], priority=100)
        jobs.enqueue(conn, jobs.SCREEN, ids[1], priority=10)
        jobs.enqueue(conn, jobs.SCREEN, ids[2], priority=100)
        jobs.enqueue(conn, jobs.SCREEN, ids[2], priority=100)  # idempotent
    order = []
    while (job := jobs.claim(store, "w", 60, 3)) is not None:
        order.append(job.image_id)
        with store.write() as conn:
            assert jobs.complete(conn, job)
    assert order == [ids[1], ids[0], ids[2]]
    assert jobs.counts(store)["done"] == 3


def test_a_dead_workers_job_is_claimed_again_after_its_lease(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    dead = jobs.claim(store, "worker-that-dies", lease_seconds=0.2, max_attempts=3)
    assert dead is not None
    assert jobs.claim(store, "other", 60, 3) is None  # leased: not offered
    time.sleep(0.3)
    again = jobs.claim(store, "other", 60, 3)
    assert again is not None and again.id == dead.id and again.attempts == 2
    with store.write() as conn:
        assert not jobs.complete(conn, dead)  # the old lease no longer counts
        assert jobs.complete(conn, again)


def test_failures_retry_then_give_up(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    for attempt in (1, 2):
        job = jobs.claim(store, "w", 60, max_attempts=2)
        assert job.attempts == attempt
        state = jobs.fail(store, job, "boom", max_attempts=2)
    assert state == "failed"
    assert jobs.claim(store, "w", 60, 2) is None
    row = store.conn().execute("SELECT state, last_error FROM jobs").fetchone()
    assert tuple(row) == ("failed", "boom")


def test_a_job_that_keeps_killing_its_worker_is_given_up(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    for _ in range(2):
        assert jobs.claim(store, "w", lease_seconds=0.05, max_attempts=2) is not None
        time.sleep(0.1)
    assert jobs.claim(store, "w", 60, max_attempts=2) is None
    assert jobs.counts(store)["failed"] == 1


# -- leases across restarts and clock jumps -------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_up_hands_back_the_leases_of_this_hosts_dead_processes(store):
    ids = [_image(store, n) for n in range(5)]
    with store.write() as conn:
        for image_id in ids:
            jobs.enqueue(conn, jobs.SCREEN, image_id)
    host, gone = socket.gethostname(), dead_pid()
    owners = [
        f"{host}:{gone}:worker-0",  # the process a power cut or kill -9 ended
        f"{host}:{os.getpid()}:worker-1",  # our pid, before we claimed: an earlier boot's
        f"{host}:{os.getppid()}:worker-0",  # a live process (e.g. `appliance work`)
        f"other-box:{gone}:worker-0",  # another host's pid means nothing here
        "cli",  # an owner that names no process
    ]
    for owner in owners:
        assert jobs.claim(store, owner, lease_seconds=3600, max_attempts=3) is not None

    assert jobs.release_dead_leases(store, max_attempts=3) == 2

    states = dict(store.conn().execute("SELECT image_id, state FROM jobs"))
    assert [states[i] for i in ids] == ["queued", "queued", "running", "running", "running"]
    again = [jobs.claim(store, "next", 3600, 3) for _ in range(3)]
    assert [j.image_id if j else None for j in again] == [ids[0], ids[1], None]
    assert again[0].attempts == 2  # the interrupted attempt still counts


def test_a_job_that_took_its_process_down_too_often_is_given_up_at_start_up(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    owner = f"{socket.gethostname()}:{dead_pid()}:worker-0"
    for _ in range(2):
        jobs.claim(store, owner, lease_seconds=3600, max_attempts=2)
        jobs.release_dead_leases(store, max_attempts=2)
    row = store.conn().execute("SELECT state, last_error FROM jobs").fetchone()
    assert tuple(row) == ("failed", "worker stopped while processing")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lease_time_is_monotonic_and_a_lease_from_an_earlier_boot_runs_out(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    clock = Clock(5000.0)  # seconds since boot, on the first boot
    assert jobs.claim(store, "first", lease_seconds=60, max_attempts=5, clock=clock)
    clock.now = 5059.9
    assert jobs.claim(store, "second", 60, 5, clock=clock) is None  # not a moment early
    clock.now = 5060.0
    assert jobs.claim(store, "second", 60, 5, clock=clock) is not None  # nor late
    clock.now = 12.0  # rebooted: the monotonic clock started again, "second" is gone
    third = jobs.claim(store, "third", 60, 5, clock=clock)
    assert third is not None and third.attempts == 3


def test_a_wall_clock_jump_forward_takes_no_lease_early(store, monkeypatch):
    """NTP answering for the first time after a boot without an RTC battery: years on."""
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    assert jobs.claim(store, "live", lease_seconds=60, max_attempts=3) is not None
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real + 3 * 365 * 86400)
    assert jobs.claim(store, "another", 60, 3) is None


def test_a_wall_clock_jump_back_does_not_stretch_a_lease(store, monkeypatch):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    assert jobs.claim(store, "dies", lease_seconds=0.2, max_attempts=3) is not None
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real - 3 * 365 * 86400)
    time.sleep(0.3)
    assert jobs.claim(store, "another", 60, 3) is not None


# -- a full disk, and failed screenings tried again -----------------------------------


def test_a_job_that_met_a_full_disk_waits_without_spending_its_attempt(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    clock = Clock(1000.0)
    waits = []
    for _ in range(10):
        job = jobs.claim(store, "w", 60, max_attempts=1, clock=clock)
        assert job is not None and job.attempts == 1  # never more: none is spent
        waits.append(jobs.wait_for_disk(store, job, "StorageFullError: full", clock=clock))
        clock.now += waits[-1] - 0.1
        assert jobs.claim(store, "w", 60, 1, clock=clock) is None  # not a moment early
        clock.now += 0.1
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]  # doubling, capped
    row = (
        store.conn().execute("SELECT state, attempts, disk_waits, last_error FROM jobs").fetchone()
    )
    assert tuple(row) == ("queued", 0, 10, "waiting for disk space: StorageFullError: full")
    assert jobs.waiting_for_disk(store) == 1 and jobs.counts(store)["failed"] == 0
    job = jobs.claim(store, "w", 60, 1, clock=clock)
    with store.write() as conn:
        assert jobs.complete(conn, job)
    row = store.conn().execute("SELECT state, not_before, disk_waits FROM jobs").fetchone()
    assert tuple(row) == ("done", None, 0)  # the next full disk starts at 5 s again


def test_space_coming_back_or_a_reboot_ends_the_wait(store):
    ids = [_image(store, n) for n in range(2)]
    with store.write() as conn:
        for image_id in ids:
            jobs.enqueue(conn, jobs.SCREEN, image_id)
    clock = Clock(1000.0)
    for _ in ids:
        jobs.wait_for_disk(store, jobs.claim(store, "w", 60, 3, clock=clock), "full", clock=clock)
    assert jobs.claim(store, "w", 60, 3, clock=clock) is None
    assert jobs.wake_waiting(store) == 2 and jobs.waiting_for_disk(store) == 0
    first = jobs.claim(store, "w", 60, 3, clock=clock)
    assert first.image_id == ids[0]
    with store.write() as conn:
        assert jobs.complete(conn, first)
    # A wait set on an earlier boot's clock (further ahead than the longest) is over.
    jobs.wait_for_disk(store, jobs.claim(store, "w", 60, 3, clock=clock), "full", clock=clock)
    assert jobs.claim(store, "w", 60, 3, clock=clock) is None
    clock.now = 3.0  # rebooted
    again = jobs.claim(store, "w", 60, 3, clock=clock)
    assert again is not None and (again.image_id, again.attempts) == (ids[1], 1)


def test_a_job_whose_lease_was_lost_is_not_put_back_by_its_old_holder(store):
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    slow = jobs.claim(store, "slow", lease_seconds=0.01, max_attempts=3)
    time.sleep(0.05)
    fast = jobs.claim(store, "fast", 60, 3)
    assert jobs.wait_for_disk(store, slow, "full") is None
    row = store.conn().execute("SELECT state, lease_owner, attempts FROM jobs").fetchone()
    assert tuple(row) == ("running", fast.lease_owner, 2)


def test_two_workers_never_hold_one_job(store):
    # Worker A reads the clock, then waits for the write lock while worker B claims the
    # job. A must not take B's fresh lease for one "from the future" that ran out: with
    # two workers that put one image through twice and threw away one result (issue 28).
    image_id = _image(store, 1)
    with store.write() as conn:
        jobs.enqueue(conn, jobs.SCREEN, image_id)
    got: list = []
    with store.write() as conn:  # the lock B holds while A waits for it
        waiting = threading.Thread(target=lambda: got.append(jobs.claim(store, "A", 60, 3)))
        waiting.start()
        time.sleep(0.3)  # A has started and is blocked on the lock
        now = time.monotonic()
        conn.execute(
            "UPDATE jobs SET state='running', attempts=1, lease_owner='B', lease_taken=?,"
            " lease_expires=?",
            (now, now + 60),
        )
    waiting.join(10)
    assert got == [None]
    row = store.conn().execute("SELECT lease_owner, attempts FROM jobs").fetchone()
    assert tuple(row) == ("B", 1)


def worklist_status(store, image_id):
    row = (
        store.conn()
        .execute("SELECT status, rank FROM worklist_items WHERE image_id=?", (image_id,))
        .fetchone()
    )
    return tuple(row)


def test_failed_screenings_show_on_the_worklist_until_retried(store):
    ids = [_image(store, n) for n in range(3)]
    with store.write() as conn:
        for image_id in ids:
            jobs.enqueue(conn, jobs.SCREEN, image_id)
            refresh_item(conn, image_id)
        jobs.enqueue(conn, "full", ids[2])
    assert worklist_status(store, ids[0]) == ("waiting", 3)
    # failed by a worker (its attempts spent), and given up after killing its workers
    jobs.fail(store, jobs.claim(store, "w", 60, 1), "FileNotFoundError: gone", 1)
    assert jobs.claim(store, "w", lease_seconds=0.01, max_attempts=1).image_id == ids[1]
    time.sleep(0.05)
    with store.write() as conn:
        conn.execute("UPDATE jobs SET decoding_since='then' WHERE image_id=?", (ids[1],))
    full = jobs.claim(store, "w", 60, 1)  # gives the killer up, then takes the next job
    assert full.image_id == ids[2]
    jobs.fail(store, jobs.claim(store, "w", 60, 1), "no pixels", 1)  # the full-detail job
    assert [worklist_status(store, i) for i in ids[:2]] == [("failed", 2), ("failed", 2)]
    assert jobs.failed_screenings(store) == 2 and jobs.counts(store)["failed"] == 3

    assert jobs.retry_failed(store, "nurse", image_id=ids[1]) == 1
    assert worklist_status(store, ids[1]) == ("waiting", 3)
    assert jobs.retry_failed(store, "cli") == 1
    assert jobs.retry_failed(store, "cli") == 0
    rows = store.conn().execute(
        "SELECT image_id, kind, state, attempts, last_error, decoding_since FROM jobs"
        " ORDER BY image_id, kind"
    )
    assert [tuple(r) for r in rows] == [
        (ids[0], "screen", "queued", 0, None, None),
        # the note stays: this image is decoded in a memory-limited child first
        (ids[1], "screen", "queued", 0, None, "then"),
        (ids[2], "full", "failed", 1, "no pixels", None),  # not a screening
        (ids[2], "screen", "running", 1, None, None),
    ]
    audit = (
        store.conn().execute("SELECT actor, action, subject FROM audit_log ORDER BY id").fetchall()
    )
    assert [tuple(a) for a in audit] == [
        ("nurse", "screening.retried", f"image:{ids[1]}"),
        ("cli", "screening.retried", f"image:{ids[0]}"),
    ]
    assert worklist_status(store, ids[0]) == ("waiting", 3)
    assert jobs.claim(store, "w", 60, 1).image_id == ids[0]  # retried: offered again


def test_the_upgrade_queues_again_what_a_full_disk_failed_and_shows_other_failures(tmp_path):
    store = Store(tmp_path)
    db = Database(store.conn())
    migrations.apply(db, stop_before="m015_job_disk_waits")
    conn = store.conn()
    now = utc_now()
    conn.execute(
        "INSERT INTO studies (id, study_instance_uid, created_at) VALUES (1, '1', ?)", (now,)
    )
    errors = {
        1: "StorageFullError: disk full while writing 1.jpg",
        2: "OperationalError: database or disk is full",
        3: "FileNotFoundError: [Errno 2] No such file or directory: 'x'",
        4: None,  # done
    }
    for n, error in errors.items():
        conn.execute(
            "INSERT INTO images (id, study_id, file_format, source, sha256, size_bytes,"
            " stored_path, received_at) VALUES (?, 1, 'png', 't', ?, 1, 'x', ?)",
            (n, f"sha{n}", now),
        )
        conn.execute(
            "INSERT INTO jobs (kind, image_id, state, attempts, last_error, created_at,"
            " updated_at) VALUES ('screen', ?, ?, 3, ?, ?, ?)",
            (n, "done" if error is None else "failed", error, now, now),
        )
        conn.execute(  # what the worklist said before: "waiting" for ever
            "INSERT INTO worklist_items (image_id, status, rank, received_at)"
            " VALUES (?, 'waiting', 3, ?)",
            (n, now),
        )
    migrations.apply(db)
    jobs_now = conn.execute("SELECT image_id, state, attempts FROM jobs ORDER BY image_id")
    assert [tuple(r) for r in jobs_now] == [
        (1, "queued", 0),
        (2, "queued", 0),
        (3, "failed", 3),
        (4, "done", 3),
    ]
    items = conn.execute("SELECT image_id, status, rank FROM worklist_items ORDER BY image_id")
    assert [tuple(r) for r in items] == [
        (1, "waiting", 3),
        (2, "waiting", 3),
        (3, "failed", 2),
        (4, "waiting", 3),  # done but no result: left as it was
    ]
    store.close()
