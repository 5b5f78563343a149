"""The referral slip says what a clinic needs and nothing it must not print (issue 24,
defect 7): the patient or room to write one, age and sex, which eye, not yet reviewed,
where to refer, a signature, the clinic's name and its time zone named; never the box's
own checks (web/study.py ``slip``, web/slip_facts.py, templates/study/slip.html)."""

from __future__ import annotations

import html
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import cv2
import pytest
from helpers import FUNDUS_DIR, TESTS, csrf_from, logged_in, testdata
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.config import load_config
from appliance.ingest.importer import Importer
from appliance.screening.heatmaps import HEATMAP_NOT_SHOWN
from appliance.screening.pipeline import Screener
from appliance.store import users
from appliance.web import create_app
from appliance.web.slip_facts import age_words
from appliance.worker import Worker

SITE = "Riverside Health Centre"
ZONE = "Africa/Maputo"


def fundus_dicom(folder, laterality: str):
    """A retina photo as an ophthalmic camera sends it: no patient, the eye it shows."""
    pixels = cv2.cvtColor(cv2.imread(str(FUNDUS_DIR / "hrf_12_h.jpg")), cv2.COLOR_BGR2RGB)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageLaterality = "OP", laterality
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    path = folder / f"eye-{laterality}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def clinic(tmp_path_factory, models):
    """A chest X-ray of a woman of 64 (RG1: PatientSex F, born 1940, seen 2004) and a
    left eye's photo without a patient, screened; a nurse and a clinician."""
    root = tmp_path_factory.mktemp("slip")
    config = load_config(
        root / "data",
        environ={},
        usb_roots=[],
        min_free_mb=1,
        site_name=SITE,
        timezone=ZONE,
        chest_population="adult",
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    importer = Importer(store, config)
    ids = {
        "chest": importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom").image_id,
        "eye": importer.import_path(fundus_dicom(root, "L"), source="dicom").image_id,
    }
    Worker(store, config, Screener(models, config), name="t").drain()
    users.create_user(store, "nurse", "2468", "operator")
    users.create_user(store, "dr", "2468", "clinician")
    yield app, ids
    store.close()


def slip_text(client, image_id: int) -> str:
    response = client.get(f"/study/{image_id}/slip")
    assert response.status_code == 200
    inline = re.sub(r"</?(strong|em|span)\b[^>]*>", "", response.text)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", inline)))


def test_a_photo_without_a_patient_says_so_and_leaves_room_to_write_it(clinic):
    app, ids = clinic
    page = logged_in(app, "nurse").get(f"/study/{ids['eye']}/slip").text
    text = slip_text(logged_in(app, "nurse"), ids["eye"])
    assert "Patient not yet named: write the name and ID by hand." in text
    assert "Patient —" not in text and "—  " not in text
    assert page.count('class="write"') == 4  # the patient, refer to, signature, date


def test_the_eye_age_and_sex_the_image_gave(clinic):
    app, ids = clinic
    nurse = logged_in(app, "nurse")
    eye = slip_text(nurse, ids["eye"])
    assert "Retina photo · Left eye" in eye
    chest = slip_text(nurse, ids["chest"])
    assert "64 years, female" in chest  # PatientSex F, PatientAge absent: from birth date
    assert "Left eye" not in chest and "Right eye" not in chest  # a chest has no eye


def test_not_yet_reviewed_until_a_clinician_reviews(clinic):
    app, ids = clinic
    nurse = logged_in(app, "nurse")
    assert "Clinician review Not yet reviewed by a clinician" in slip_text(nurse, ids["eye"])
    doctor = logged_in(app, "dr")
    token = csrf_from(doctor.get(f"/study/{ids['eye']}").text)
    saved = doctor.post(
        f"/study/{ids['eye']}/review",
        data={"csrf_token": token, "verdict": "agree", "note": ""},
    )
    assert saved.status_code == 302
    reviewed = slip_text(nurse, ids["eye"])
    assert "Not yet reviewed" not in reviewed and "Agreed — dr" in reviewed


def test_refer_to_and_signature_lines(clinic):
    app, ids = clinic
    text = slip_text(logged_in(app, "nurse"), ids["chest"])
    assert "Refer to" in text and "Signature" in text and " Date " in text


def test_no_caution_about_the_boxs_own_heatmap_checks(tmp_path, models):
    """A child's film: the child model's maps have not passed their checks (its manifest),
    which the page says and the slip, meant for the next clinician, does not."""
    config = load_config(tmp_path / "data", environ={}, usb_roots=[], min_free_mb=1,
                         chest_population="child")
    app = create_app(config)
    store = app.extensions["appliance_store"]
    film = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
    image_id = Importer(store, config).import_path(film, source="usb").image_id
    Worker(store, config, Screener(models, config), name="t").drain()
    users.create_user(store, "nurse", "2468", "operator")
    hints = store.conn().execute("SELECT hints FROM results WHERE image_id = ?",
                                 (image_id,)).fetchone()[0]
    assert HEATMAP_NOT_SHOWN in hints  # the child chest model's maps are not validated
    nurse = logged_in(app, "nurse")
    assert "Heatmap not shown" in nurse.get(f"/study/{image_id}").text  # on the page
    assert "Heatmap" not in slip_text(nurse, image_id)  # not on the slip
    store.close()


def test_the_clinics_name_and_times_in_its_zone_named(clinic):
    app, ids = clinic
    store = app.extensions["appliance_store"]
    created = (
        store.conn()
        .execute("SELECT created_at FROM results WHERE image_id = ?", (ids["chest"],))
        .fetchone()[0]
    )
    local = datetime.fromisoformat(created).astimezone(ZoneInfo(ZONE))
    text = slip_text(logged_in(app, "nurse"), ids["chest"])
    assert SITE in text and "Clinic ·" not in text
    assert f"Screened {local:%d/%m/%Y %H:%M}" in text
    assert "Time zone: Maputo (Mozambique), GMT+02:00" in text


@pytest.mark.parametrize(
    ("age", "born", "seen", "words"),
    [
        ("045Y", None, None, "45 years"),
        ("018M", None, None, "18 months"),
        ("001W", None, None, "1 week"),
        ("010D", None, None, "10 days"),
        (None, "19400305", "20040826", "64 years"),
        (None, "20250101", "20250920", "8 months"),
        ("45", None, None, ""),  # not DICOM's form: left off, never printed as sent
        (None, "junk", "20040826", ""),
        (None, None, None, ""),
    ],
)
def test_ages_in_words(clinic, age, born, seen, words):
    app, _ids = clinic
    with app.test_request_context():
        assert age_words(age, born, seen) == words
