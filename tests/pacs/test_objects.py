"""The SR and Secondary Capture built from a stored result: valid (highdicom reads them
back, dciodvfy finds no error), stable UIDs, one outbox row per PACS and version."""

from __future__ import annotations

import shutil
import subprocess
import threading

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from helpers import testdata
from pacs.kit import sr_values, stored_result

from appliance.pacs import facts as facts_module
from appliance.pacs.capture import build_capture
from appliance.pacs.facts import read_facts
from appliance.pacs.report import build_report
from appliance.pacs.targets import parse_target, register
from appliance.store import pacs_outbox
from appliance.store.reviews import add_review
from appliance.store.users import create_user

RG1 = "RG1_UNCR.dcm"


@pytest.fixture
def pacs_config(config):
    return config.with_overrides(pacs_destinations=["ORTHANC@127.0.0.1:4242", "VIEW@pacs:104:sc"])


def build(store, result_id, version=1):
    facts = read_facts(store, result_id, version)
    capture = build_capture(facts)
    return facts, capture, build_report(facts, capture)


def test_the_sr_carries_finding_score_threshold_triage_model_and_the_warning(store, importer):
    result_id = stored_result(store, importer, testdata(RG1))
    facts, capture, report = build(store, result_id)
    source = pydicom.dcmread(testdata(RG1), stop_before_pixels=True)
    # highdicom reads its own output back as a TID 1500 report
    again = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(_roundtrip(report)))
    assert again.StudyInstanceUID == source.StudyInstanceUID == capture.StudyInstanceUID
    assert again.SeriesInstanceUID not in (source.SeriesInstanceUID, capture.SeriesInstanceUID)
    values = sr_values(again)
    assert values["Probability"] == pytest.approx(0.8123)
    assert values["AI score (0-100)"] == 81
    assert values["Operating threshold (probability)"] == pytest.approx(0.42)
    assert values["Triage"] == "Urgent: see first"
    assert values["Pneumonia"] == "Flagged by the AI (at or above the threshold)"
    assert set(values["Algorithm Name"]) == {"cxr-pneumonia"}
    assert set(values["Algorithm Version"]) == {"1.1.0"}
    assert "not a diagnosis" in values["Comment"][0]
    references = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in _items(again)
        if item.ValueType == "IMAGE"
    ]
    assert source.SOPInstanceUID in references and capture.SOPInstanceUID in references
    assert again.CompletionFlag == "COMPLETE" and again.VerificationFlag == "UNVERIFIED"


def test_the_capture_has_the_banner_burned_in(store, importer):
    result_id = stored_result(store, importer, testdata(RG1))
    _, capture, _ = build(store, result_id)
    assert capture.BurnedInAnnotation == "YES"
    assert capture.PhotometricInterpretation == "RGB"
    pixels = capture.pixel_array
    banner = pixels[:10, :, :]
    assert (banner[..., 0] > 150).mean() > 0.5 and (banner[..., 1] < 50).mean() > 0.5  # red band
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        pydicom.dcmread(testdata(RG1), stop_before_pixels=True).SOPInstanceUID
    )


def test_uids_are_stable_and_a_new_version_names_the_one_before(store, importer):
    result_id = stored_result(store, importer, testdata(RG1))
    _, capture1, report1 = build(store, result_id)
    _, capture_again, report_again = build(store, result_id)
    assert capture_again.SOPInstanceUID == capture1.SOPInstanceUID
    assert report_again.SOPInstanceUID == report1.SOPInstanceUID
    _, capture2, report2 = build(store, result_id, version=2)
    assert capture2.SOPInstanceUID == capture1.SOPInstanceUID  # the picture did not change
    assert report2.SOPInstanceUID != report1.SOPInstanceUID
    assert report2.SeriesInstanceUID == report1.SeriesInstanceUID
    before = report2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert before.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == report1.SOPInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
def test_dciodvfy_finds_no_error_in_either_object(store, importer, tmp_path):
    result_id = stored_result(store, importer, testdata(RG1))
    _, capture, report = build(store, result_id)
    for name, obj in (("sc", capture), ("sr", report)):
        path = tmp_path / f"{name}.dcm"
        obj.save_as(path, enforce_file_format=True)
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}: {errors}"


