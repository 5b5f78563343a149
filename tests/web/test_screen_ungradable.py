"""A retina photo refused as not gradable, screened anyway on a clinician's word (issue
26, part 3): audited, kept with the image, screened by the real bundles, and its result
says so on the page and the slip; a nurse cannot, and nothing else can be screened so."""

from __future__ import annotations

import io

import cv2
import pytest
from helpers import FUNDUS_DIR, PIN, csrf_from, logged_in, testdata

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.store.eyes import eyes_of
from appliance.web import create_app
from appliance.worker import Worker


@pytest.fixture
def clinic(tmp_path, models):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    pixels = cv2.imread(str(FUNDUS_DIR / "IDRiD_003.jpg"))
    soft = cv2.imencode(".jpg", cv2.GaussianBlur(pixels, (0, 0), 12))[1].tobytes()
    ids = {
        "soft": importer.import_stream(
            io.BytesIO(soft), source="upload", original_name="K9_OD.jpg"
        ).image_id,
        "ct": importer.import_path(testdata("CT_small.dcm"), source="dicom").image_id,
    }
    worker = Worker(store, config, Screener(models, config), name="t")
    worker.drain()
    for role in users.ROLES:
        users.create_user(store, role, PIN, role)
    yield app, store, worker, ids
    store.close()


def latest(store, image_id: int) -> dict:
    row = store.conn().execute(
        "SELECT route, route_source, hints, probability FROM results WHERE image_id = ?"
        " ORDER BY id DESC LIMIT 1", (image_id,)).fetchone()
    return dict(row)


def test_a_clinician_has_an_ungradable_retina_screened_anyway(clinic):
    app, store, worker, ids = clinic
    assert latest(store, ids["soft"])["route_source"] == "quality"
    nurse = logged_in(app, "operator")
    assert 'id="screen-ungradable"' not in nurse.get(f"/study/{ids['soft']}").text
    token = csrf_from(nurse.get("/").text)
    assert nurse.post(f"/study/{ids['soft']}/screen-ungradable",
                      data={"csrf_token": token}).status_code == 403

    doctor = logged_in(app, "clinician")
    page = doctor.get(f"/study/{ids['soft']}").text
    assert 'id="screen-ungradable"' in page and "Image blurred" in page  # the advice stays
    token = csrf_from(page)
    saved = doctor.post(f"/study/{ids['soft']}/screen-ungradable",
                        data={"csrf_token": token}, follow_redirects=True)
    assert "the photo is being screened" in saved.text
    assert "Being screened although the photo is poor, as clinician chose" in saved.text
    assert worker.drain() == 1

    result = latest(store, ids["soft"])
    assert result["route"] == "fundus" and result["probability"] is not None
    said = ("Screened although the photo was judged not gradable (Image blurred: clean the "
            "lens, focus and retake.), on the instruction of clinician: read the result with "
            "care.")
    assert said in result["hints"]
    assert said in doctor.get(f"/study/{ids['soft']}").text
    assert said in doctor.get(f"/study/{ids['soft']}/slip").text
    audited = store.conn().execute(
        "SELECT actor, subject FROM audit_log WHERE action = 'image.quality_overruled'"
    ).fetchall()
    assert [tuple(a) for a in audited] == [("clinician", f"image:{ids['soft']}")]
    # The eye's result: this photo, the only one of that eye (no retake prompt now).
    assert eyes_of(store, ids["soft"]).eyes["R"].best["image_id"] == ids["soft"]

    # A CT refused by its tags cannot be screened so.
    refused = doctor.post(f"/study/{ids['ct']}/screen-ungradable",
                          data={"csrf_token": token}, follow_redirects=True)
    assert "Only a retina photo refused as not gradable can be screened so." in refused.text
    assert latest(store, ids["ct"])["route"] == "refused"
