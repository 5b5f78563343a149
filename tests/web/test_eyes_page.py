"""Retina photos on the study page (issue 24): which eye in one tap, each eye's result
and the patient's, and a retake prompt while an eye has no gradable photo. Real bundles,
real photos, Flask's test client on a real store."""

from __future__ import annotations

import io
import re

import cv2
import pytest
from helpers import FUNDUS_DIR, PIN, csrf_from, logged_in

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.store.patients import set_patients
from appliance.web import create_app
from appliance.worker import Worker


@pytest.fixture
def eyes(tmp_path, models):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    sick = FUNDUS_DIR / "IDRiD_003.jpg"
    soft = cv2.imencode(".jpg", cv2.GaussianBlur(cv2.imread(str(sick)), (0, 0), 12))[1]
    ids = [
        importer.import_stream(io.BytesIO(data), source="upload", original_name=name).image_id
        for name, data in (
            ("K12_right.jpg", sick.read_bytes()),
            ("K12_left.jpg", soft.tobytes()),
            ("IMG_0001.jpg", (FUNDUS_DIR / "hrf_07_h.jpg").read_bytes()),
        )
    ]
    Worker(store, config, Screener(models, config), name="t").drain()
    set_patients(store, ids[0], ids[1:], "K-12", "", {"username": "nurse"})
    for role in users.ROLES:
        users.create_user(store, role, PIN, role)
    yield app, ids
    store.close()


def states(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-eye="(\w)" data-state="(\w+)"', page))


def test_each_eye_and_the_patient_on_the_page_then_one_tap_for_the_unknown_eye(eyes):
    app, (right, left, unknown) = eyes
    client = logged_in(app, "operator")
    page = client.get(f"/study/{left}").text
    assert states(page) == {"R": "graded", "L": "retake"}
    assert "No gradable photo: retake this eye." in page
    assert "1 photo of this patient does not say which eye" in page
    assert re.search(r'class="patient-result" data-triage="(urgent|review)"', page)

    token = csrf_from(client.get(f"/study/{unknown}").text)
    saved = client.post(f"/study/{unknown}/eye", data={"csrf_token": token, "eye": "L"},
                        follow_redirects=True)
    assert "Eye saved." in saved.text
    page = client.get(f"/study/{right}").text
    assert states(page) == {"R": "graded", "L": "graded"}
    assert "does not say which eye" not in page
    refused = client.post(f"/study/{unknown}/eye", data={"csrf_token": token, "eye": "X"},
                          follow_redirects=True)
    assert "Choose the right or the left eye." in refused.text


def test_the_worklist_names_the_eye_and_a_retina_is_offered_no_sputum_test(eyes):
    app, (right, _left, _unknown) = eyes
    worklist = logged_in(app, "clinician").get("/").text
    assert worklist.count(">Right eye<") == 1 and ">Eye<" in worklist
    page = logged_in(app, "clinician").get(f"/study/{right}").text
    offered = re.search(r'<select name="test">(.*?)</select>', page, re.DOTALL).group(1)
    assert "Ophthalmologist" in offered.split("</option>")[0]  # the usual test first
    assert "Xpert" not in offered and "Sputum" not in offered


def test_the_slip_gives_each_eye_and_the_patient(eyes):
    app, (right, left, unknown) = eyes
    client = logged_in(app, "operator")
    token = csrf_from(client.get(f"/study/{unknown}").text)
    client.post(f"/study/{unknown}/eye", data={"csrf_token": token, "eye": "L"})
    slip = client.get(f"/study/{unknown}/slip").text
    spans = dict(re.findall(r'<span data-eye="(\w)">([^<]*)', slip))
    assert spans["R"].startswith("Right eye: ") and spans["L"].startswith("Left eye: ")
    page = client.get(f"/study/{right}").text
    triage = re.search(r'class="patient-result" data-triage="(\w+)"', page).group(1)
    assert f"Patient (worse eye): {triage}" in slip
    assert client.get(f"/study/{left}/slip").status_code == 404  # refused: a retake
