"""FHIR search and push at scale (``appliance/hub/fhir/search.py``, ``push.py``): the SQL
on the patient and day columns finds exactly what reading every payload would, newest
first, on SQLite and PostgreSQL; a push pass sends what arrived since the last one, and
only once it has settled; a restarted pusher does not start again from the beginning."""

from __future__ import annotations

import json
import random
import time

import pytest
from hub.test_fhir import FhirServer
from werkzeug.datastructures import MultiDict

from appliance.hub import records
from appliance.hub.db import HubDatabase
from appliance.hub.fhir import search
from appliance.hub.fhir.push import FhirPusher

SITES = {"dev-a": "Clinic A", "dev-b": "Clinic B"}


def result(n: int, rng: random.Random) -> dict:
    day = f"2026-{rng.randint(1, 3):02d}-{rng.randint(1, 28):02d}"
    image = {"sha256": f"{n:064x}", "modality": "CR"}
    if n % 5:
        image["patient_id"] = f"P{n % 7}"
    return {
        "id": f"result:{n:08x}",
        "rev": 1,
        "kind": "result",
        "data": {
            "image": image,
            "route": "chest_xray",
            "triage": "routine",
            "created_at": f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+00:00",
        },
    }


@pytest.fixture
def hub_db(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    rng = random.Random(17)
    with conn.transaction():
        for device_id, site in SITES.items():
            conn.execute(
                "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at)"
                " VALUES (?, ?, 'box', ?, 'k', '2026-01-01')",
                (device_id, site, f"hash-{device_id}"),
            )
    for batch in range(6):  # six arrivals, so received_at orders them
        for device_id in SITES:
            entries = [result(batch * 1000 + n, rng) for n in range(40)]
            with conn.transaction():
                records.store_entries(conn, device_id, entries)
        time.sleep(0.002)
    yield database, conn
    conn.close()


def by_reading_every_payload(conn, query: search.Query) -> list[tuple[str, str]]:
    """What the search must answer: every result's payload read and matched, newest first."""
    rows = conn.execute(
        "SELECT e.device_id, e.entry_id, e.received_at, e.payload, d.site FROM entries e"
        " JOIN devices d ON d.id = e.device_id WHERE e.kind = 'result'"
    )
    rows.sort(key=lambda r: (r["received_at"], r["device_id"], r["entry_id"]), reverse=True)
    return [
        (r["device_id"], r["entry_id"])
        for r in rows
        if (query.site is None or r["site"] == query.site)
        and search.matches(json.loads(r["payload"]), query)
    ][: query.count]


QUERIES = [
    {},
    {"patient": "P3"},
    {"patient": "urn:box|P3", "_count": "200"},
    {"patient": "nobody"},
    {"site": "Clinic B", "_count": "7"},
    {"date": "2026-02"},
    {"date": "2026-02-14", "_count": "200"},
    {"date": ["ge2026-02-10", "lt2026-03"], "_count": "200"},
    {"date": ["gt2026-02", "le2026-03-05"], "_count": "200"},
    {"date": "gt2026-01-31", "patient": "P1", "_count": "200"},
    {"date": ["ge2026-02-14T12", "le2026-02-20T06:30"], "_count": "200"},  # to the minute
    {"date": "eq2026-03-01T", "_count": "200"},  # past a day: the payload decides
    {"date": "2027", "site": "Clinic A"},
    {"date": "le2026", "patient": "P6", "site": "Clinic A", "_count": "200"},
]


@pytest.mark.parametrize("args", QUERIES, ids=[json.dumps(q) for q in QUERIES])
def test_the_indexed_search_finds_what_reading_every_payload_would(hub_db, args):
    _, conn = hub_db
    query = search.parse(MultiDict([(k, v) for k, vs in args.items() for v in _listed(vs)]))
    found = [(i["entry"]["device_id"], i["entry"]["entry_id"]) for i in search.find(conn, query)]
    expected = by_reading_every_payload(conn, query)
    assert found == expected
    if args.get("patient") != "nobody" and "2027" not in str(args):
        assert found  # each query finds something: none of them passes by being empty


def test_pages_of_the_search_continue_by_position(hub_db, monkeypatch):
    _, conn = hub_db
    monkeypatch.setattr(search, "SCAN_BATCH", 7)  # many pages, and a match split across them
    query = search.parse(MultiDict([("patient", "P2"), ("_count", "200")]))
    found = [(i["entry"]["device_id"], i["entry"]["entry_id"]) for i in search.find(conn, query)]
    assert found == by_reading_every_payload(conn, query) and len(found) > 7


def _listed(value):
    return value if isinstance(value, list) else [value]


def test_a_push_sends_what_arrived_once_settled_and_a_restart_goes_on(hub_db, tmp_path):
    database, conn = hub_db
    server = FhirServer()
    try:
        waiting = FhirPusher(database, server.url, tmp_path, settle_seconds=3600)
        # nothing settled yet
        assert waiting.push_once() == {"pushed": 0, "unchanged": 0, "skipped": 0}
        pusher = FhirPusher(database, server.url, tmp_path, settle_seconds=0)
        assert pusher.push_once() == {"pushed": 480, "unchanged": 0, "skipped": 0}
        assert len(server.received) == 480
        restarted = FhirPusher(database, server.url, tmp_path, settle_seconds=0)
        # read nothing again
        assert restarted.push_once() == {"pushed": 0, "unchanged": 0, "skipped": 0}
        # a review of one image, and a resend of a result at the revision the hub holds
        first = result(3, random.Random(17))
        review = {
            "id": f"review:{first['data']['image']['sha256']}",
            "rev": 1,
            "kind": "review",
            "data": {"image": first["data"]["image"], "verdict": "disagree", "reasons": []},
        }
        held = conn.one("SELECT payload FROM entries WHERE entry_id = ?", (first["id"],))
        resend = {**first, "data": json.loads(held["payload"])}
        time.sleep(0.002)
        with conn.transaction():
            records.store_entries(conn, "dev-a", [review, resend])
        assert restarted.push_once() == {"pushed": 1, "unchanged": 0, "skipped": 0}
        assert len(server.received) == 481
    finally:
        server.close()


@pytest.mark.parametrize("value", ["26-01-01", "2026-01-01 OR 1=1", "2026-\u0661", "ge2026/01"])
def test_a_date_that_is_not_a_date_is_refused(value):
    with pytest.raises(ValueError, match="expected"):
        search.parse(MultiDict([("date", value)]))
