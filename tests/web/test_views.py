"""What the devices sent, in the words people use (web/views.py, web/reasons.py)."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from appliance.config import load_config
from appliance.web import create_app
from appliance.web.reasons import body_part_name
from appliance.web.views import local_datetime, person_name, source_label


@pytest.mark.parametrize(
    ("dicom", "shown"),
    [
        ("CompressedSamples^RG1", "CompressedSamples, RG1"),
        ("DOE^JANE^MARIE^Dr^Jr", "Dr DOE, JANE MARIE Jr"),
        ("Yamada^Tarou=山田^太郎", "Yamada, Tarou"),  # the alphabetic group only
        ("^Amina", "Amina"),
        ("Amina Diallo", "Amina Diallo"),  # typed on the box: as typed
        ("", ""),
        (None, ""),
    ],
)
def test_dicom_person_names_as_people_write_them(dicom, shown):
    assert person_name(dicom) == shown


@pytest.fixture
def app(tmp_path):
    app = create_app(load_config(tmp_path / "data", environ={}, usb_roots=[], timezone="UTC"))
    yield app
    app.extensions["appliance_store"].close()


def test_sources_body_parts_and_years_in_the_readers_words(app):
    rows = [
        {"source": "usb", "source_detail": "CAMERA:/media/CAMERA/DCIM/IMG_0001.JPG"},
        {"source": "dicom", "source_detail": "XRAY_ROOM@192.168.1.20"},
        {"source": "upload", "source_detail": "127.0.0.1"},
    ]
    with app.test_request_context():
        assert [source_label(r) for r in rows] == [
            "USB stick CAMERA",
            "Sent by XRAY_ROOM",
            "Uploaded",
        ]
        assert local_datetime("2026-11-28T14:05:00+00:00") == "28/11/2026 14:05"
        assert body_part_name("EXTREMITY", capital=True) == "Limb"
        assert body_part_name("SOMETHING_NEW") == "SOMETHING_NEW"  # as the device sent it
        with force_locale("fr"):
            assert source_label(rows[0]) == "Clé USB CAMERA"
            assert body_part_name("CHEST", capital=True) == "Thorax"
            assert local_datetime("2026-11-28T14:05:00+00:00") == "28/11/2026 14:05"
        with force_locale("pt_PT"):
            assert local_datetime("2026-11-28T14:05:00+00:00") == "28/11/2026 14:05"
            assert body_part_name("KNEE") == "joelho"
