"""The modality worklist from Orthanc's own worklist plugin (Debian's orthanc package
ships libModalityWorklists): today's procedures cached, offered on the study page of a
fundus photo without a patient, one tap attaches the patient; a DICOM image whose
patient is scheduled gets the accession number; the cache outlives a RIS outage."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from helpers import FUNDUS_DIR, FUNDUS_RESULT, testdata
from pacs.kit import stored_result
from pacs.orthanc import WORKLIST_PLUGIN, Orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance.config import load_config
from appliance.errors import PacsUnreachableError
from appliance.ingest.importer import Importer
from appliance.pacs import worklist
from appliance.pacs.status import pacs_status
from appliance.store import mwl, users
from appliance.web import create_app

PIN = "2468"


def write_entry(
    folder: Path,
    name: str,
    *,
    patient_id,
    patient_name,
    modality,
    day,
    time,
    accession,
    station="FUNDUSCAM",
) -> None:
    """A worklist file as Orthanc's plugin reads them (a DICOM file, ``.wl``)."""
    ds = Dataset()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = generate_uid()
    ds.RequestedProcedureDescription = f"{modality} screening"
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = day.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = time
    step.Modality = modality
    step.ScheduledProcedureStepDescription = f"{modality} screening"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / f"{name}.wl", enforce_file_format=True)


@pytest.fixture
def ris(tmp_path):
    if not WORKLIST_PLUGIN.exists():
        pytest.skip("Orthanc's worklist plugin (libModalityWorklists) is not installed")
    server = Orthanc(tmp_path / "ris", aet="RIS")
    yield server
    server.stop()


@pytest.fixture
def mwl_config(config, ris):
    config = config.with_overrides(mwl_address=ris.address, timezone="UTC")
    day = worklist.today(config)
    write_entry(
        ris.worklists,
        "eye",
        patient_id="P-EYE-1",
        patient_name="Banda^Amina",
        modality="OP",
        day=day,
        time="0930",
        accession="ACC-EYE-1",
    )
    write_entry(
        ris.worklists,
        "chest",
        patient_id="9RG1",
        patient_name="Phiri^Joseph",
        modality="CR",
        day=day,
        time="1000",
        accession="ACC-CXR-1",
        station="XRAY1",
    )
    write_entry(
        ris.worklists,
        "tomorrow",
        patient_id="P-LATER",
        patient_name="Later^Lu",
        modality="OP",
        day=day + timedelta(days=1),
        time="0900",
        accession="ACC-LATER",
    )
    return config


def test_today_is_cached_and_kept_through_a_ris_outage(store, mwl_config, ris):
    assert worklist.refresh(store, mwl_config) == 2
    day = worklist.today(mwl_config).isoformat()
    cached = {e["patient_id"]: e for e in mwl.entries_for(store.conn(), day)}
    assert sorted(cached) == ["9RG1", "P-EYE-1"]
    assert cached["P-EYE-1"]["accession_number"] == "ACC-EYE-1"
    assert cached["P-EYE-1"]["modality"] == "OP" and cached["P-EYE-1"]["scheduled_time"] == "09:30"
    assert cached["P-EYE-1"]["patient_name"] == "Banda Amina"
    ris.stop()
    with pytest.raises(PacsUnreachableError):
        worklist.refresh(store, mwl_config)
    assert len(mwl.entries_for(store.conn(), day)) == 2  # still offered during the outage
    state = pacs_status(store, mwl_config)["worklist"]
    assert "could not be reached" in state["last_error"] and state["last_success_at"]
    assert state["entries"] == 2


def test_a_fundus_photo_gets_its_patient_from_one_tap(tmp_path, mwl_config):
    config = load_config(
        tmp_path / "web",
        environ={},
        usb_roots=[],
        min_free_mb=1,
        mwl_address=mwl_config.mwl_address,
        timezone="UTC",
    )
    app = create_app(config)
    store = app.extensions["appliance_store"]
    worklist.refresh(store, config)
    stored_result(store, Importer(store, config), FUNDUS_DIR / "IDRiD_003.jpg", FUNDUS_RESULT)
    image_id = store.conn().execute("SELECT id FROM images").fetchone()[0]
    users.create_user(store, "nurse", PIN, "operator")
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "nurse", "pin": PIN})
    page = client.get(f"/study/{image_id}").text
    assert "Scheduled today (worklist): tap the patient." in page
    assert "Banda Amina" in page and "Phiri Joseph" not in page  # a photo: OP, not CR
    entry = re.search(r'name="mwl_entry" value="(\d+)"', page).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    tapped = client.post(
        f"/study/{image_id}/patient", data={"csrf_token": token, "mwl_entry": entry}
    )
    assert tapped.status_code == 302
    study = (
        store.conn()
        .execute(
            "SELECT entered_patient_id, entered_patient_name, entered_by, accession_number"
            " FROM studies"
        )
        .fetchone()
    )
    assert tuple(study) == ("P-EYE-1", "Banda Amina", "nurse", "ACC-EYE-1")
    assert "Scheduled today" not in client.get(f"/study/{image_id}").text
    store.close()


def test_a_dicom_image_of_a_scheduled_patient_gets_the_accession_number(
    store, importer, mwl_config, tmp_path
):
    rg1 = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    rg1.AccessionNumber = ""
    rg1.StudyDate = worklist.today(mwl_config).strftime("%Y%m%d")
    rg1.StudyInstanceUID = generate_uid()
    rg1.SOPInstanceUID = generate_uid()
    rg1.save_as(tmp_path / "rg1.dcm")
    worklist.refresh(store, mwl_config)
    importer.import_path(tmp_path / "rg1.dcm", source="dicom")
    assert store.conn().execute("SELECT accession_number FROM studies").fetchone()[0] == (
        "ACC-CXR-1"
    )
