"""The care cascade from a scripted programme: three real boxes (one de-identified) with
results, reviews, confirmatory outcomes and treatment starts, synced to a real hub;
the cascade page, the indicators CSV and the DHIS2 JSON all say the same numbers."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import date, timedelta

import pytest
from sync.synckit import FAST_RETRIES, HubThread, enrol

from appliance.config import load_config
from appliance.hub import cascade, records
from appliance.monitoring import outcome_import, outcomes
from appliance.store.db import Store
from appliance.store.results import insert_result
from appliance.store.reviews import add_review
from appliance.store.users import create_user, get_user
from appliance.sync.worker import SyncWorker

PASSWORD = "correct horse battery"
SCREENED = date.today() - timedelta(days=20)  # all screened that day; tests since
MODELS = {
    "chest_xray": {"name": "cxr-pneumonia", "version": "1.2.0", "sha256": "ab" * 32},
    "fundus": {"name": "fundus-dr", "version": "1.0.0", "sha256": "cd" * 32},
}


class Box:
    """One site's box, enrolled with the hub; images screened on ``SCREENED``."""

    def __init__(self, tmp_path, hub: HubThread, site: str, deidentify: bool = False) -> None:
        self.site = site
        data_dir = tmp_path / f"box-{site}"
        self.store = Store.open(data_dir)
        enrol(data_dir, hub.url, hub.enrol_code(site))
        self.config = load_config(
            data_dir,
            environ={},
            usb_roots=[],
            min_free_mb=1,
            sync_deidentify=deidentify,
            **FAST_RETRIES,
        )
        self.names: dict[str, list[str]] = {}
        self.doctor = get_user(self.store, create_user(self.store, "dr", "1357", "clinician"))

    def screen(self, patient: str, route: str, triage: str) -> str:
        """An image of ``patient`` with a result (the real insert_result: outbox too),
        sent to the hub dated ``SCREENED`` as if the box had screened it then (a result
        is never changed on the box: only what its outbox row says is moved back)."""
        n = sum(len(v) for v in self.names.values())
        name = f"{self.site}-{n}.png"
        stamp = f"{SCREENED.isoformat()}T09:{n:02d}:00+00:00"
        positive = triage in ("urgent", "review")
        result = {
            "route": route,
            "probability": 0.8 if positive else 0.1,
            "score": 80 if positive else 10,
            "threshold": 0.5,
            "triage": triage,
            "model": MODELS[route],
        }
        with self.store.write() as conn:
            study = conn.execute(
                "INSERT INTO studies (study_instance_uid, patient_id, study_date, created_at)"
                " VALUES (?, ?, ?, ?)",
                (f"2.25.{self.site}.{n}", patient, SCREENED.strftime("%Y%m%d"), stamp),
            ).lastrowid
            image = conn.execute(
                "INSERT INTO images (study_id, sop_instance_uid, file_format, source,"
                " original_name, sha256, size_bytes, stored_path, received_at, state)"
                " VALUES (?, ?, 'png', 'usb', ?, ?, 1, '', ?, 'decoded')",
                (
                    study,
                    f"2.25.9.{self.site}.{n}",
                    name,
                    hashlib.sha256(name.encode()).hexdigest(),
                    stamp,
                ),
            ).lastrowid
            result_id = insert_result(conn, image, None, result, None)
            conn.execute(
                "UPDATE outbox SET payload = json_set(payload, '$.created_at', ?)"
                " WHERE kind = 'result' AND local_id = ?",
                (stamp, result_id),
            )
        self.names.setdefault(patient, []).append(name)
        if positive:
            add_review(
                self.store, image_id=image, user=self.doctor, verdict="agree", reasons=[], note=""
            )
        return name

    def register(self, rows: list[str]) -> None:
        """The lab register: original_name, test, result, date, treatment columns."""
        text = "original_name,test,result,date,treatment_started,treatment_site\n"
        report = outcome_import.import_csv(
            self.store,
            text + "\n".join(rows) + "\n",
            entered_by="lab",
            source="csv:register.csv",
            match_days=14,
        )
        assert report.ok, report.problems

    def sync(self) -> None:
        report = SyncWorker(self.store, self.config).sync_once()
        assert report["refused"] == 0, report


