"""The tallies the dashboard reads stay exactly what the entries say: a resend counts
nothing, a revision replaces its old counts, a review settles a pending one whichever
arrives first — on SQLite and PostgreSQL, and with two requests of one box at once. The
programme tallies (chest, retina, other per week) move the same way, through a
revision that changes a result's route or triage and a quarantine and its release."""

from __future__ import annotations

import random
import threading

from sync.synckit import box_public_key

from appliance.hub import bad_records, programme_tallies, records, tallies
from appliance.hub.db import HubDatabase


def device(conn, site: str = "Clinic A") -> str:
    code = records.create_enrolment_code(conn, site)
    return records.enrol_device(conn, code, "box", box_public_key())["device_id"]


def result(n: int, rev: int = 1, triage: str | None = "urgent", day: int = 1) -> dict:
    data = {
        "image": {"sha256": f"{n:064x}"},
        "route": "refused" if triage is None else "chest_xray",
        "triage": triage,
        "model": {"name": "cxr", "version": "1.0"} if triage else {},
        "created_at": f"2024-05-{day:02d}T10:00:00+00:00",
    }
    return {"id": f"result:{n}", "rev": rev, "kind": "result", "data": data}


def review(n: int, rev: int = 1, day: int = 9) -> dict:
    data = {"image": {"sha256": f"{n:064x}"}, "verdict": "agree", "created_at": f"2024-05-{day}"}
    return {"id": f"review:{n}", "rev": rev, "kind": "review", "data": data}


def store(conn, device_id: str, batch: list[dict]) -> None:
    with conn.transaction():
        records.store_entries(conn, device_id, batch)


