"""The care cascade's outcome columns (hub migration 9) say what the stored outcomes say,
whatever happened to them: first arrival, a revision (treatment added, then withdrawn),
a resend, a quarantine and a release, a test that came before its result; and the
migration reads what a hub already held."""

from __future__ import annotations

from hub.test_tallies import device, result, store

from appliance.hub import bad_records, cascade, cascade_outcomes
from appliance.hub.db import HubDatabase
from appliance.hub.migrations import LATEST


def outcome(n: int, rev: int = 1, result: str = "positive", treated: str | None = None) -> dict:
    data = {
        "image": {"sha256": f"{n:064x}"},
        "test": "xpert",
        "result": result,
        "positive": result == "positive",
        "tested_on": "2024-05-06",
        "created_at": f"2024-05-06T10:00:0{rev}+00:00",
        "local_id": n,
    }
    if treated:
        data["treatment"] = {"started_on": treated, "site": "District hospital"}
    return {"id": f"outcome:{n}", "rev": rev, "kind": "outcome", "data": data}


def held(conn) -> list[dict]:
    return conn.execute(
        f"SELECT {', '.join(cascade_outcomes.COLUMNS)} FROM cascade_outcomes"
        " ORDER BY device_id, entry_id"
    )


def read_again(conn) -> list[dict]:
    """The rows as reading every outcome again gives them (the table is rebuilt)."""
    with conn.transaction():
        cascade_outcomes.rebuild(conn)
    return held(conn)


def chest(conn) -> dict:
    [figures] = cascade.cascade(conn, "2024-W18", "2024-W18")["total"]
    return figures


def test_the_outcome_columns_follow_revisions_quarantine_and_release(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box = device(conn)
        store(conn, box, [result(1), result(2), result(3, triage="routine")])
        store(conn, box, [outcome(1), outcome(2, result="negative")])
        assert held(conn) == read_again(conn) and len(held(conn)) == 2
        assert (chest(conn)["tested"], chest(conn)["confirmed"]) == (2, 1)
        store(conn, box, [outcome(1, rev=2, treated="2024-05-08")])  # treatment added
        store(conn, box, [outcome(1, rev=2, treated="2024-05-08")])  # a resend: nothing
        assert held(conn) == read_again(conn)
        assert chest(conn)["treatment_started"] == 1
        store(conn, box, [outcome(2, rev=2, result="withdrawn")])  # entered in error
        assert held(conn) == read_again(conn) and chest(conn)["tested"] == 1
        bad_records.quarantine(conn, box, ["outcome:1"], "admin")
        assert [r["entry_id"] for r in held(conn)] == ["outcome:2"]
        assert (chest(conn)["tested"], chest(conn)["treatment_started"]) == (0, 0)
        bad_records.release(conn, box, ["outcome:1"], "admin")
        assert held(conn) == read_again(conn) and chest(conn)["treatment_started"] == 1
        store(conn, box, [outcome(5)])  # the test came before its result
        assert [r["patient"] for r in held(conn) if r["entry_id"] == "outcome:5"] == [""]
        store(conn, box, [result(5)])
        assert held(conn) == read_again(conn) and chest(conn)["tested"] == 2
        store(conn, box, [result(5, rev=2, triage="routine")])  # revised: no longer flagged
        assert held(conn) == read_again(conn) and chest(conn)["tested"] == 1
        bad_records.quarantine(conn, box, ["result:5"], "admin")
        assert [r["patient"] for r in held(conn) if r["entry_id"] == "outcome:5"] == [""]
        bad_records.release(conn, box, ["result:5"], "admin")
        assert held(conn) == read_again(conn)
    finally:
        conn.close()


def test_migration_9_reads_the_outcomes_a_hub_already_held(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box = device(conn)
        store(conn, box, [result(1), outcome(1, treated="2024-05-07"), outcome(4)])
        before = chest(conn)
        with conn.transaction():  # as a hub at version 8 held them: no outcome read
            conn.execute("DROP TABLE cascade_outcomes")
            conn.execute("DELETE FROM schema_migrations WHERE version = 9")
    finally:
        conn.close()
    assert LATEST >= 9 and database.migrate() == [9]
    conn = database.connect()
    try:
        assert held(conn) == read_again(conn) and len(held(conn)) == 2
        assert chest(conn) == before and before["treatment_started"] == 1
    finally:
        conn.close()
