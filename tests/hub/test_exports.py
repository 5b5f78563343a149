"""What a programme reports from: results as CSV per period and site, and the
indicators per site and week as CSV and as DHIS2 dataValueSets — behind the login."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hub.test_tallies import device, result, review, store

from appliance.hub import create_app, records


@pytest.fixture
def app(tmp_path, database_url):
    app = create_app(tmp_path / "hub", database_url)
    conn = app.extensions["hub_database"].connect()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
        north, south = device(conn, "NORTH-01"), device(conn, "SOUTH-02")
        # 2024-05-01 and -02 are in 2024-W18; -20 in 2024-W21.
        store(conn, north, [result(1), result(2, triage="routine"), result(3, triage=None)])
        store(conn, north, [result(4, day=20), review(1)])
        store(conn, south, [result(5, triage="review", day=2)])
    finally:
        conn.close()
    return app


def signed_in(app):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    return client


def test_exports_need_a_login(app):
    for path in ("/export/results.csv", "/export/indicators.csv", "/export/indicators.json"):
        assert app.test_client().get(path).status_code == 302


def test_results_csv_per_site_and_period(app):
    client = signed_in(app)
    answer = client.get("/export/results.csv?site=NORTH-01&from=2024-W18&to=2024-W18")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert sorted(r["entry_id"] for r in rows) == ["result:1", "result:2", "result:3"]
    assert {r["site"] for r in rows} == {"NORTH-01"} and {r["week"] for r in rows} == {"2024-W18"}
    everything = client.get("/export/results.csv").get_data(as_text=True)
    assert len(everything.splitlines()) == 1 + 5
    assert client.get("/export/results.csv?from=May").status_code == 400


def test_indicators_as_csv_and_as_dhis2_data_value_sets(app):
    client = signed_in(app)
    text = client.get("/export/indicators.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    north = next(r for r in rows if r["site"] == "NORTH-01" and r["week"] == "2024-W18")
    assert north == {
        "site": "NORTH-01",
        "week": "2024-W18",
        "screened": "2",
        "positive": "1",
        "positivity": "50.0",
        "refused": "1",
        "referred": "1",
        "reviews_pending": "0",  # result 1 was reviewed
        # the cascade, by patient (each image its own here), chest and retina apart
        "chest_flagged": "1",
        "chest_tested": "0",
        "chest_confirmed": "0",
        "chest_treatment_started": "0",
        "chest_days_to_test": "",
        **dict.fromkeys(
            (
                "retina_flagged",
                "retina_tested",
                "retina_confirmed",
                "retina_treatment_started",
                "retina_days_to_test",
            ),
            "",
        ),
    }
    sets = client.get("/export/indicators.json?from=2024-W21").get_json()
    values = {(v["orgUnit"], v["period"], v["dataElement"]): v["value"] for v in sets["dataValues"]}
    assert values == {
        ("NORTH-01", "2024W21", "SCREEN_IMAGES_SCREENED"): "1",
        ("NORTH-01", "2024W21", "SCREEN_POSITIVE"): "1",
        ("NORTH-01", "2024W21", "SCREEN_POSITIVITY_PCT"): "100.0",
        ("NORTH-01", "2024W21", "SCREEN_REFUSED"): "0",
        ("NORTH-01", "2024W21", "SCREEN_REFERRED"): "1",
        ("NORTH-01", "2024W21", "SCREEN_REVIEWS_PENDING"): "1",
        ("NORTH-01", "2024W21", "SCREEN_CHEST_FLAGGED_PATIENTS"): "1",
        ("NORTH-01", "2024W21", "SCREEN_CHEST_TESTED"): "0",
        ("NORTH-01", "2024W21", "SCREEN_CHEST_CONFIRMED"): "0",
        ("NORTH-01", "2024W21", "SCREEN_CHEST_TREATMENT_STARTED"): "0",
    }


def test_the_dashboard_offers_the_exports_in_french(app):
    client = signed_in(app)
    client.post("/language", data={"language": "fr", "csrf_token": _csrf(client)})
    page = client.get("/").get_data(as_text=True)
    assert "Indicateurs pour DHIS2 (JSON)" in page and 'action="/export/results.csv"' in page


def _csrf(client) -> str:
    page = client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_hundreds_of_sites_are_shown_fifty_at_a_time(app):
    conn = app.extensions["hub_database"].connect()
    try:
        for n in range(58):
            store(conn, device(conn, f"ZONE-{n:03d}"), [result(1000 + n)])
    finally:
        conn.close()
    client = signed_in(app)
    first = client.get("/").get_data(as_text=True)
    assert "Sites 1–50 of 60" in first and "ZONE-047" in first and "ZONE-048" not in first
    second = client.get("/?page=2").get_data(as_text=True)
    assert "Sites 51–60 of 60" in second and "ZONE-057" in second and "ZONE-047" not in second
    assert client.get("/?page=99").status_code == 200  # the last page
