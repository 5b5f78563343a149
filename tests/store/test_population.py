"""Adult or child chosen for a parked chest X-ray: kept with the image, audited, queued."""

from __future__ import annotations

import pytest
from helpers import TESTS

from appliance.store import jobs
from appliance.store.population import PopulationError, choose_population, park_for_population

PNG_CHEST = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
NURSE = {"username": "nurse"}


def parked(importer, store) -> int:
    """An image the worker parked: its job claimed and completed while it waits."""
    image_id = importer.import_path(PNG_CHEST, source="usb").image_id
    job = jobs.claim(store, "w", lease_seconds=60, max_attempts=3)
    with store.write() as conn:
        park_for_population(conn, image_id)
        assert jobs.complete(conn, job)
    return image_id


def worklist_item(store, image_id: int) -> tuple:
    row = store.conn().execute(
        "SELECT status, rank FROM worklist_items WHERE image_id=?", (image_id,)
    )
    return tuple(row.fetchone())


def test_a_choice_is_kept_audited_and_queues_the_image_ahead_of_a_backlog(importer, store):
    image_id = parked(importer, store)
    assert worklist_item(store, image_id) == ("needs_population", 2)
    store.jobs_waiting.clear()
    choose_population(store, image_id, "adult", NURSE)
    image = store.conn().execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
    assert (image["population"], image["population_by"], image["waiting_for"]) == (
        "adult",
        "nurse",
        None,
    )
    assert image["population_at"]
    job = store.conn().execute("SELECT * FROM jobs WHERE image_id=?", (image_id,)).fetchone()
    assert (job["state"], job["attempts"], job["priority"]) == (
        "queued",
        0,
        jobs.PRIORITY_INTERACTIVE,  # someone is at the screen waiting for it
    )
    assert worklist_item(store, image_id) == ("waiting", 3)  # being screened now
    assert store.jobs_waiting.is_set()  # idle workers start at once
    audit = (
        store.conn()
        .execute(
            "SELECT actor, subject, detail FROM audit_log WHERE action='image.population_chosen'"
        )
        .fetchone()
    )
    assert tuple(audit) == ("nurse", f"image:{image_id}", "adult")


@pytest.mark.parametrize(
    "population, image, message",
    [
        ("teenager", "parked", "Choose adult or child."),
        ("adult", "missing", "No such image."),
        ("child", "not_parked", "This X-ray is not waiting for a choice."),
    ],
)
def test_a_choice_that_cannot_be_made_changes_nothing(importer, store, population, image, message):
    waiting = parked(importer, store)
    other = importer.import_path(TESTS / "data" / "cxr64" / "IM-0151-0001.png", source="usb")
    image_id = {"parked": waiting, "missing": 999, "not_parked": other.image_id}[image]
    before = store.conn().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    with pytest.raises(PopulationError, match=message):
        choose_population(store, image_id, population, NURSE)
    assert store.conn().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == before
    assert store.conn().execute(
        "SELECT population, waiting_for FROM images WHERE id=?", (waiting,)
    ).fetchone()[:] == (None, "population")


def test_requeue_leaves_a_job_that_is_still_queued_or_running_alone(importer, store):
    image_id = importer.import_path(PNG_CHEST, source="usb").image_id
    job = jobs.claim(store, "w", lease_seconds=60, max_attempts=3)
    with store.write() as conn:
        jobs.requeue(conn, jobs.SCREEN, image_id)
    row = store.conn().execute("SELECT state, lease_owner FROM jobs WHERE id=?", (job.id,))
    assert tuple(row.fetchone()) == ("running", job.lease_owner)
    assert store.conn().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