def day(days: int) -> str:
    return (SCREENED + timedelta(days=days)).isoformat()


# What the script below must show: site -> programme -> figures.
EXPECTED = {
    "North": {
        "chest": {
            "screened": 5,
            "flagged": 4,
            "tested": 3,
            "confirmed": 2,
            "treatment_started": 1,
            "never_tested": 1,
            "days_to_test": 4.0,
        },
    },
    "South": {
        "chest": {
            "screened": 2,
            "flagged": 2,
            "tested": 1,
            "confirmed": 1,
            "treatment_started": 1,
            "never_tested": 1,
            "days_to_test": 1.0,
        },
        "retina": {
            "screened": 2,
            "flagged": 1,
            "tested": 1,
            "confirmed": 1,
            "treatment_started": 1,
            "never_tested": 0,
            "days_to_test": 3.0,
        },
    },
    "East": {
        "chest": {
            "screened": 2,
            "flagged": 2,
            "tested": 1,
            "confirmed": 0,
            "treatment_started": 0,
            "never_tested": 1,
            "days_to_test": 10.0,
        },
    },
}


@pytest.fixture
def programme(tmp_path, database_url):
    hub = HubThread(tmp_path / "hub", database_url)
    conn = hub.conn()
    records.set_admin(conn, "manager", PASSWORD)
    conn.close()
    north, south = Box(tmp_path, hub, "North"), Box(tmp_path, hub, "South")
    east = Box(tmp_path, hub, "East", deidentify=True)
    try:
        # North, chest: P1 confirmed and treated; P2 negative; P3 never tested; P4 not
        # flagged; P5 flagged on its second image, confirmed, not treated yet.
        p1, p2 = (
            north.screen("P1", "chest_xray", "urgent"),
            north.screen("P2", "chest_xray", "review"),
        )
        north.screen("P3", "chest_xray", "urgent")
        north.screen("P4", "chest_xray", "routine")
        north.screen("P5", "chest_xray", "routine")
        p5 = north.screen("P5", "chest_xray", "review")
        north.register(
            [
                f"{p1},xpert,positive,{day(2)},{day(5)},North District Hospital",
                f"{p2},xpert,negative,{day(4)},,",
                f"{p5},culture,positive,{day(6)},,",
            ]
        )
        # South: chest Q1 confirmed (typed on the page) and treated; Q2's only result was
        # entered in error (withdrawn): not tested. Retina R1 grade 3, treated; R2 routine.
        q1 = south.screen("Q1", "chest_xray", "urgent")
        q2 = south.screen("Q2", "chest_xray", "urgent")
        r1 = south.screen("R1", "fundus", "review")
        south.screen("R2", "fundus", "routine")
        image = (
            south.store.conn()
            .execute("SELECT id FROM images WHERE original_name = ?", (q1,))
            .fetchone()[0]
        )
        outcomes.add_outcome(
            south.store,
            image_id=image,
            user=south.doctor,
            test="xpert",
            result="positive",
            tested_on=day(1),
        )
        outcomes.add_treatment(
            south.store, image_id=image, user=south.doctor, started_on=day(3), place="South Clinic"
        )
        south.register(
            [
                f"{q2},xpert,positive,{day(2)},,",
                f"{q2},xpert,withdrawn,{day(2)},,",
                f"{r1},ophthalmologist,3,{day(3)},,",
                f"{r1},,,,{day(9)},Eye Unit",
            ]
        )
        # East (de-identified: the hub sees keyed hashes): E1 flagged twice, one patient;
        # tested negative 10 days on. E2 never tested.
        e1 = east.screen("E1", "chest_xray", "urgent")
        east.screen("E1", "chest_xray", "review")
        east.screen("E2", "chest_xray", "urgent")
        east.register([f"{e1},xpert,negative,{day(10)},,"])
        for box in (north, south, east):
            box.sync()
        yield hub
    finally:
        for box in (north, south, east):
            box.store.close()
        hub.close()


def signed_in(hub):
    client = hub.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/login", data={"username": "manager", "password": PASSWORD, "csrf_token": csrf}
    )
    assert answer.status_code == 302
    return client


