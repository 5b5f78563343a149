"""Workers decode what was stored, keep a preview, and quarantine unreadable pixels."""

from __future__ import annotations

import json
import sqlite3
import time
from io import BytesIO

import cv2
import numpy as np
import pydicom
import pytest
from helpers import FUNDUS_DIR, adult_maps_shown, testdata
from pydicom.encaps import encapsulate, generate_frames

from appliance.screening.heatmaps import HEATMAP_NOT_SHOWN
from appliance.store import jobs
from appliance.worker import Worker


def test_worker_decodes_and_stores_a_preview(importer, store, config, screener):
    chest = importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom")
    photo = importer.import_path(FUNDUS_DIR / "IDRiD_003.jpg", source="usb")
    assert Worker(store, config, screener, name="t").drain() == 2
    rows = {r["id"]: r for r in store.conn().execute("SELECT * FROM images")}
    # RG1 J2K: one wavelet level skipped where libopenjp2 is present (978 px), else the
    # full frame shrunk to the 1024 px preview.
    reduced = json.loads(
        store.conn()
        .execute("SELECT decode_info FROM images WHERE id=?", (chest.image_id,))
        .fetchone()[0]
    )["reduced_by"]
    chest_shape = (978, 921) if reduced == 2 else (1024, 964)
    for image_id, shape in ((chest.image_id, chest_shape), (photo.image_id, (680, 1024, 3))):
        row = rows[image_id]
        assert row["state"] == "decoded"
        preview = cv2.imread(str(store.data_dir / row["preview_path"]), cv2.IMREAD_UNCHANGED)
        assert preview.shape == shape
    info = json.loads(rows[chest.image_id]["decode_info"])
    assert (
        info["inverted"] is True
        and info["voi"] == "window"
        and info["height"] == (978 if reduced == 2 else 1955)
    )
    assert jobs.counts(store) == {"queued": 0, "running": 0, "done": 2, "failed": 0}


