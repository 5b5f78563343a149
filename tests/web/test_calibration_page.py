"""The Calibration page, outcomes on the study page, and monitoring on the System page
and /healthz, through the real app on a real data directory."""

from __future__ import annotations

import re
import shutil

import pytest
from helpers import csrf_from
from monitoring.cases import confirm, population, scored

from appliance.config import load_config
from appliance.monitoring.notices import MEASURES, TEMPLATES
from appliance.store import users
from appliance.web import create_app
from appliance.web.auth import ensure_api_token
from appliance.web.reasons import KNOWN

PIN = "2468"


def client_for(app, username: str):
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    assert (
        client.post("/login", data={"csrf_token": token, "username": username, "pin": PIN})
    ).status_code == 302
    return client


@pytest.fixture
def app(tmp_path):
    # A reserve of 70 % of the free disk: images are still stored, and the disk counts
    # as nearly full (under twice the reserve): a health warning, not a fault.
    reserve = int(shutil.disk_usage(tmp_path).free // 2**20 * 0.7)
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=reserve)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    for role in users.ROLES:
        users.create_user(store, role, PIN, role, "fr" if role == "clinician" else "en")
    yield app
    store.close()


def test_the_calibration_page_recommends_applies_and_rolls_back(app):
    store, config = app.extensions["appliance_store"], app.config["APPLIANCE"]
    scores, labels = population(240, seed=8)  # recommends 0.561: not in the bundle table
    confirm(store, scored(store, scores), labels)
    admin = client_for(app, "admin")
    page = admin.get("/calibration?model=cxr-pneumonia&target=0.9").text
    assert page.count("<svg") == 2  # the ROC curve and the histogram, drawn on the box
    assert 'class="roc"' in page and 'class="bar positive"' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no CDN
    threshold = re.search(r'name="threshold" value="([0-9.]+)"', page).group(1)
    assert "Of the last 240 images:" in page and "more missed among the confirmed" in page
    assert "Decision support, not a diagnosis" in page

    token = csrf_from(page)
    form = {"csrf_token": token, "model": "cxr-pneumonia", "target": "0.9"}
    stale = admin.post(
        "/calibration/apply", data={**form, "threshold": "0.123"}, follow_redirects=True
    )
    assert "The recommendation changed since the page was shown" in stale.text
    assert config.cxr_threshold == 0.0
    done = admin.post(
        "/calibration/apply", data={**form, "threshold": threshold}, follow_redirects=True
    )
    assert f"Threshold {float(threshold):g} applied to new results" in done.text
    assert config.cxr_threshold == float(threshold)  # the running app's settings too
    assert load_config(config.data_dir, environ={}).cxr_threshold == float(threshold)
    assert "calibrated" in done.text and 'id="rollback"' in done.text
    # Saving the Settings page untouched keeps the calibrated threshold (not in the
    # bundle's table of operating points, so offered on its own).
    settings = admin.get("/settings").text
    select = re.search(r'<select name="cxr_threshold">(.*?)</select>', settings, re.S).group(1)
    [chosen] = re.findall(r'<option value="([0-9.]+)" selected', select)
    assert float(chosen) == float(threshold) and "this site's own" in select
    admin.post("/settings", data={"csrf_token": token, "cxr_threshold": chosen})
    assert config.cxr_threshold == float(threshold)
    back = admin.post("/calibration/rollback", data=form, follow_redirects=True)
    assert "Threshold back to the bundle&#39;s own for new results." in back.text
    assert config.cxr_threshold == 0.0
    assert 'id="rollback"' not in back.text


def test_too_few_cases_means_no_button_and_a_reason(app):
    store = app.extensions["appliance_store"]
    confirm(store, scored(store, [0.9] * 5 + [0.1] * 5), [True] * 5 + [False] * 5)
    page = client_for(app, "admin").get("/calibration").text
    assert "Not enough confirmed cases to recommend a threshold: 5 positive and 5 negative" in page
    assert 'id="apply"' not in page


def test_a_clinician_enters_an_outcome_on_the_study_page_in_french(app):
    store = app.extensions["appliance_store"]
    [name] = scored(store, [0.7])
    clinician = client_for(app, "clinician")
    page = clinician.get("/study/1").text
    assert "Résultats de confirmation" in page and "Xpert MTB/RIF sur crachat" in page
    token = csrf_from(page)
    future = clinician.post(
        "/study/1/outcome",
        data={
            "csrf_token": token,
            "test": "xpert",
            "result": "positive",
            "tested_on": "2999-01-01",
        },
        follow_redirects=True,
    )
    assert "La date du test est dans le futur." in future.text
    saved = clinician.post(
        "/study/1/outcome",
        data={
            "csrf_token": token,
            "test": "culture",
            "result": "grade 3",
            "tested_on": "2024-05-02",
        },
        follow_redirects=True,
    )
    assert "Résultat de confirmation enregistré." in saved.text
    assert "<strong>Culture : grade 3</strong>" in saved.text
    assert "saisi par clinician" in saved.text
    operator = client_for(app, "operator")
    assert 'name="tested_on"' not in operator.get("/study/1").text  # clinicians and admins


def test_warnings_on_the_system_page_and_in_healthz_without_degrading_the_box(app):
    anonymous = app.test_client().get("/healthz")
    assert anonymous.status_code == 200 and "warnings" not in anonymous.json  # up or not
    token = ensure_api_token(app.config["APPLIANCE"].data_dir)
    health = app.test_client().get("/healthz", headers={"Authorization": f"Bearer {token}"})
    assert health.status_code == 200 and health.json["status"] == "ok"
    [warning] = health.json["warnings"]
    assert warning["code"] == "disk_low" and "The disk is nearly full" in warning["message"]
    french = client_for(app, "clinician").get("/system").text
    assert "Le disque est presque plein" in french
    assert "Accepter les images récentes comme normales" not in french  # admins only


def test_every_notice_is_known_to_the_pages():
    assert set(TEMPLATES.values()) <= set(KNOWN)
    assert set(MEASURES.values()) <= set(KNOWN)
