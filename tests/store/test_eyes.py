"""One result per eye and per patient for retina photos (store/eyes.py, issue 24): real
photos screened by the real bundles, eyes from file names and one tap, a blurred copy
refused as ungradable (a retake), the patient's result from the worse eye."""

from __future__ import annotations

import io
import json

import cv2
import pytest
from helpers import FUNDUS_DIR, testdata

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.ingest.laterality import laterality_from_name
from appliance.screening.pipeline import Screener
from appliance.store.db import Store
from appliance.store.eyes import EyeError, eyes_of, set_eye
from appliance.store.patients import set_patients
from appliance.worker import Worker

USER = {"username": "nurse"}


@pytest.mark.parametrize(
    ("name", "eye"),
    [
        ("P0042_OD.jpg", "R"),
        ("IMG_0001-L.JPG", "L"),
        ("right_eye_2.png", "R"),
        ("oeil-gauche.jpg", "L"),
        ("PatientOS.jpg", "L"),
        ("DCIM/100CANON/x_R.png", "R"),
        ("IDRiD_003.jpg", None),  # "ID", "Ri", "D": no eye
        ("IMG_0002.JPG", None),
        ("LeftRight.jpg", None),  # both: staff choose
        ("ROSE.jpg", None),
        (None, None),
    ],
)
def test_the_eye_from_a_cameras_file_name(name, eye):
    assert laterality_from_name(name) == eye


def blurred(path) -> bytes:
    pixels = cv2.imread(str(path))
    return cv2.imencode(".jpg", cv2.GaussianBlur(pixels, (0, 0), 12))[1].tobytes()


@pytest.fixture
def clinic(tmp_path, models):
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1)
    store = Store.open(config.data_dir)
    importer = Importer(store, config)

    def put(name: str, data: bytes) -> int:
        outcome = importer.import_stream(io.BytesIO(data), source="upload", original_name=name)
        assert outcome.status == "stored", outcome
        return outcome.image_id

    sick, healthy = FUNDUS_DIR / "IDRiD_003.jpg", FUNDUS_DIR / "hrf_07_h.jpg"
    ids = {
        "right": put("P7_OD_1.jpg", sick.read_bytes()),
        "right_blurred": put("P7_OD_2.jpg", blurred(sick)),
        "left_blurred": put("P7_OS_1.jpg", blurred(healthy)),
        "unsure": put("IMG_0009.jpg", healthy.read_bytes()),
        "chest": importer.import_path(testdata("RG1_UNCR.dcm"), source="dicom").image_id,
    }
    Worker(store, config, Screener(models, config), name="t").drain()
    yield store, ids
    store.close()


def test_each_eye_from_its_best_gradable_photo_and_the_patient_from_the_worse(clinic):
    store, ids = clinic
    photos = [ids[k] for k in ("right", "right_blurred", "left_blurred", "unsure")]
    set_patients(store, photos[0], photos[1:], "P-7", "", USER)

    eyes = eyes_of(store, ids["left_blurred"])
    assert eyes.eyes["R"].photos == [ids["right"], ids["right_blurred"]]
    assert eyes.eyes["R"].best["image_id"] == ids["right"]  # the blurred one was refused
    assert eyes.eyes["L"].photos == [ids["left_blurred"]] and eyes.eyes["L"].best is None
    assert eyes.retake == ["L"] and eyes.missing == []
    assert eyes.unassigned == [ids["unsure"]]
    assert eyes.worse["image_id"] == ids["right"]
    assert eyes_of(store, ids["chest"]) is None  # not a retina photo

    # One tap: the photo without an eye in its name is the left eye, and sharp.
    set_eye(store, ids["unsure"], "L", USER)
    eyes = eyes_of(store, ids["right"])
    assert eyes.retake == [] and eyes.unassigned == []
    assert eyes.eyes["L"].best["image_id"] == ids["unsure"]
    right, left = eyes.eyes["R"].best, eyes.eyes["L"].best
    assert right["probability"] > left["probability"]  # IDRiD_003 is referable
    assert eyes.worse == right
    audited = store.conn().execute(
        "SELECT actor, subject, detail FROM audit_log WHERE action = 'image.eye_chosen'"
    ).fetchall()
    assert [tuple(a) for a in audited] == [("nurse", f"image:{ids['unsure']}", "L")]
    revisions = store.conn().execute(
        "SELECT o.revision, o.payload FROM outbox o JOIN results r ON r.id = o.local_id"
        " WHERE o.kind = 'result' AND r.image_id = ? ORDER BY o.revision",
        (ids["unsure"],),
    ).fetchall()
    assert revisions[-1]["revision"] >= 2
    assert json.loads(revisions[-1]["payload"])["image"]["laterality"] == "L"


def test_a_photo_without_a_patient_stands_alone_and_a_device_eye_is_kept(clinic):
    store, ids = clinic
    alone = eyes_of(store, ids["right"])
    assert alone.eyes["R"].photos == [ids["right"]] and alone.missing == ["L"]
    with pytest.raises(EyeError, match="right or the left"):
        set_eye(store, ids["right"], "both", USER)
    with store.write() as conn:  # a DICOM retina photo whose header said the eye
        conn.execute(
            "UPDATE images SET file_format = 'dicom', laterality = 'R' WHERE id = ?",
            (ids["unsure"],),
        )
    with pytest.raises(EyeError, match="device gave"):
        set_eye(store, ids["unsure"], "L", USER)