def test_damaged_pixels_found_at_decode_are_quarantined_not_retried(
    importer, store, config, screener
):
    """The header checks pass (SIZ and end marker intact) but the codestream inside is
    garbage."""
    ds = pydicom.dcmread(testdata("RG1_J2KI.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    rng = np.random.default_rng(0)
    keep = 6 + int.from_bytes(frame[4:6], "big")  # SOC + SIZ
    frame[keep:-2] = rng.integers(0, 255, len(frame) - keep - 2, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([bytes(frame)])
    buffer = BytesIO()
    ds.save_as(buffer)
    outcome = importer.import_bytes(buffer.getvalue(), source="dicom")
    assert outcome.status == "stored"
    Worker(store, config, screener, name="t").drain()
    image = store.conn().execute("SELECT state FROM images").fetchone()
    quarantined = store.conn().execute("SELECT reason, image_id FROM quarantine").fetchone()
    assert image["state"] == "quarantined"
    assert quarantined["image_id"] == outcome.image_id
    assert "damaged" in quarantined["reason"]
    assert jobs.counts(store)["done"] == 1  # refused for good: not retried


def test_a_failing_job_is_retried_then_marked_failed(importer, store, config, screener):
    outcome = importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    stored = store.conn().execute("SELECT stored_path FROM images").fetchone()[0]
    (store.data_dir / stored).unlink()  # the original vanished (disk fault)
    worker = Worker(store, config.with_overrides(job_max_attempts=2), screener, name="t")
    assert worker.drain() == 2
    row = (
        store.conn()
        .execute(
            "SELECT state, attempts, last_error FROM jobs WHERE image_id=?", (outcome.image_id,)
        )
        .fetchone()
    )
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert "FileNotFoundError" in row["last_error"]


def test_screening_result_heatmap_and_job_completion_land_together(
    importer, store, config, screener
):
    chest = importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom")
    ct = importer.import_path(testdata("CT_small.dcm"), source="usb")
    assert Worker(store, config, screener, name="t").drain() == 2
    rows = {r["image_id"]: r for r in store.conn().execute("SELECT * FROM results")}
    chest_result = rows[chest.image_id]
    assert chest_result["route"] == "chest_xray" and 0 <= chest_result["score"] <= 100
    assert chest_result["triage"] in ("urgent", "review", "routine")
    assert (
        chest_result["model_name"] == "cxr-adult-abnormal"
        and chest_result["backend"] == "onnxruntime"
    )
    timings = json.loads(chest_result["timings"])
    assert {"decode", "gate", "preprocess", "infer", "postprocess"} <= set(timings)
    # the overlay lands with the result where the adult maps passed their checks
    # (models/heatmaps/cxr-adult-abnormal.json), else none
    if adult_maps_shown():
        assert (store.data_dir / chest_result["heatmap_path"]).is_file()
    else:
        assert chest_result["heatmap_path"] is None
    eye = importer.import_path(FUNDUS_DIR / "IDRiD_003.jpg", source="usb")
    assert Worker(store, config, screener, name="t").drain() == 1
    (eye_result,) = store.conn().execute("SELECT * FROM results WHERE image_id=?", (eye.image_id,))
    overlay = cv2.imread(str(store.data_dir / eye_result["heatmap_path"]), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (170, 256, 4)  # the preview's shape, small: the page stretches it
    refused = rows[ct.image_id]
    assert refused["route"] == "refused" and "CT scan" in refused["reason"]
    assert refused["score"] is None and refused["heatmap_path"] is None
    # The AI result is evidence: the database refuses to change it.
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        store.conn().execute("UPDATE results SET score=0")


def test_the_score_is_stored_first_and_a_map_that_cannot_be_written_loses_nothing(
    importer, store, config, screener
):
    """Issue 28: the result row is committed before its overlay is drawn and written (the
    worklist waits for the score, not for a picture that can be drawn again). Here the
    heatmaps folder cannot be made (a file holds its name): the result, its score and the
    job's completion stand, and only the overlay is missing."""
    (store.data_dir / "heatmaps").write_bytes(b"not a folder")
    eye = importer.import_path(FUNDUS_DIR / "IDRiD_003.jpg", source="usb")
    assert Worker(store, config, screener, name="t").drain() == 1
    (row,) = store.conn().execute("SELECT * FROM results WHERE image_id=?", (eye.image_id,))
    assert row["route"] == "fundus" and 0 <= row["score"] <= 100
    assert row["heatmap_path"] == f"heatmaps/{eye.image_id}.png"  # a map was to be shown
    assert not (store.data_dir / row["heatmap_path"]).exists()
    assert jobs.counts(store) == {"queued": 0, "running": 0, "done": 1, "failed": 0}


def test_a_worker_that_lost_its_lease_writes_no_result(importer, store, config, screener):
    """The result commits with the job's completion or not at all."""
    importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    slow = jobs.claim(store, "slow-worker", lease_seconds=0.01, max_attempts=3)
    time.sleep(0.05)
    fast = jobs.claim(store, "fast-worker", lease_seconds=60, max_attempts=3)
    assert fast.id == slow.id
    worker = Worker(store, config, screener, name="slow-worker")
    with pytest.raises(RuntimeError, match="lease lost"):
        worker.process(slow)
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    Worker(store, config, screener, name="fast-worker").process(fast)
    assert store.conn().execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1


def test_workers_wait_while_the_models_are_missing(importer, store, config):
    """No router loaded: jobs are not claimed (nothing is refused for want of a model)."""
    from appliance.screening.models import ModelSet
    from appliance.screening.pipeline import Screener

    empty = ModelSet(config.with_overrides(models_dir=str(store.data_dir / "nowhere"))).load()
    assert set(empty.errors) == {
        "modality-router",
        "cxr-pneumonia",
        "cxr-adult-abnormal",
        "fundus-referable-dr",
    }
    importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    assert Worker(store, config, Screener(empty, config), name="t").run_once() is False
    assert jobs.counts(store)["queued"] == 1


def chest_dicom(age: str | None, uid_suffix: str) -> bytes:
    """RG1 (a real chest CR) as a device that writes PatientAge would send it, or with
    no age at all (None): each a study of its own (the age is the study's)."""
    ds = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    for keyword in ("PatientBirthDate", "PatientAge"):
        if keyword in ds:
            delattr(ds, keyword)
    if age is not None:
        ds.PatientAge = age
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
        f"{ds.SOPInstanceUID}.{uid_suffix}"
    )
    ds.StudyInstanceUID = f"{ds.StudyInstanceUID}.{uid_suffix}"
    buffer = BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def worker_with(store, config, screener, **settings) -> Worker:
    """A worker (and its screener) with these settings in effect."""
    from appliance.screening.pipeline import Screener

    changed = config.with_overrides(**settings)
    return Worker(store, changed, Screener(screener.models, changed), name="t")


def stored_result(store, image_id: int):
    return (
        store.conn()
        .execute("SELECT * FROM results WHERE image_id=? ORDER BY id DESC", (image_id,))
        .fetchone()
    )


def test_the_age_the_device_sent_picks_the_chest_model(importer, store, config, screener):
    """PatientAge 045Y: the adult model; 003Y: the children's; no age but a birth date
    (RG1's own, 1940): adult; each result says which population and why."""
    adult = importer.import_bytes(chest_dicom("045Y", "1"), source="dicom").image_id
    child = importer.import_bytes(chest_dicom("003Y", "2"), source="dicom").image_id
    born = importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom").image_id
    # An age never waits, even where the site asks.
    assert worker_with(store, config, screener, chest_population="ask").drain() == 3
    expected = {
        adult: ("cxr-adult-abnormal", "adult"),
        child: ("cxr-pneumonia", "child"),
        born: ("cxr-adult-abnormal", "adult"),
    }
    for image_id, (model, population) in expected.items():
        row = stored_result(store, image_id)
        assert (row["model_name"], row["population"], row["population_source"]) == (
            model,
            population,
            "dicom_age",
        )
        assert row["score"] is not None
        assert [h for h in json.loads(row["hints"]) if h != HEATMAP_NOT_SHOWN] == []  # no caution
    assert (
        store.conn()
        .execute(
            "SELECT patient_birth_date FROM studies s JOIN images i ON i.study_id = s.id"
            " WHERE i.id=?",
            (born,),
        )
        .fetchone()[0]
        == "19400305"
    )


@pytest.mark.parametrize(
    "setting, model", [("child", "cxr-pneumonia"), ("adult", "cxr-adult-abnormal")]
)
def test_a_png_without_an_age_follows_the_site_setting(
    importer, store, config, screener, setting, model
):
    from helpers import TESTS

    png = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
    image_id = importer.import_path(png, source="usb").image_id
    worker_with(store, config, screener, chest_population=setting).drain()
    row = stored_result(store, image_id)
    assert (row["model_name"], row["population"], row["population_source"]) == (
        model,
        setting,
        "site_setting",
    )


def test_with_ask_an_x_ray_without_an_age_waits_for_a_choice_then_is_screened(
    importer, store, config, screener
):
    from appliance.store.population import choose_population

    asking = worker_with(store, config, screener, chest_population="ask")
    waiting = importer.import_bytes(chest_dicom(None, "3"), source="dicom").image_id
    eye = importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb").image_id
    assert asking.drain() == 2
    assert stored_result(store, waiting) is None  # no score until someone chooses
    assert stored_result(store, eye)["route"] == "fundus"  # only chest X-rays wait
    image = store.conn().execute("SELECT * FROM images WHERE id=?", (waiting,)).fetchone()
    assert image["waiting_for"] == "population" and image["state"] == "decoded"
    assert (store.data_dir / image["preview_path"]).is_file()  # the page can show it
    item = (
        store.conn()
        .execute("SELECT status, rank FROM worklist_items WHERE image_id=?", (waiting,))
        .fetchone()
    )
    assert tuple(item) == ("needs_population", 2)
    assert jobs.counts(store)["queued"] == 0  # parked, not retried

    choose_population(store, waiting, "child", {"username": "nurse"})
    assert jobs.counts(store)["queued"] == 1
    assert asking.drain() == 1
    row = stored_result(store, waiting)
    assert (row["model_name"], row["population"], row["population_source"]) == (
        "cxr-pneumonia",
        "child",
        "operator",
    )
    item = (
        store.conn()
        .execute("SELECT status FROM worklist_items WHERE image_id=?", (waiting,))
        .fetchone()
    )
    assert item["status"] == "screened"
    actions = [
        tuple(r)
        for r in store.conn().execute(
            "SELECT actor, action, detail FROM audit_log WHERE subject=? ORDER BY id",
            (f"image:{waiting}",),
        )
    ]
    assert ("worker", "image.waiting", "population") in actions
    assert ("nurse", "image.population_chosen", "child") in actions


def test_previews_and_heatmaps_are_regenerable_so_never_wait_for_an_fsync(
    importer, store, config, screener, monkeypatch
):
    """What the worker writes for people to look at is made again from the original:
    written whole (renamed into place) but not fsynced, so the result is not kept
    waiting for the disk. The original and the result row stay durable."""
    import os

    synced: set[tuple[int, int]] = set()
    real = os.fsync

    def observed(fd: int) -> None:
        real(fd)
        info = os.fstat(fd)
        synced.add((info.st_dev, info.st_ino))

    chest = importer.import_path(testdata("RG1_UNCR.dcm"), source="dicom")
    monkeypatch.setattr(os, "fsync", observed)
    assert Worker(store, config, screener, name="t").drain() == 1
    image = store.conn().execute("SELECT * FROM images WHERE id=?", (chest.image_id,)).fetchone()
    result = (
        store.conn()
        .execute("SELECT heatmap_path FROM results WHERE image_id=?", (chest.image_id,))
        .fetchone()
    )
    written = [image["preview_path"], f"previews/{chest.image_id}-thumb.jpg"]
    written += [result["heatmap_path"]] if result["heatmap_path"] else []
    for relative in written:
        info = (store.data_dir / relative).stat()
        assert (info.st_dev, info.st_ino) not in synced, relative
    assert list(store.tmp_dir.iterdir()) == []
    # RG1 (1955 x 1841) was read at half size for all of it: the preview is that image.
    preview = cv2.imread(str(store.data_dir / image["preview_path"]), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (977, 920)
    assert json.loads(image["decode_info"])["reduced_by"] == 2
