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
