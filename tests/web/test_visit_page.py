"""A camera card's photos on their pages: one patient for the visit, or the previous
photo's patient in one tap (web/study.py, store/visits.py)."""

from __future__ import annotations

import re
from io import BytesIO

import cv2
import numpy as np
import pytest

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


def test_one_entry_for_the_visit_then_the_next_patient_is_not_the_same(card):
    app, client, token, ids = card
    page = client.get(f"/study/{ids[0]}").text
    assert "This visit: 2 photos" in page and "Same patient as the previous photo" not in page
    saved = client.post(
        f"/study/{ids[0]}/patient",
        data={"csrf_token": token, "patient_id": "P-1", "patient_name": "", "visit": "1"},
        follow_redirects=True,
    )
    assert "Patient saved for 2 photos of this visit." in saved.text
    assert patients(app) == ["P-1", "P-1", None, None]

    # The next visit offers the previous photo's patient, in one tap.
    page = client.get(f"/study/{ids[2]}").text
    assert "Same patient as the previous photo: P-1" in page
    client.post(
        f"/study/{ids[2]}/patient",
        data={"csrf_token": token, "same_as": str(ids[1]), "patient_id": "", "visit": "1"},
    )
    assert patients(app) == ["P-1", "P-1", "P-1", "P-1"]
    forged = client.post(f"/study/{ids[3]}/patient", data={"same_as": str(ids[1])})
    assert forged.status_code == 400  # CSRF, as on every form
