"""Workers decode what was stored, keep a preview, and quarantine unreadable pixels."""

from __future__ import annotations

import json
from io import BytesIO

import cv2
import numpy as np
import pydicom
from helpers import FUNDUS_DIR, testdata
from pydicom.encaps import encapsulate, generate_frames

from appliance.store import jobs
from appliance.worker import Worker


def test_worker_decodes_and_stores_a_preview(importer, store, config):
    chest = importer.import_path(testdata("RG1_J2KI.dcm"), source="dicom")
    photo = importer.import_path(FUNDUS_DIR / "IDRiD_003.jpg", source="usb")
    assert Worker(store, config, name="t").drain() == 2
    rows = {r["id"]: r for r in store.conn().execute("SELECT * FROM images")}
    for image_id, shape in ((chest.image_id, (1024, 964)), (photo.image_id, (680, 1024, 3))):
        row = rows[image_id]
        assert row["state"] == "decoded"
        preview = cv2.imread(str(store.data_dir / row["preview_path"]), cv2.IMREAD_UNCHANGED)
        assert preview.shape == shape
    info = json.loads(rows[chest.image_id]["decode_info"])
    assert info["inverted"] is True and info["voi"] == "window" and info["height"] == 1955
    assert jobs.counts(store) == {"queued": 0, "running": 0, "done": 2, "failed": 0}


def test_damaged_pixels_found_at_decode_are_quarantined_not_retried(importer, store, config):
    """The header checks pass (end marker intact) but the codestream inside is garbage."""
    ds = pydicom.dcmread(testdata("RG1_J2KI.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    rng = np.random.default_rng(0)
    frame[2:-2] = rng.integers(0, 255, len(frame) - 4, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([bytes(frame)])
    buffer = BytesIO()
    ds.save_as(buffer)
    outcome = importer.import_bytes(buffer.getvalue(), source="dicom")
    assert outcome.status == "stored"
    Worker(store, config, name="t").drain()
    image = store.conn().execute("SELECT state FROM images").fetchone()
    quarantined = store.conn().execute("SELECT reason, image_id FROM quarantine").fetchone()
    assert image["state"] == "quarantined"
    assert quarantined["image_id"] == outcome.image_id
    assert "damaged" in quarantined["reason"]
    assert jobs.counts(store)["done"] == 1  # refused for good: not retried


def test_a_failing_job_is_retried_then_marked_failed(importer, store, config):
    outcome = importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb")
    stored = store.conn().execute("SELECT stored_path FROM images").fetchone()[0]
    (store.data_dir / stored).unlink()  # the original vanished (disk fault)
    worker = Worker(store, config.with_overrides(job_max_attempts=2), name="t")
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