def test_each_result_is_queued_for_each_pacs_in_its_own_transaction(store, importer, pacs_config):
    assert [t.address for t in register(store, pacs_config)] == [
        "ORTHANC@127.0.0.1:4242",
        "VIEW@pacs:104",
    ]
    result_id = stored_result(store, importer, testdata(RG1))
    rows = _pacs_rows(store)
    assert [(r["entry_id"], r["revision"], r["state"]) for r in rows] == [
        (f"result:{result_id}@ORTHANC@127.0.0.1:4242", 1, "pending"),
        (f"result:{result_id}@VIEW@pacs:104", 1, "pending"),
    ]
    image_id = rows[0]["image_id"]
    user = {"id": create_user(store, "nurse", "123456", "clinician"), "username": "nurse"}
    add_review(
        store, image_id=image_id, user=user, verdict="disagree", reasons=["false_alarm"], note=""
    )
    states = [(r["revision"], r["state"]) for r in _pacs_rows(store)]
    assert states == [(1, "superseded"), (1, "superseded"), (2, "pending"), (2, "pending")]


def test_no_pacs_configured_queues_nothing(store, importer, config):
    register(store, config)
    stored_result(store, importer, testdata(RG1))
    assert _pacs_rows(store) == []


def test_addresses_parse_with_one_kind_only():
    assert parse_target("PACS1@10.0.0.5:104:sr").objects == ("sr",)
    assert parse_target("PACS1@10.0.0.5:104").objects == ("sc", "sr")
    assert parse_target("PACS1@pacs.local:11112:sc").address == "PACS1@pacs.local:11112"


def _pacs_rows(store):
    return [
        dict(row)
        for row in store.conn().execute(
            "SELECT * FROM outbox WHERE destination = ? ORDER BY id", (pacs_outbox.PACS,)
        )
    ]


def _items(dataset):
    for item in dataset.ContentSequence:
        yield item
        if "ContentSequence" in item:
            yield from _items(item)


def _roundtrip(dataset):
    from io import BytesIO

    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def test_a_photo_without_dicom_gets_both_objects_and_its_typed_patient(
    store, importer, pacs_config, tmp_path
):
    from helpers import FUNDUS_DIR
    from pacs.test_worklist import FUNDUS_RESULT

    from appliance.store.patients import set_patient

    register(store, pacs_config)
    result_id = stored_result(store, importer, FUNDUS_DIR / "IDRiD_003.jpg", FUNDUS_RESULT)
    _, capture1, report1 = build(store, result_id)
    # a photo's SR points at the capture (there is no other image to point at)
    assert [
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for i in _items(report1)
        if i.ValueType == "IMAGE"
    ][-1] == capture1.SOPInstanceUID
    assert report1.StudyInstanceUID == capture1.StudyInstanceUID
    image_id = store.conn().execute("SELECT image_id FROM results").fetchone()[0]
    user = {"id": create_user(store, "nurse", "123456", "operator"), "username": "nurse"}
    set_patient(store, image_id, "P-7", "Banda Amina", user)
    assert [r["revision"] for r in _pacs_rows(store)][-2:] == [2, 2]  # a new SR version
    _, capture2, report2 = build(store, result_id, version=2)
    assert report2.PatientID == capture2.PatientID == "P-7"
    assert capture2.SOPInstanceUID != capture1.SOPInstanceUID  # the header changed
    if shutil.which("dciodvfy"):
        for name, obj in (("sc", capture2), ("sr", report2)):
            path = tmp_path / f"{name}.dcm"
            obj.save_as(path, enforce_file_format=True)
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert [x for x in done.stderr.splitlines() if x.startswith("Error")] == [], name


def test_a_sender_between_the_result_and_its_overlay_waits_for_the_overlay(
    store, importer, monkeypatch
):
    """The worker stores the result, then writes the overlay its row names (issue 28): a
    Secondary Capture built in between waits for it, and one whose overlay never comes
    (a power cut in between) is built without it once the wait is over."""
    heat = store.data_dir / "heatmaps" / "late.png"
    heat.parent.mkdir(parents=True, exist_ok=True)
    result_id = stored_result(store, importer, testdata(RG1), heatmap_path="heatmaps/late.png")
    overlay = np.zeros((300, 256, 4), np.uint8)
    overlay[..., 0], overlay[..., 3] = 255, 200
    late = threading.Timer(0.3, lambda: cv2.imwrite(str(heat), overlay))
    late.start()
    try:
        facts, capture, _ = build(store, result_id)
    finally:
        late.join()
    assert facts.heatmap == heat
    plain = capture_without_overlay(store, importer)
    assert np.abs(capture.pixel_array.astype(int) - plain).max() > 50  # laid over

    heat.unlink()
    monkeypatch.setattr(facts_module, "OVERLAY_WAIT_S", 0.2)
    assert read_facts(store, result_id, 1).heatmap is None  # never came: sent without it


def capture_without_overlay(store, importer) -> np.ndarray:
    return build(store, stored_result(store, importer, testdata(RG1)))[1].pixel_array
