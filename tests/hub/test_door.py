"""The hub's door (issue 25): every entry checked against its kind's schema before it is
stored. A poisoned entry is refused, naming the field, and the rest of its batch is
stored and acknowledged; a box that reads only ``acked`` keeps working.

Against a real ``appliance hub serve`` process on SQLite and on PostgreSQL, and
data-mule bundles exported by a real box.
"""

from __future__ import annotations

import http.client
import json

import pytest
from fuzzkit import POISONED_ENTRIES, good_entry_data
from helpers import free_port
from sync.synckit import (
    FAST_RETRIES,
    HubProcess,
    box_public_key,
    enrol,
    enrolment_code,
    make_backlog,
)

from appliance.config import load_config
from appliance.hub import records, schemas
from appliance.hub.db import HubDatabase
from appliance.store import outbox
from appliance.store.db import Store
from appliance.sync import mule
from appliance.sync.client import HubClient


@pytest.fixture
def served(tmp_path, database_url):
    """``hub serve`` on its own port, with an enrolled device: (process, client, db)."""
    hub_dir = tmp_path / "hub"
    database = HubDatabase(hub_dir, database_url)
    database.migrate()
    hub = HubProcess(hub_dir, free_port(), database_url)
    url = f"http://127.0.0.1:{hub.port}"
    answer = HubClient(url).enrol(enrolment_code(hub_dir, database_url), "box", box_public_key())
    yield hub, HubClient(url, answer["token"]), database
    hub.kill()


def post_entries(hub, token: str, entries: list[dict]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/entries",
            body=json.dumps({"entries": entries}),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def held(database) -> dict[str, int]:
    conn = database.connect()
    try:
        return {r["entry_id"]: r["revision"] for r in conn.execute("SELECT * FROM entries")}
    finally:
        conn.close()


def entry(kind: str, n: int, **change) -> dict:
    data = {**good_entry_data(kind, n), **change}
    return {"id": f"{kind}:{n}", "rev": 1, "kind": kind, "data": data}


def test_each_poisoned_entry_is_refused_by_field_and_its_batch_is_stored(served):
    hub, client, database = served
    for n, (name, kind, change, field) in enumerate(POISONED_ENTRIES):
        good, bad = entry(kind, 1000 + n), entry(kind, n, **change)
        status, answer = post_entries(hub, client.token, [good, bad])
        assert status == 200, (name, answer)
        assert answer["acked"] == [[good["id"], 1]], name
        [refusal] = answer["refused"]
        assert (refusal["id"], refusal["rev"], refusal["kind"]) == (bad["id"], 1, kind), name
        assert refusal["field"] == field, (name, refusal)
        assert refusal["message"].startswith(f"{field}: "), (name, refusal)
        # Alone in its batch, it is a 4xx in the one error shape, naming the field.
        status, alone = post_entries(hub, client.token, [bad])
        assert status == 422, name
        assert alone["acked"] == [] and alone["refused"] == [refusal]
        assert alone["error"]["code"] == "entries_refused"
        assert alone["error"]["message"].startswith(f"{field}: ")
    stored = held(database)
    assert len(stored) == len(POISONED_ENTRIES)
    assert all(int(e.split(":")[1]) >= 1000 for e in stored)  # every good one, no bad one


def test_a_box_that_reads_only_acked_keeps_working(served):
    hub, client, database = served
    batch = [entry("result", n) for n in range(3)]
    batch.insert(1, entry("result", 9, threshold=None))
    # send_entries is what every box before refusals does: it reads "acked" only.
    assert client.send_entries(batch) == [("result:0", 1), ("result:1", 1), ("result:2", 1)]
    answer = client.send_batch(batch)
    assert [r["field"] for r in answer.refused] == ["threshold"]
    assert set(held(database)) == {"result:0", "result:1", "result:2"}


def test_extra_fields_of_a_newer_box_are_stored_but_bounded(served):
    hub, client, database = served
    newer = entry("result", 1, lens={"maker": "X", "focal_mm": 35})
    assert client.send_entries([newer]) == [("result:1", 1)]
    conn = database.connect()
    try:
        payload = json.loads(conn.one("SELECT payload FROM entries")["payload"])
    finally:
        conn.close()
    assert payload["lens"] == {"maker": "X", "focal_mm": 35}  # kept as sent, read by no one
    too_many = entry("result", 2, **{f"x{i}": i for i in range(schemas.MAX_KEYS)})
    too_long = entry("result", 3, note="n" * (schemas.MAX_TEXT + 1))
    later = {**entry("result", 4), "v": 2}
    answer = client.send_batch([too_many, too_long, later])
    assert [(r["id"], r["field"]) for r in answer.refused] == [
        ("result:2", "data"),
        ("result:3", "note"),
        ("result:4", "v"),
    ]
    assert set(held(database)) == {"result:1"}


def test_model_status_is_checked_against_its_schema(served):
    hub, client, database = served
    client.report_models([{"name": "cxr-pneumonia", "version": "1.0", "state": "active"}])
    for bad, field in (
        ([{"name": "cxr", "version": "1.0", "state": "=cmd"}], "models.0.state"),
        ([{"name": "cxr", "version": None, "state": "active"}], "models.0.version"),
        (["x"], "models.0"),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/models/status",
            body=json.dumps({"models": bad}),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {client.token}"},
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 400
        assert answer["error"]["message"].startswith(f"{field}: "), answer


def test_a_mule_bundle_is_checked_the_same_way(tmp_path, database_url):
    hub_dir = tmp_path / "hub"
    database = HubDatabase(hub_dir, database_url)
    database.migrate()
    hub = HubProcess(hub_dir, free_port(), database_url)
    try:
        data_dir = tmp_path / "box"
        store = Store.open(data_dir)
        enrol(data_dir, f"http://127.0.0.1:{hub.port}", enrolment_code(hub_dir, database_url))
        config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1, **FAST_RETRIES)
        make_backlog(store, 3)
        with store.write() as conn:  # a box's bug: one payload poisoned before it leaves
            row = conn.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT 1").fetchone()
            payload = {**json.loads(row["payload"]), "image": "x"}
            conn.execute(
                "UPDATE outbox SET payload = ? WHERE id = ?", (json.dumps(payload), row["id"])
            )
            outbox.record_monitor(conn, {"warnings": ["boom"], "calibration": {"cxr": "x"}})
        bundle = mule.export_bundle(store, config, tmp_path / "stick")
        report = records.import_bundle(database, bundle["path"])
        assert report["entries"] == 2  # the two good results
        assert sorted(r["field"] for r in report["refused"]) == ["generated_at", "image"]
        assert len(held(database)) == 2
        store.close()
    finally:
        hub.kill()