def funnels(html: str) -> dict[str, dict[str, dict[str, str]]]:
    """site -> programme -> the figures a funnel shows (as text)."""
    found: dict[str, dict[str, dict[str, str]]] = {}
    for site, programme, body in re.findall(
        r'<figure class="funnel" data-site="([^"]*)" data-programme="(\w+)">(.*?)</figure>',
        html,
        re.S,
    ):
        figures = dict(re.findall(r'data-(?:stage|figure)="(\w+)">([^<]*)<', body))
        found.setdefault(site, {})[programme] = figures
    return found


def test_the_cascade_page_shows_each_sites_funnel_by_patient(programme):
    client = signed_in(programme)
    html = client.get("/cascade").get_data(as_text=True)
    shown = funnels(html)
    assert set(shown) == {"", "North", "South", "East"}  # "": all sites together
    for site, programmes in EXPECTED.items():
        assert set(shown[site]) == set(programmes)
        for name, figures in programmes.items():
            on_page = shown[site][name]
            for stage in cascade.STAGES + ("never_tested",):
                assert on_page[stage] == str(figures[stage]), (site, name, stage)
            assert on_page["days_to_test"] == f"{figures['days_to_test']:g}"
    assert shown["North"]["chest"]["never_tested_share"] == "25.0%"
    total = shown[""]["chest"]
    assert (total["screened"], total["flagged"], total["tested"], total["confirmed"]) == (
        "9",
        "8",
        "5",
        "3",
    )
    assert total["treatment_started"] == "2" and total["never_tested_share"] == "37.5%"
    assert total["days_to_test"] == "4"  # median of 2, 4, 6, 1, 10
    # one site, in French: its numbers as a French reader writes them
    client.post("/language", data={"language": "fr", "csrf_token": _csrf(html)})
    french = client.get("/cascade?site=North").get_data(as_text=True)
    assert set(funnels(french)) == {"North"}
    assert funnels(french)["North"]["chest"]["never_tested_share"] == "25,0\xa0%"
    # a period with no one screened
    empty = client.get("/cascade?from=2000-W01&to=2000-W02").get_data(as_text=True)
    assert funnels(empty) == {}
    assert client.get("/cascade?from=May").status_code == 400
    assert programme.app.test_client().get("/cascade").status_code == 302  # login first


def test_the_site_page_shows_its_funnel_and_the_programme_page_links_to_all(programme):
    client = signed_in(programme)
    assert 'href="/cascade"' in client.get("/").get_data(as_text=True)
    for site in ("North", "South"):
        page = funnels(client.get(f"/sites/{site}").get_data(as_text=True))
        alone = funnels(client.get(f"/cascade?site={site}").get_data(as_text=True))
        assert page[site] == alone[site]


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_the_exports_carry_the_same_cascade(programme):
    client = signed_in(programme)
    rows = list(
        csv.DictReader(io.StringIO(client.get("/export/indicators.csv").get_data(as_text=True)))
    )
    dhis2 = client.get("/export/indicators.json").get_json()["dataValues"]
    year, number, _ = SCREENED.isocalendar()
    week = f"{year}-W{number:02d}"
    values = {
        (v["orgUnit"], v["dataElement"]): v["value"]
        for v in dhis2
        if v["period"] == week.replace("-", "")
    }
    for site, programmes in EXPECTED.items():
        # everyone was flagged the same week (reviews and outcomes came in later weeks)
        [row] = [r for r in rows if r["site"] == site and r["week"] == week]
        for name in ("chest", "retina"):
            figures = programmes.get(name)
            for stage, code in (
                ("flagged", "FLAGGED_PATIENTS"),
                ("tested", "TESTED"),
                ("confirmed", "CONFIRMED"),
                ("treatment_started", "TREATMENT_STARTED"),
                ("days_to_test", "DAYS_TO_TEST_MEDIAN"),
            ):
                cell = row[f"{name}_{stage}"]
                value = values.get((site, f"SCREEN_{name.upper()}_{code}"))
                if figures is None:  # this site screens no one for this programme
                    assert cell == "" and value is None, (site, name, stage)
                    continue
                assert float(cell) == figures[stage], (site, name, stage)
                assert float(value) == figures[stage], (site, name, stage)
