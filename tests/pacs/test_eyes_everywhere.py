"""Two photos of each eye (issue 24): one result per eye and one per patient, and the
study page, the slip, the SR and the hub's FHIR say the same. Real photos screened by
the real bundles; the SR built as it is sent; FHIR from the payload the hub receives."""

from __future__ import annotations

import io
import json
import re

import pytest
from helpers import FUNDUS_DIR, PIN, logged_in

from appliance.config import load_config
from appliance.hub.fhir.resources import observations
from appliance.ingest.importer import Importer
from appliance.pacs.capture import build_capture
from appliance.pacs.facts import read_facts
from appliance.pacs.report import build_report, statements
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.store.eyes import eyes_of
from appliance.store.outbox import _result_payload
from appliance.store.patients import set_patients
from appliance.web import create_app
from appliance.worker import Worker

CAMERA = FUNDUS_DIR / "cameras"
PHOTOS = {  # file name on the card -> the photo
    "M3_OD_1.jpg": FUNDUS_DIR / "IDRiD_003.jpg",  # referable
    "M3_OD_2.jpg": CAMERA / "idrid" / "IDRiD_008.jpg",  # referable
    "M3_OS_1.jpg": FUNDUS_DIR / "hrf_07_h.jpg",  # healthy
    "M3_OS_2.jpg": CAMERA / "hrf" / "hrf_01_h.jpg",  # healthy
}


@pytest.fixture
def patient(tmp_path, models):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = {
        name: importer.import_stream(
            io.BytesIO(path.read_bytes()), source="upload", original_name=name
        ).image_id
        for name, path in PHOTOS.items()
    }
    Worker(store, config, Screener(models, config), name="t").drain()
    first, *others = ids.values()
    set_patients(store, first, others, "M-3", "", {"username": "nurse"})
    users.create_user(store, "nurse", PIN, "operator")
    yield app, store, ids
    store.close()


def test_page_slip_sr_and_hub_agree_on_each_eye_and_the_patient(patient):
    app, store, ids = patient
    eyes = eyes_of(store, ids["M3_OD_1.jpg"])
    assert eyes.eyes["R"].photos == [ids["M3_OD_1.jpg"], ids["M3_OD_2.jpg"]]
    assert eyes.eyes["L"].photos == [ids["M3_OS_1.jpg"], ids["M3_OS_2.jpg"]]
    assert eyes.retake == [] and eyes.unassigned == []
    right, left = eyes.eyes["R"].best, eyes.eyes["L"].best
    assert right is not None and left is not None
    assert eyes.worse == max(right, left, key=lambda p: p["probability"])
    expected = {"R": (right["triage"], right["score"]), "L": (left["triage"], left["score"])}

    client = logged_in(app, "nurse")
    for image_id in ids.values():  # every photo's page and slip give the same
        page = client.get(f"/study/{image_id}").text
        rows = re.findall(
            r'<tr data-eye="(\w)" data-state="graded">.*?<span class="badge (\w+)">.*?</span>'
            r"\s*(\d+)</a>", page, re.DOTALL)
        assert {eye: (triage, int(score)) for eye, triage, score in rows} == expected
        assert f'class="patient-result" data-triage="{eyes.worse["triage"]}"' in page
        slip = client.get(f"/study/{image_id}/slip").text
        assert f"Right eye: {right['triage']} ({right['score']})" in slip
        assert f"Left eye: {left['triage']} ({left['score']})" in slip
        assert f"Patient (worse eye): {eyes.worse['triage']}" in slip

        result_id = store.conn().execute(
            "SELECT MAX(id) FROM results WHERE image_id = ?", (image_id,)
        ).fetchone()[0]
        facts = read_facts(store, result_id, 1)
        capture = build_capture(facts)
        build_report(facts, capture)  # builds (highdicom validates as it goes)
        said = " ".join(statements(facts))
        assert f"right eye: {right['triage']} (score {right['score']})" in said
        assert f"left eye: {left['triage']} (score {left['score']})" in said
        assert f"patient (worse eye): {eyes.worse['triage']}" in said
        assert capture.Laterality == facts.image["laterality"]

        payload = _result_payload(store.conn(), result_id)
        payload = json.loads(json.dumps(payload))  # as the hub receives it
        made = observations(payload, {"status": "preliminary", "subject": {"display": "x"}})
        site = {"R": "18944008", "L": "8966001"}[facts.image["laterality"]]
        assert {o.bodySite.coding[0].code for o in made} == {site}
