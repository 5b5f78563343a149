"""The care cascade's patient rows (hub migration 10) give the cascade that counting the
results again gives, whatever happened: results over several weeks and boxes, a revised
result (a new week, another patient), an outcome before its result, a treatment added,
a test withdrawn, a quarantine and a release; and the migration fills them for what a
hub already held, an older hub's result without a readable week included."""

from __future__ import annotations

from collections import defaultdict
from statistics import median

from hub.test_tallies import device, store

from appliance.hub import bad_records, cascade, cascade_rows
from appliance.hub.db import HubDatabase

PERIODS = (
    ("2024-W18", "2024-W18"), ("2024-W19", "2024-W21"), ("2024-W20", ""), ("", "2024-W19"),
    ("", ""),
)


def result(n: int, day: str, triage: str = "urgent", patient: str | None = "P1",
           rev: int = 1, route: str = "chest_xray") -> dict:
    image = {"sha256": f"{n:064x}", **({"patient_id": patient} if patient else {})}
    data = {"image": image, "route": route, "triage": triage,
            "model": {"name": "cxr", "version": "1.0"}, "created_at": f"{day}T10:00:00+00:00"}
    return {"id": f"result:{n}", "rev": rev, "kind": "result", "data": data}


def outcome(n: int, tested: str, found: str = "positive", rev: int = 1,
            treated: str | None = None) -> dict:
    data = {"image": {"sha256": f"{n:064x}"}, "test": "xpert", "result": found,
            "positive": found == "positive", "tested_on": tested,
            "created_at": f"{tested}T15:00:0{rev}+00:00", "local_id": n}
    if treated:
        data["treatment"] = {"started_on": treated, "site": "District hospital"}
    return {"id": f"outcome:{n}", "rev": rev, "kind": "outcome", "data": data}


def recount(conn, since: str, until: str, by_week: bool) -> dict:
    """The cascade as issue 29's first version counted it: the period's results grouped
    into patients, each flagged one's outcomes read, the stages counted in Python."""
    sql = (
        "SELECT d.site, e.route, COALESCE(e.patient_id, 'image:' || e.image_sha256) AS patient,"
        " MIN(e.result_day) AS screened_on,"
        " MIN(CASE WHEN e.triage IN ('urgent', 'review') THEN e.result_day END) AS flagged_on"
        " FROM entries e JOIN devices d ON d.id = e.device_id WHERE e.kind = 'result'"
        " AND e.route IN ('chest_xray', 'fundus')"
        " AND (e.patient_id IS NOT NULL OR e.image_sha256 IS NOT NULL)"
        + (" AND e.week >= ?" if since else "") + (" AND e.week <= ?" if until else "")
        + " GROUP BY d.site, e.route, COALESCE(e.patient_id, 'image:' || e.image_sha256)"
    )
    tests: dict = defaultdict(cascade_rows.Tests)
    for row in conn.execute(
        "SELECT d.site, o.route, o.patient, o.image_sha256 AS sha, o.test, o.withdrawn,"
        " o.positive, o.tested_on, o.treated_on, o.created_at, o.local_id"
        " FROM cascade_outcomes o JOIN devices d ON d.id = o.device_id"
        " WHERE o.readable = 1 AND o.route <> ''"
    ):
        tests[(row["site"], row["route"], row["patient"])].add(row)
    groups: dict = defaultdict(lambda: {"n": [0, 0, 0, 0, 0], "waits": []})
    for p in conn.execute(sql, [v for v in (since, until) if v]):
        flagged = p["flagged_on"] or ""
        day = flagged or p["screened_on"] or ""
        bucket = cascade_rows.iso_week(day) if by_week else ""
        group = groups[(p["site"], bucket, cascade.PROGRAMMES[p["route"]])]
        group["n"][0] += 1
        if not flagged:
            continue
        group["n"][1] += 1
        found = tests.get((p["site"], p["route"], p["patient"]))
        if found is None or found.first_test is None:
            continue
        group["n"][2] += 1
        group["n"][3] += int(found.confirmed)
        group["n"][4] += int(found.treated_on is not None)
        wait = cascade_rows.days_between(flagged[:10], found.first_test)
        if wait is not None:
            group["waits"].append(wait)
    out = {}
    for key, group in groups.items():
        screened, flagged, tested, confirmed, treated = group["n"]
        waits = group["waits"]
        out[key] = {
            "screened": screened, "flagged": flagged, "tested": tested,
            "confirmed": confirmed, "treatment_started": treated,
            "never_tested": flagged - tested,
            "never_tested_share": (flagged - tested) / flagged if flagged else None,
            "days_to_test": round(float(median(waits)), 1) if waits else None,
            "days_to_test_n": len(waits),
        }
    return out


