"""The deliveries outbox is written with the result or review, or not at all; rows from
before destinations existed are the hub's."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlite_utils import Database
from sync.synckit import RESULT, make_backlog

from appliance.store import deliveries, outbox
from appliance.store.db import Store, utc_now
from appliance.store.migrations import migrations
from appliance.store.results import insert_result
from appliance.store.reviews import add_review
from appliance.store.users import create_user


def rows(store) -> list[dict]:
    return [dict(r) for r in store.conn().execute("SELECT * FROM outbox ORDER BY id")]


def test_a_result_and_its_outbox_entry_commit_together_or_not_at_all(store):
    [image_id] = make_backlog(store, 1)
    [entry] = rows(store)
    assert entry["kind"] == "result" and entry["revision"] == 1 and entry["state"] == "pending"
    assert entry["entry_id"].startswith("result:")
    payload = json.loads(entry["payload"])
    assert payload["route"] == "refused" and payload["image"]["patient_id"] == "P000000"

    class Crash(Exception):
        pass

    with pytest.raises(Crash), store.write() as conn:
        insert_result(conn, image_id, None, RESULT, None)
        raise Crash  # the worker dies before COMMIT
    assert len(rows(store)) == 1
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_outbox_failure_rolls_the_result_back(store):
    [image_id] = make_backlog(store, 1)
    store.conn().execute(
        "CREATE TRIGGER no_outbox BEFORE INSERT ON outbox"
        " BEGIN SELECT RAISE(ABORT, 'disk said no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError), store.write() as conn:
        insert_result(conn, image_id, None, RESULT, None)
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_a_later_review_supersedes_the_earlier_one(store):
    [_refused, image_id] = make_backlog(store, 2)  # a refusal has nothing to review
    user_id = create_user(store, "dr.banda", "1234", "clinician")
    user = {"id": user_id, "username": "dr.banda"}
    add_review(store, image_id=image_id, user=user, verdict="agree", reasons=[], note="")
    add_review(
        store, image_id=image_id, user=user, verdict="disagree", reasons=["false_alarm"], note="x"
    )
    reviews = [r for r in rows(store) if r["kind"] == "review"]
    assert [r["entry_id"] for r in reviews] == [reviews[0]["entry_id"]] * 2
    assert [(r["revision"], r["state"]) for r in reviews] == [(1, "superseded"), (2, "pending")]
    result_entry = rows(store)[1]["entry_id"]
    assert json.loads(reviews[1]["payload"])["result_entry"] == result_entry
    # Results go first, and the superseded review is not sent at all.
    assert [e.kind for e in outbox.pending(store.conn(), 10)] == ["result", "result", "review"]
    assert deliveries.counts(store.conn())["review_pending"] == 1


def test_every_entry_names_its_destination_and_an_unknown_one_is_refused(store):
    [image_id] = make_backlog(store, 1)
    assert [r["destination"] for r in rows(store)] == ["hub"]
    assert deliveries.counts(store.conn(), outbox.HUB)["result_pending"] == 1
    result_id = store.conn().execute("SELECT id FROM results").fetchone()[0]
    with pytest.raises(ValueError, match="'fhir'"), store.write() as conn:
        outbox.record_result(conn, result_id, destination="fhir")
    assert len(rows(store)) == 1


def test_the_migration_makes_every_earlier_entry_the_hubs(data_dir):
    """A box upgraded with entries pending and acknowledged keeps all of them, same ids."""
    data_dir.mkdir(parents=True)
    store = Store(data_dir)
    db = Database(store.conn())
    migrations.apply(db, stop_before="m009_outbox_destinations")
    now = utc_now()
    with store.write() as conn:
        conn.execute(
            "INSERT INTO studies (id, study_instance_uid, created_at) VALUES (1, '1.2', ?)", (now,)
        )
        conn.execute(
            "INSERT INTO images (id, study_id, file_format, source, sha256, size_bytes,"
            " stored_path, received_at) VALUES (1, 1, 'png', 'usb', 'ab', 1, 'x', ?)",
            (now,),
        )
        conn.executemany(
            "INSERT INTO sync_outbox (id, entry_id, revision, kind, local_id, image_id,"
            " payload, state, created_at, acked_at) VALUES (?, ?, ?, ?, 1, 1, '{}', ?, ?, ?)",
            [
                (7, "result:a", 1, "result", "acked", now, now),
                (9, "review:ab", 1, "review", "superseded", now, None),
                (12, "review:ab", 2, "review", "pending", now, None),
            ],
        )
    migrations.apply(db)
    moved = [
        (r["id"], r["destination"], r["entry_id"], r["revision"], r["state"]) for r in rows(store)
    ]
    assert moved == [
        (7, "hub", "result:a", 1, "acked"),
        (9, "hub", "review:ab", 1, "superseded"),
        (12, "hub", "review:ab", 2, "pending"),
    ]
    tables = {r[0] for r in store.conn().execute("SELECT name FROM sqlite_master")}
    assert "sync_outbox" not in tables
    assert deliveries.counts(store.conn()) == {
        "result_pending": 0,
        "result_acked": 1,
        "review_pending": 1,
        "review_acked": 0,
    }
    store.close()
