"""Each image's worklist row follows every write, and the migration fills it for old data."""

from __future__ import annotations

from helpers import FUNDUS_DIR, testdata
from sqlite_utils import Database

from appliance.store import users
from appliance.store.db import Store, utc_now
from appliance.store.migrations import migrations
from appliance.store.reviews import add_review
from appliance.worker import Worker


def item(store, image_id):
    row = (
        store.conn()
        .execute(
            "SELECT status, rank, result_id, review_id FROM worklist_items WHERE image_id=?",
            (image_id,),
        )
        .fetchone()
    )
    return tuple(row)


def test_the_row_follows_image_result_and_review(importer, store, config, screener):
    image_id = importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom").image_id
    assert item(store, image_id) == ("waiting", 3, None, None)
    Worker(store, config, screener, name="t").drain()
    status, rank, result_id, review_id = item(store, image_id)
    assert status == "screened" and rank in (0, 1, 4) and result_id and review_id is None
    user_id = users.create_user(store, "doc", "1234", "clinician")
    add_review(
        store,
        image_id=image_id,
        user=users.get_user(store, user_id),
        verdict="agree",
        reasons=[],
        note="",
    )
    assert item(store, image_id)[:2] == ("reviewed", 6)


def test_a_refused_image_ranks_after_findings_and_before_routine(importer, store, config, screener):
    ct = importer.import_path(testdata("CT_small.dcm"), source="usb").image_id
    eye = importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb").image_id
    Worker(store, config, screener, name="t").drain()
    assert item(store, ct)[:2] == ("refused", 2)
    assert item(store, eye)[1] in (0, 1, 4)


def test_the_migration_places_images_stored_before_it(tmp_path):
    store = Store(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    db = Database(store.conn())
    migrations.apply(db, stop_before="m007_worklist_items")
    conn = store.conn()
    now = utc_now()
    conn.execute(
        "INSERT INTO studies (id, study_instance_uid, created_at) VALUES (1, '1.2', ?)", (now,)
    )
    for n in (1, 2):
        conn.execute(
            "INSERT INTO images (id, study_id, file_format, source, sha256, size_bytes,"
            " stored_path, received_at) VALUES (?, 1, 'png', 't', ?, 1, 'x', ?)",
            (n, f"sha{n}", now),
        )
    conn.execute(
        "INSERT INTO results (image_id, route, triage, score, created_at)"
        " VALUES (2, 'chest_xray', 'urgent', 97, ?)",
        (now,),
    )
    migrations.apply(db)
    rows = dict(conn.execute("SELECT image_id, status FROM worklist_items").fetchall())
    assert rows == {1: "waiting", 2: "screened"}
    assert conn.execute("SELECT rank FROM worklist_items WHERE image_id=2").fetchone()[0] == 0
    store.close()
