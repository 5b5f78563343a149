"""The tallies the dashboard reads stay exactly what the entries say: a resend counts
nothing, a revision replaces its old counts, a review settles a pending one whichever
arrives first — on SQLite and PostgreSQL, and with two requests of one box at once."""

from __future__ import annotations

import random
import threading

from sync.synckit import box_public_key

from appliance.hub import records, tallies
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
    finally:
        conn.close()
