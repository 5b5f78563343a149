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
from helpers import FUNDUS_DIR, testdata
from pydicom.encaps import encapsulate, generate_frames

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
        chest_result["model_name"] == "cxr-pneumonia" and chest_result["backend"] == "onnxruntime"
    )
    timings = json.loads(chest_result["timings"])
    assert {"decode", "gate", "preprocess", "infer", "postprocess"} <= set(timings)
    overlay = cv2.imread(str(store.data_dir / chest_result["heatmap_path"]), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (256, 241, 4)  # the preview's shape, small: the page stretches it
    refused = rows[ct.image_id]
    assert refused["route"] == "refused" and "CT scan" in refused["reason"]
    assert refused["score"] is None and refused["heatmap_path"] is None
    # The AI result is evidence: the database refuses to change it.
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        store.conn().execute("UPDATE results SET score=0")


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
    assert set(empty.errors) == {"modality-router", "cxr-pneumonia", "fundus-referable-dr"}
    importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    assert Worker(store, config, Screener(empty, config), name="t").run_once() is False
    assert jobs.counts(store)["queued"] == 1


def test_the_worker_reads_the_age_the_device_sent(importer, store, config, screener):
    from appliance.screening.pipeline import ADULT_CAUTION

    importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom")
    Worker(store, config, screener, name="t").drain()
    study = store.conn().execute("SELECT patient_birth_date FROM studies").fetchone()[0]
    hints = json.loads(store.conn().execute("SELECT hints FROM results").fetchone()[0])
    assert study == "19400305" and ADULT_CAUTION in hints