def from_rows(conn, since: str, until: str, by_week: bool) -> dict:
    groups = cascade._groups(conn, since, until, None, by_week)
    return {key: cascade._stages(group) for key, group in groups.items()}


def held(conn) -> list[dict]:
    return conn.execute(
        f"SELECT {', '.join(cascade_rows.COLUMNS)} FROM cascade_rows"
        " ORDER BY site, route, patient, week"
    )


def same_as_a_recount(conn) -> None:
    for since, until in PERIODS:
        for by_week in (False, True):
            assert from_rows(conn, since, until, by_week) == recount(conn, since, until, by_week)
    rows = held(conn)
    with conn.transaction():
        cascade_rows.rebuild(conn)
    assert held(conn) == rows  # kept on write as counting every patient again gives them


def test_the_rows_give_the_cascade_a_recount_gives_through_every_path(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        a1, a2, b = device(conn, "Clinic A"), device(conn, "Clinic A"), device(conn, "Clinic B")
        store(conn, a1, [result(1, "2024-04-30", "routine"), result(2, "2024-05-07"),
                         result(3, "2024-05-21", "review")])
        store(conn, a2, [result(4, "2024-05-14")])  # the same patient at another box
        store(conn, b, [result(5, "2024-05-08"), result(6, "2024-05-09", "routine", "P2"),
                        result(7, "2024-05-15", "review", "P3", route="fundus")])
        same_as_a_recount(conn)
        store(conn, a1, [outcome(2, "2024-05-10")])
        store(conn, a2, [outcome(4, "2024-05-13", "negative")])  # tested before the flag
        store(conn, b, [outcome(7, "2024-05-20", "negative")])
        same_as_a_recount(conn)
        store(conn, a1, [outcome(2, "2024-05-10", rev=2, treated="2024-05-12")])  # treated
        store(conn, b, [outcome(7, "2024-05-20", "withdrawn", rev=2)])  # entered in error
        store(conn, b, [outcome(8, "2024-05-30")])  # the test came before its result
        same_as_a_recount(conn)
        store(conn, b, [result(8, "2024-05-22", patient=None)])  # a patient of its own
        store(conn, b, [result(6, "2024-05-16", "urgent", "P2", rev=2)])  # revised: flagged
        store(conn, a1, [result(3, "2024-05-21", "review", "P9", rev=2)])  # another patient
        same_as_a_recount(conn)
        assert from_rows(conn, "2024-W18", "2024-W21", False)[("Clinic A", "", "chest")][
            "treatment_started"
        ] == 1
        bad_records.quarantine(conn, a1, ["result:2", "outcome:4"], "admin")
        bad_records.quarantine(conn, a2, ["outcome:4", "result:4"], "admin")
        same_as_a_recount(conn)
        bad_records.release(conn, a1, ["result:2"], "admin")
        bad_records.release(conn, a2, ["outcome:4", "result:4"], "admin")
        same_as_a_recount(conn)
        assert held(conn)  # something was counted: the recount compared more than nothing
    finally:
        conn.close()


def test_migration_10_fills_the_rows_for_what_a_hub_already_held(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box = device(conn)
        store(conn, box, [result(1, "2024-05-07"), result(2, "2024-05-14", "routine"),
                          result(3, "2024-05-15", "review", None), outcome(1, "2024-05-09"),
                          outcome(3, "2024-05-20", treated="2024-05-21")])
        with conn.transaction():  # an older hub's result: no readable day, so no week
            conn.execute("UPDATE entries SET week = NULL, result_day = 'someday'"
                         " WHERE entry_id = 'result:2'")
        expected = {(s, u, w): recount(conn, s, u, w) for s, u in PERIODS for w in (False, True)}
        with conn.transaction():  # as a hub at version 9 held them: no patient rows
            conn.execute("DROP TABLE cascade_rows")
            conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    finally:
        conn.close()
    assert database.migrate() == [10]
    conn = database.connect()
    try:
        assert {(s, u, w): from_rows(conn, s, u, w) for s, u, w in expected} == expected
        everyone = expected[("", "", False)][("Clinic A", "", "chest")]
        assert (everyone["screened"], everyone["treatment_started"]) == (2, 1)
        same_as_a_recount(conn)
    finally:
        conn.close()
