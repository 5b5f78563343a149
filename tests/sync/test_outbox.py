"""The outbox is written with the result or review, or not at all."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sync.synckit import RESULT, make_backlog

from appliance.store.results import insert_result
from appliance.store.reviews import add_review
from appliance.store.users import create_user
from appliance.sync import outbox
from appliance.sync.deid import deidentify, linkage_key
from appliance.sync.wire import wire_entry


def rows(store) -> list[dict]:
    return [dict(r) for r in store.conn().execute("SELECT * FROM sync_outbox ORDER BY id")]


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
        "CREATE TRIGGER no_outbox BEFORE INSERT ON sync_outbox"
        " BEGIN SELECT RAISE(ABORT, 'disk said no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError), store.write() as conn:
        insert_result(conn, image_id, None, RESULT, None)
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_a_later_review_supersedes_the_earlier_one(store):
    [image_id] = make_backlog(store, 1)
    user_id = create_user(store, "dr.banda", "1234", "clinician")
    user = {"id": user_id, "username": "dr.banda"}
    add_review(store, image_id=image_id, user=user, verdict="agree", reasons=[], note="")
    add_review(
        store, image_id=image_id, user=user, verdict="disagree", reasons=["false_alarm"], note="x"
    )
    reviews = [r for r in rows(store) if r["kind"] == "review"]
    assert [r["entry_id"] for r in reviews] == [reviews[0]["entry_id"]] * 2
    assert [(r["revision"], r["state"]) for r in reviews] == [(1, "superseded"), (2, "pending")]
    result_entry = rows(store)[0]["entry_id"]
    assert json.loads(reviews[1]["payload"])["result_entry"] == result_entry
    # Results go first, and the superseded review is not sent at all.
    assert [e.kind for e in outbox.pending(store.conn(), 10)] == ["result", "review"]
    assert outbox.counts(store.conn())["review_pending"] == 1


def test_deidentification_replaces_direct_identifiers_with_a_keyed_hash(store, config):
    make_backlog(store, 2)
    first, second = outbox.pending(store.conn(), 2)
    key = linkage_key(config.data_dir)
    assert (config.data_dir / "secrets" / "deid_key").stat().st_mode & 0o777 == 0o600
    clean = deidentify(first.payload, key)
    image = clean["image"]
    assert "patient_name" not in image and "original_name" not in image
    assert image["patient_id"].startswith("h:") and "P000000" not in json.dumps(clean)
    assert deidentify(first.payload, key)["image"]["patient_id"] == image["patient_id"]
    assert deidentify(second.payload, key)["image"]["patient_id"] != image["patient_id"]
    assert first.payload["image"]["patient_name"] == "Doe^Jane0"  # the box keeps its own copy
    wire = wire_entry(first, config.with_overrides(sync_deidentify=True))
    assert wire["data"]["deidentified"] is True and "Doe^Jane0" not in json.dumps(wire)
