import os
import socket
import subprocess
import sys
import time

from appliance.store import jobs
from appliance.store.db import utc_now


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
