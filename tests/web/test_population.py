"""Adult or child on the page: a chest X-ray without an age waits on the worklist where
the site asks, staff choose on its study page (login, CSRF, audited), the worker screens
it with that model; the study page and the slip name the model that scored.
Real SQLite file, real bundles, Flask's test client."""

from __future__ import annotations

import html
import re

import pytest
from helpers import PIN, TESTS, csrf_from, logged_in, testdata

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.web import create_app
from appliance.worker import Worker

PNG_CHEST = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
CHILD_FINDINGS = (
    "Pattern suggesting pneumonia found on the chest X-ray.",
    "Not flagged for a pneumonia pattern by screening; this does not rule pneumonia out.",
)
ADULT_FINDINGS = (
    "TB-consistent findings on the chest X-ray — refer for a sputum test (e.g. Xpert MTB/RIF).",
    "Not flagged for TB-consistent findings by screening; this does not rule TB out.",
)


@pytest.fixture
def site(tmp_path, models):
    """A box that asks: a PNG chest X-ray (no age) waiting, RG1 (born 1940) screened,
    and a USB image still queued behind them."""
    config = load_config(
        tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1, chest_population="ask"
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = {
        "png": importer.import_path(PNG_CHEST, source="usb").image_id,
        "dicom": importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom").image_id,
    }
    worker = Worker(store, config, Screener(models, config), name="t")
    assert worker.drain() == 2
    ids["queued"] = importer.import_path(testdata("CT_small.dcm"), source="usb").image_id
    for role in users.ROLES:
        users.create_user(store, role, PIN, role)
    yield app, store, worker, ids
    store.close()


def test_the_waiting_x_ray_is_on_the_worklist_ahead_of_what_is_still_queued(site):
    app, _store, _worker, ids = site
    page = logged_in(app, "operator").get("/").text
    rows = re.findall(r'<tr class="triage-([\w]+)">.*?/study/(\d+)"', page, re.DOTALL)
    order = [(status, int(image_id)) for status, image_id in rows]
    assert ("needs_population", ids["png"]) in order and ("waiting", ids["queued"]) in order
    assert order.index(("needs_population", ids["png"])) < order.index(("waiting", ids["queued"]))
    assert "adult or child?" in page


def test_staff_choose_child_and_the_x_ray_is_screened_by_the_childrens_model(site):
    app, store, worker, ids = site
    png = ids["png"]
    client = logged_in(app, "operator")
    page = client.get(f"/study/{png}").text
    assert "Adult or child?" in page and "Waiting for screening" not in page
    buttons = re.findall(r'<button[^>]*name="population" value="(\w+)"[^>]*>([^<]+)<', page)
    assert buttons == [("adult", "Adult (16 or older)"), ("child", "Child (under 16)")]

    forged = client.post(f"/study/{png}/population", data={"population": "child"})
    assert forged.status_code == 400  # no CSRF token: refused, nothing chosen
    token = csrf_from(page)
    wrong = client.post(
        f"/study/{png}/population",
        data={"csrf_token": token, "population": "teenager"},
        follow_redirects=True,
    )
    assert "Choose adult or child." in wrong.text
    assert (
        store.conn().execute("SELECT population FROM images WHERE id=?", (png,)).fetchone()[0]
        is None
    )

    chosen = client.post(
        f"/study/{png}/population",
        data={"csrf_token": token, "population": "child"},
        follow_redirects=True,
    )
    assert "Choice saved: the X-ray is being screened." in chosen.text
    assert "Waiting for screening" in chosen.text and "Adult or child?" not in chosen.text
    image = store.conn().execute("SELECT * FROM images WHERE id=?", (png,)).fetchone()
    assert (image["population"], image["population_by"], image["waiting_for"]) == (
        "child",
        "operator",
        None,
    )
    audit = (
        store.conn()
        .execute("SELECT actor, detail FROM audit_log WHERE action='image.population_chosen'")
        .fetchone()
    )
    assert tuple(audit) == ("operator", "child")

    assert worker.drain() == 2  # the chosen X-ray and the CT queued behind it
    result = store.conn().execute("SELECT * FROM results WHERE image_id=?", (png,)).fetchone()
    assert (result["model_name"], result["population"], result["population_source"]) == (
        "cxr-pneumonia",
        "child",
        "operator",
    )
    scored_by = "Scored by the child chest X-ray model."
    # whichever version of the children's bundle is installed
    bundle = f"cxr-pneumonia {result['model_version']}"
    page = client.get(f"/study/{png}").text
    assert scored_by in page
    assert "cxr-pneumonia" not in page  # the nurse's page names no model file
    assert "Screened as a child, as chosen by operator." in page
    assert any(f in page for f in CHILD_FINDINGS)
    slip = client.get(f"/study/{png}/slip").text
    assert scored_by in slip and bundle in slip  # the printed record names the bundle
    assert any(f in slip for f in CHILD_FINDINGS) and "decision support" in slip.lower()

    again = client.post(
        f"/study/{png}/population",
        data={"csrf_token": token, "population": "adult"},
        follow_redirects=True,
    )
    assert "This X-ray is not waiting for a choice." in again.text
    assert (
        store.conn().execute("SELECT COUNT(*) FROM results WHERE image_id=?", (png,)).fetchone()[0]
        == 1
    )


def test_an_x_ray_with_an_age_names_the_adult_model_on_the_page_and_the_slip(site):
    app, _store, _worker, ids = site
    client = logged_in(app, "clinician")
    version = (
        app.extensions["appliance_store"]
        .conn()
        .execute("SELECT model_version FROM results WHERE image_id=?", (ids["dicom"],))
        .fetchone()[0]
    )
    named = "Scored by the adult chest X-ray model."
    bundle = f"cxr-adult-abnormal {version}"
    page = html.unescape(client.get(f"/study/{ids['dicom']}").text)
    assert named in page
    # The clinician finds the bundle in the Details, not in what a nurse reads.
    details = page.split('<details class="technical"', 1)
    assert len(details) == 2 and bundle not in details[0] and bundle in details[1]
    assert "Screened as an adult: the X-ray gives the patient's age (16 or older)." in page
    assert any(f in page for f in ADULT_FINDINGS)
    assert "Adult or child?" not in page  # an age never asks
    slip = client.get(f"/study/{ids['dicom']}/slip").text
    assert named in slip and bundle in slip and any(f in slip for f in ADULT_FINDINGS)
    assert "Chest, adult" in client.get("/").text


def test_the_hub_payload_says_which_population_and_model_scored(site):
    import json

    _app, store, _worker, ids = site
    payload = json.loads(
        store.conn()
        .execute(
            "SELECT o.payload FROM outbox o JOIN results r ON r.id = o.local_id"
            " WHERE o.kind='result' AND r.image_id=?",
            (ids["dicom"],),
        )
        .fetchone()[0]
    )
    assert payload["model"]["name"] == "cxr-adult-abnormal"
    assert (payload["population"], payload["population_source"]) == ("adult", "dicom_age")