def test_resends_revisions_and_reviews_keep_the_tallies_exact(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box = device(conn)
        store(conn, box, [result(1), result(2, triage="routine"), result(3, triage=None)])
        store(conn, box, [result(1), result(2, triage="routine")])  # a resend: nothing
        store(conn, box, [review(4), result(4, triage="review")])  # review first: not pending
        store(conn, box, [result(2, rev=2, triage="urgent", day=20)])  # revised: new week
        store(conn, box, [result(1, rev=3, triage="routine"), result(1, rev=2)])  # 2 is stale
        store(conn, box, [result(5), result(5, rev=2, triage="review"), review(5)])
        totals = tallies.per_site(conn)["Clinic A"]
        assert totals == {
            "results": 5,
            "refused": 1,
            "positive": 3,  # 2 (urgent), 4 and 5 (review)
            "referred": 1,  # 2
            "reviews": 2,
            "outcomes": 0,
            "pending": 1,  # 2: 4 and 5 were reviewed, 1 is routine now
        }
        assert tallies.tallied(conn) == tallies.recount(conn)
        assert (
            tallies.models_tallied(conn) == tallies.models_recount(conn) == {(box, "cxr", "1.0"): 4}
        )
    finally:
        conn.close()


def test_random_traffic_with_overlapping_requests_stays_exact(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        boxes = [device(conn, f"Site {i}") for i in range(2)]
    finally:
        conn.close()
    errors: list[BaseException] = []

    def traffic(seed: int) -> None:
        rng = random.Random(seed)
        own = database.connect()
        try:
            for _ in range(25):
                batch = []
                for _ in range(rng.randint(1, 8)):
                    n = rng.randrange(30)
                    if rng.random() < 0.3:
                        batch.append(review(n, rev=rng.randint(1, 3)))
                    else:
                        triage = rng.choice(["urgent", "review", "routine", None])
                        batch.append(result(n, rng.randint(1, 4), triage, rng.randint(1, 28)))
                store(own, rng.choice(boxes), batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=traffic, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    conn = database.connect()
    try:
        assert tallies.tallied(conn) == tallies.recount(conn)
        assert tallies.models_tallied(conn) == tallies.models_recount(conn)
        assert programme_tallies.tallied(conn) == programme_tallies.recount(conn)
    finally:
        conn.close()


def screened(n: int, route: str, triage: str | None, model: str | None, day: int = 6,
             rev: int = 1, deidentified: bool = False) -> dict:
    data = {
        "image": {"sha256": f"{n:064x}", "patient_id": f"k{n:04d}"},
        "route": route,
        "triage": triage,
        "created_at": f"2024-05-{day:02d}T10:00:00+00:00",  # 2024-W19 (6-12), W20 (13-19)
    }
    if model:
        data["model"] = {"name": model, "version": "1.0.0"}
    if deidentified:  # as a de-identified box sends it: the patient a keyed hash
        data.update(deidentified=True, image={"sha256": f"{n:064x}", "patient_id": "h" * 64})
    return {"id": f"result:{n}", "rev": rev, "kind": "result", "data": data}


def programmes(conn, device_id: str) -> dict[tuple[str, str], list[int]]:
    """(week, programme) -> [results, refused, positive] the box's tallies hold."""
    return {
        (week, name): counts
        for (box, week, name), counts in programme_tallies.tallied(conn).items()
        if box == device_id
    }


def test_programme_tallies_follow_revisions_quarantine_and_a_deidentified_box(
    tmp_path, database_url
):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box, private = device(conn, "Ndola"), device(conn, "Kitwe")
        store(conn, box, [
            screened(1, "chest_xray", "urgent", "cxr-pneumonia"),
            screened(2, "fundus", "routine", "fundus-referable-dr"),
            screened(3, "refused", None, "cxr-pneumonia"),  # refused by the chest model
            screened(4, "refused", None, None),  # refused before routing: other
        ])
        assert programmes(conn, box) == {
            ("2024-W19", "chest"): [2, 1, 1],
            ("2024-W19", "retina"): [1, 0, 0],
            ("2024-W19", "other"): [1, 1, 0],
        }
        store(conn, box, [screened(1, "chest_xray", "urgent", "cxr-pneumonia")])  # a resend
        # revised: the chest film was a retina photo after all, seen a week later
        store(conn, box, [screened(1, "fundus", "review", "fundus-referable-dr", day=13, rev=2)])
        store(conn, box, [screened(2, "fundus", "urgent", "fundus-referable-dr", rev=2)])
        assert programmes(conn, box) == {
            ("2024-W19", "chest"): [1, 1, 0],
            ("2024-W19", "retina"): [1, 0, 1],
            ("2024-W19", "other"): [1, 1, 0],
            ("2024-W20", "retina"): [1, 0, 1],
        }
        store(conn, private, [
            screened(10, "chest_xray", "review", "cxr-adult-abnormal", deidentified=True),
            screened(11, "fundus", "routine", "fundus-referable-dr", deidentified=True),
        ])
        store(conn, private, [
            screened(10, "chest_xray", "routine", "cxr-adult-abnormal", rev=2, deidentified=True)
        ])
        assert programmes(conn, private) == {
            ("2024-W19", "chest"): [1, 0, 0],
            ("2024-W19", "retina"): [1, 0, 0],
        }
        bad_records.quarantine(conn, private, ["result:10"], "test")
        assert programmes(conn, private) == {("2024-W19", "retina"): [1, 0, 0]}
        bad_records.release(conn, private, ["result:10"], "test")
        assert programmes(conn, private)[("2024-W19", "chest")] == [1, 0, 0]
        assert programme_tallies.tallied(conn) == programme_tallies.recount(conn)
        # what the programme pages read: per site and week, only programmes with results
        assert sorted(
            (r["site"], r["week"], r["programme"], r["results"], r["refused"], r["positive"])
            for r in tallies.programme_weeks(conn, "2024-W19", by_site=True)
        ) == [
            ("Kitwe", "2024-W19", "chest", 1, 0, 0),
            ("Kitwe", "2024-W19", "retina", 1, 0, 0),
            ("Ndola", "2024-W19", "chest", 1, 1, 0),
            ("Ndola", "2024-W19", "other", 1, 1, 0),
            ("Ndola", "2024-W19", "retina", 1, 0, 1),
            ("Ndola", "2024-W20", "retina", 1, 0, 1),
        ]
        assert [
            (r["week"], r["programme"], r["results"])
            for r in tallies.programme_weeks(conn, "2024-W20", site="Ndola")
        ] == [("2024-W20", "retina", 1)]
    finally:
        conn.close()


def test_migration_8_counts_the_programmes_a_hub_already_holds(tmp_path, database_url):
    database = HubDatabase(tmp_path, database_url)
    database.migrate()
    conn = database.connect()
    try:
        box = device(conn)
        store(conn, box, [result(n, triage=("urgent", None, "routine")[n % 3]) for n in range(9)])
        store(conn, box, [screened(20, "fundus", "review", "fundus-referable-dr")])
        held = programme_tallies.tallied(conn)
        with conn.transaction():  # the hub as it stood at version 7
            conn.execute("DROP TABLE programme_tallies")
            conn.execute("DELETE FROM schema_migrations WHERE version = 8")
    finally:
        conn.close()
    assert database.migrate() == [8]
    conn = database.connect()
    try:
        assert programme_tallies.tallied(conn) == programme_tallies.recount(conn) == held
        assert held[(box, "2024-W18", "chest")] == [6, 0, 3]  # routed to the chest model
        assert held[(box, "2024-W18", "other")] == [3, 3, 0]  # refused before routing
        assert held[(box, "2024-W19", "retina")] == [1, 0, 1]
    finally:
        conn.close()
