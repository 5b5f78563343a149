"""A camera card's photos on their pages: one patient for the visit, or the previous
photo's patient in one tap (web/study.py, store/visits.py)."""

from __future__ import annotations

import re
from io import BytesIO

import cv2
import numpy as np
import pytest
from helpers import csrf_from, logged_in

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.store import users
from appliance.web import create_app

PIN = "2468"
T0 = 1_790_000_000.0


def photo(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return cv2.imencode(".png", cv2.resize(pixels, (256, 256)))[1].tobytes()


@pytest.fixture
def card(tmp_path):
    """Two photos of one patient, then 30 minutes later two of the next (not screened:
    the pages need no result to name a patient)."""
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = [
        importer.import_stream(
            BytesIO(photo(seed)),
            source="usb",
            source_detail="CARD",
            original_name=f"IMG_{seed}.PNG",
            file_time=T0 + minutes * 60,
        ).image_id
        for seed, minutes in ((1, 0), (2, 1), (3, 31), (4, 32))
    ]
    users.create_user(store, "nurse", PIN, "operator")
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)[1]
    client.post("/login", data={"csrf_token": token, "username": "nurse", "pin": PIN})
    # The session is new once signed in: so is its token.
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)[1]
    yield app, client, token, ids
    store.close()


def patients(app) -> list[str | None]:
    rows = app.extensions["appliance_store"].conn().execute(
        "SELECT s.entered_patient_id FROM images i JOIN studies s ON s.id = i.study_id"
        " ORDER BY i.id"
    )
    return [row[0] for row in rows]


def test_one_entry_for_the_photos_ticked_then_the_next_patient_is_not_the_same(card):
    app, client, token, ids = card
    page = client.get(f"/study/{ids[0]}").text
    assert "Other photos from the same batch" in page
    assert "Same patient as the previous photo" not in page
    assert re.findall(r'name="also" value="(\d+)"', page) == [str(ids[1])]
    saved = client.post(
        f"/study/{ids[0]}/patient",
        data={"csrf_token": token, "patient_id": "P-1", "patient_name": "", "also": ids[1]},
        follow_redirects=True,
    )
    assert "Patient saved for 2 photos of this visit." in saved.text
    assert patients(app) == ["P-1", "P-1", None, None]

    # The next visit offers the previous photo's patient, in one tap.
    page = client.get(f"/study/{ids[2]}").text
    assert "Same patient as the previous photo: P-1" in page
    client.post(
        f"/study/{ids[2]}/patient",
        data={"csrf_token": token, "same_as": str(ids[1]), "patient_id": "", "also": ids[3]},
    )
    assert patients(app) == ["P-1", "P-1", "P-1", "P-1"]
    forged = client.post(f"/study/{ids[3]}/patient", data={"same_as": str(ids[1])})
    assert forged.status_code == 400  # CSRF, as on every form


def test_ten_peoples_images_in_one_upload_cannot_get_one_name_in_one_tap(tmp_path):
    """Issue 24 (1): ten files uploaded at once were "This visit: 8 photos" with "Save for
    all" already ticked. A batch is not a visit: nothing is ticked, and a Save names the
    photo on screen only; a photo ticked from another batch is never named."""
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = [
        importer.import_stream(
            BytesIO(photo(seed)), source="upload", source_detail="127.0.0.1",
            original_name=f"person{seed}.png", visit_key="upload:batch-1",
            file_time=T0 + seed,
        ).image_id
        for seed in range(10)
    ]
    elsewhere = importer.import_stream(
        BytesIO(photo(99)), source="upload", original_name="x.png",
        visit_key="upload:batch-2", file_time=T0,
    ).image_id
    users.create_user(store, "nurse", PIN, "operator")
    client = logged_in(app, "nurse")
    token = csrf_from(client.get("/").text)
    try:
        page = client.get(f"/study/{ids[0]}").text
        assert len(re.findall(r'name="also"', page)) == 9
        assert "checked" not in re.sub(r"<option[^>]*>", "", page)
        client.post(f"/study/{ids[0]}/patient",
                    data={"csrf_token": token, "patient_id": "P-1", "visit": "1"})
        assert patients(app) == ["P-1"] + [None] * 10
        client.post(f"/study/{ids[1]}/patient",
                    data={"csrf_token": token, "patient_id": "P-2", "also": elsewhere})
        assert patients(app) == ["P-1", "P-2"] + [None] * 9
    finally:
        store.close()
