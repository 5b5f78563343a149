"""The common import path: dedupe, atomic store, quarantine, full disk, crash recovery."""

from __future__ import annotations

import subprocess
from io import BytesIO

import pydicom
import pytest
from helpers import FUNDUS_DIR, count_rows, testdata

from appliance.errors import StorageFullError
from appliance.ingest.importer import Importer, recover
from appliance.store.images import list_quarantine, list_studies


def test_stored_image_has_metadata_file_job_and_audit_in_one_go(importer, store):
    outcome = importer.import_path(testdata("RG1_UNCR.dcm"), source="cli")
    assert outcome.status == "stored"
    row = store.conn().execute("SELECT * FROM images WHERE id=?", (outcome.image_id,)).fetchone()
    assert (row["modality"], row["body_part"], row["view_position"]) == ("CR", "CHEST", "PA")
    assert row["sop_instance_uid"] and row["rows"] == 1955 and row["columns"] == 1841
    stored = store.data_dir / row["stored_path"]
    assert stored.read_bytes() == testdata("RG1_UNCR.dcm").read_bytes()
    job = (
        store.conn()
        .execute("SELECT kind, state FROM jobs WHERE image_id=?", (outcome.image_id,))
        .fetchone()
    )
    assert tuple(job) == ("screen", "queued")
    assert count_rows(store, "audit_log") == 1
    study = list_studies(store)[0]
    assert study["patient_id"] == "9RG1" and study["patient_name"] == "CompressedSamples^RG1"


def test_same_sop_instance_twice_is_one_image(importer, store):
    first = importer.import_path(testdata("RG1_UNCR.dcm"), source="usb")
    # Same SOP Instance UID, different bytes (re-encoded by the sender): still one image.
    ds = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    ds.InstitutionName = "Re-sent"
    buffer = BytesIO()
    ds.save_as(buffer)
    second = importer.import_bytes(buffer.getvalue(), source="dicom")
    assert (first.status, second.status) == ("stored", "duplicate")
    assert second.image_id == first.image_id
    assert count_rows(store, "images") == 1 and count_rows(store, "jobs") == 1


def test_same_photo_twice_is_one_image_by_sha256(importer, store):
    photo = FUNDUS_DIR / "hrf_12_h.jpg"
    outcomes = [importer.import_path(photo, source=s) for s in ("usb", "folder", "upload")]
    assert [o.status for o in outcomes] == ["stored", "duplicate", "duplicate"]
    row = store.conn().execute("SELECT file_format, rows, columns FROM images").fetchone()
    assert tuple(row) == ("jpeg", 701, 1051)


def test_refused_file_is_kept_in_quarantine_with_reason(importer, store):
    outcome = importer.import_bytes(b"%PDF-1.5\n...", source="usb", original_name="report.pdf")
    assert outcome.status == "quarantined"
    assert outcome.reason == "This is a PDF document, not an image."
    [row] = list_quarantine(store)
    assert row["original_name"] == "report.pdf"
    assert (store.data_dir / row["stored_path"]).read_bytes() == b"%PDF-1.5\n..."
    assert count_rows(store, "images") == 0 and count_rows(store, "jobs") == 0
    # the same bad file again adds no second copy
    importer.import_bytes(b"%PDF-1.5\n...", source="usb", original_name="report.pdf")
    assert count_rows(store, "quarantine") == 1


def test_file_over_the_size_limit_is_refused_in_place(store, config, tmp_path):
    small = Importer(store, config.with_overrides(upload_max_mb=1))
    big = tmp_path / "huge.dcm"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    outcome = small.import_path(big, source="usb")
    assert outcome.status == "refused" and "larger than the 1 MB limit" in outcome.reason
    assert big.exists() and not any((store.data_dir / "quarantine").iterdir())


def test_reserve_exhausted_refuses_and_stores_nothing(store, config):
    full = Importer(store, config.with_overrides(min_free_mb=10**9))
    with pytest.raises(StorageFullError, match="disk nearly full"):
        full.import_path(testdata("RG1_UNCR.dcm"), source="dicom")
    assert count_rows(store, "images") == 0
    assert not any((store.data_dir / "images").rglob("*.dcm"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 3 MB filesystem (tmpfs), so the disk really fills up."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_really_full_disk_raises_storage_full_and_leaves_no_partial_file(tiny_disk):
    from appliance.config import load_config
    from appliance.store.db import Store

    config = load_config(tiny_disk / "data", environ={}, min_free_mb=0)
    store = Store.open(config.data_dir)
    importer = Importer(store, config)
    with pytest.raises(StorageFullError):
        importer.import_path(testdata("RG1_UNCR.dcm"), source="dicom")  # 7 MB > 3 MB
    assert not list((store.data_dir / "tmp").iterdir())  # temp file cleaned up
    assert count_rows(store, "images") == 0
    # and the box still works for what fits
    assert importer.import_path(FUNDUS_DIR / "hrf_12_h.jpg", source="usb").status == "stored"
    store.close()


def test_recover_clears_temp_files_and_keeps_orphaned_originals(importer, store, config):
    """A crash after the rename but before the commit leaves a complete, unrecorded file."""
    raw = testdata("RG1_UNCR.dcm").read_bytes()
    from appliance.store.files import sha256_bytes

    sha = sha256_bytes(raw)
    orphan = store.data_dir / "images" / sha[:2] / f"{sha}.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(raw)
    (store.tmp_dir / "incoming-half-written").write_bytes(raw[:1000])
    assert recover(store, config) == {"temp_files_removed": 1, "files_recovered": 1}
    assert count_rows(store, "images") == 1 and count_rows(store, "jobs") == 1
    assert recover(store, config) == {"temp_files_removed": 0, "files_recovered": 0}
