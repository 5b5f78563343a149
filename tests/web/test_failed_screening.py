"""A screening that failed says so (never "waiting" for ever) and can be tried again from
the page: the study page for one image, the System page for all, by any role, with the
form's CSRF token, audited. A real worker then screens them."""

from __future__ import annotations

import pytest
from helpers import FUNDUS_DIR, PIN, csrf_from, logged_in

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.web import create_app
from appliance.worker import Worker


@pytest.fixture
def box(tmp_path, models):
    """Two photos whose screening failed (their originals were gone for a while: a disk
    fault) and one screened; the originals are back, so a retry succeeds."""
    config = load_config(
        tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1, job_max_attempts=1
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = [
        importer.import_path(FUNDUS_DIR / name, source="usb").image_id
        for name in ("hrf_12_h.jpg", "hrf_07_h.jpg", "IDRiD_003.jpg")
    ]
    originals = {}
    for image_id in ids[:2]:
        stored = store.conn().execute("SELECT stored_path FROM images WHERE id=?", (image_id,))
        path = config.data_dir / stored.fetchone()[0]
        originals[path] = path.read_bytes()
        path.unlink()
    worker = Worker(store, config, Screener(models, config), name="t")
    worker.drain()
    for path, content in originals.items():
        path.write_bytes(content)
    users.create_user(store, "nurse", PIN, "operator")
    yield app, worker, ids
    store.close()


def state_of(store, image_id):
    row = store.conn().execute(
        "SELECT j.state, j.attempts, w.status FROM jobs j"
        " JOIN worklist_items w ON w.image_id = j.image_id"
        " WHERE j.image_id=? AND j.kind='screen'",
        (image_id,),
    )
    return tuple(row.fetchone())


def test_a_failed_screening_says_so_on_the_worklist_the_study_and_the_system_page(box):
    app, _worker, ids = box
    client = logged_in(app, "nurse")
    worklist = client.get("/").text
    assert worklist.count('<span class="status failed">screening failed</span>') == 2
    study = client.get(f"/study/{ids[0]}").text
    assert "Screening failed" in study and "Try screening again" in study
    assert "Waiting for screening" not in study
    screened = client.get(f"/study/{ids[2]}").text
    assert "Screening failed" not in screened and "Try screening again" not in screened
    system = client.get("/system").text
    assert "Screening failed for 2 images." in system and "Retry failed screenings" in system


def test_the_study_page_retries_its_image_and_the_system_page_all(box):
    app, worker, ids = box
    store = app.extensions["appliance_store"]
    client = logged_in(app, "nurse")
    assert state_of(store, ids[0]) == ("failed", 1, "failed")

    # Without the form's token nothing is queued.
    assert client.post(f"/study/{ids[0]}/retry").status_code == 400
    assert client.post("/system/retry-failed").status_code == 400
    assert state_of(store, ids[0]) == ("failed", 1, "failed")

    token = csrf_from(client.get(f"/study/{ids[0]}").text)
    response = client.post(f"/study/{ids[0]}/retry", data={"csrf_token": token})
    assert response.status_code == 302 and response.location == f"/study/{ids[0]}"
    page = client.get(f"/study/{ids[0]}").text
    assert "Queued again: the image is being screened." in page
    assert "Waiting for screening…" in page and "Screening failed" not in page
    assert state_of(store, ids[0]) == ("queued", 0, "waiting")
    assert state_of(store, ids[1]) == ("failed", 1, "failed")  # only that image

    response = client.post("/system/retry-failed", data={"csrf_token": token})
    assert response.status_code == 302 and response.location == "/system"
    page = client.get("/system").text
    assert "1 failed screening queued again." in page
    assert "Retry failed screenings" not in page
    client.post("/system/retry-failed", data={"csrf_token": token})
    assert "No failed screenings to retry." in client.get("/system").text

    audit = store.conn().execute(
        "SELECT actor, action, subject FROM audit_log WHERE action='screening.retried'"
    )
    assert [tuple(r) for r in audit] == [
        ("nurse", "screening.retried", f"image:{ids[0]}"),
        ("nurse", "screening.retried", f"image:{ids[1]}"),
    ]

    assert worker.drain() == 2
    for image_id in ids:
        state, attempts, status = state_of(store, image_id)
        assert (state, attempts) == ("done", 1) and status != "failed"
        page = client.get(f"/study/{image_id}").text
        assert "Screening failed" not in page and "Waiting for screening" not in page
    response = client.post(f"/study/{ids[0]}/retry", data={"csrf_token": token})
    assert "nothing to retry" in client.get(response.location).text
