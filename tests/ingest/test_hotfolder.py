"""The hot folder: settled files are imported and removed; what cannot be taken stays.

``scan_once(now=...)`` is driven with explicit monotonic times, so the settle logic is
tested without sleeping. Files, folder, importer and store are all real.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers import FUNDUS_DIR, PDF, count_rows

from appliance.ingest.hotfolder import HotFolder
from appliance.ingest.importer import Importer
from appliance.ingest.sniff import NOT_AN_IMAGE
from appliance.store.images import list_quarantine

JPEG = (FUNDUS_DIR / "hrf_12_h.jpg").read_bytes()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "incoming"
    path.mkdir()
    return path


def hot_folder(store, config, folder: Path, **overrides) -> HotFolder:
    settings = {"hot_folder": str(folder), "hot_folder_settle_seconds": 0, **overrides}
    return HotFolder(Importer(store, config.with_overrides(**settings)), folder, threading.Event())


def test_a_file_is_taken_only_after_it_has_stayed_unchanged(store, config, folder: Path):
    watcher = hot_folder(store, config, folder, hot_folder_settle_seconds=5)
    photo = folder / "IMG_0001.JPG"
    photo.write_bytes(JPEG[: len(JPEG) // 2])  # the camera software is still copying

    assert watcher.scan_once(now=100.0) == 0
    photo.write_bytes(JPEG)  # copy finished: size changed, so the clock starts again
    assert watcher.scan_once(now=103.0) == 0
    assert watcher.scan_once(now=107.9) == 0
    assert photo.exists() and count_rows(store, "images") == 0

    assert watcher.scan_once(now=108.0) == 1

    assert not photo.exists()
    row = store.conn().execute("SELECT source, original_name, size_bytes FROM images").fetchone()
    assert tuple(row) == ("folder", "IMG_0001.JPG", len(JPEG))
    assert store.conn().execute("SELECT state FROM jobs").fetchone()[0] == "queued"
    assert count_rows(store, "quarantine") == 0  # the half-copied file was never looked at


def test_files_in_sub_folders_are_taken_and_hidden_ones_left(store, config, folder: Path):
    watcher = hot_folder(store, config, folder)
    nested = folder / "clinic-a" / "2024-05-01" / "left.jpg"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(JPEG)
    partial = folder / ".left.jpg.part"  # rsync and scp write under a hidden name first
    partial.write_bytes(JPEG[:1000])

    assert watcher.scan_once(now=0.0) == 1

    assert not nested.exists()
    assert partial.exists()
    assert count_rows(store, "images") == 1


def test_a_pdf_is_quarantined_with_a_copy_and_removed(store, config, folder: Path):
    watcher = hot_folder(store, config, folder)
    pdf = folder / "referral.pdf"
    pdf.write_bytes(PDF)

    assert watcher.scan_once(now=0.0) == 1

    assert not pdf.exists()
    [row] = list_quarantine(store)
    assert (row["reason"], row["source"], row["original_name"]) == (
        NOT_AN_IMAGE["pdf"],
        "folder",
        "referral.pdf",
    )
    kept = store.data_dir / row["stored_path"]
    assert kept.is_relative_to(store.quarantine_dir)
    assert kept.read_bytes() == PDF
    assert count_rows(store, "images") == 0


def test_the_same_file_dropped_twice_is_one_image(store, config, folder: Path):
    watcher = hot_folder(store, config, folder)
    (folder / "a.jpg").write_bytes(JPEG)
    assert watcher.scan_once(now=0.0) == 1
    (folder / "copy of a.jpg").write_bytes(JPEG)

    assert watcher.scan_once(now=1.0) == 1

    assert list(folder.iterdir()) == []
    assert count_rows(store, "images") == 1
    assert count_rows(store, "jobs") == 1


def test_a_file_over_the_size_limit_stays_and_is_not_retried(store, config, folder: Path):
    watcher = hot_folder(store, config, folder, upload_max_mb=1)
    big = folder / "huge.jpg"
    big.write_bytes(JPEG * 20)  # about 1.1 MB

    assert watcher.scan_once(now=0.0) == 0
    assert watcher.scan_once(now=10.0) == 0
    assert watcher.scan_once(now=20.0) == 0

    assert big.read_bytes() == JPEG * 20
    [row] = list_quarantine(store)  # recorded once, not on every scan
    assert "larger than the 1 MB limit" in row["reason"]
    assert row["stored_path"] == ""  # nothing copied
    assert list(store.quarantine_dir.iterdir()) == []

    big.write_bytes(JPEG)  # replaced by a file of acceptable size: taken this time
    assert watcher.scan_once(now=30.0) == 1
    assert not big.exists()
    assert count_rows(store, "images") == 1


def test_a_full_disk_leaves_the_files_in_place(store, config, folder: Path):
    full = hot_folder(store, config, folder, min_free_mb=10**9)
    photos = [folder / "a.jpg", folder / "b.jpg"]
    photos[0].write_bytes(JPEG)
    photos[1].write_bytes((FUNDUS_DIR / "hrf_07_h.jpg").read_bytes())

    assert full.scan_once(now=0.0) == 0
    assert full.scan_once(now=5.0) == 0

    assert all(p.exists() for p in photos)
    assert photos[0].read_bytes() == JPEG
    assert count_rows(store, "images") == 0
    assert count_rows(store, "quarantine") == 0
    assert list(store.images_dir.rglob("*.*")) == []

    # Once there is room again, the same files are taken.
    assert hot_folder(store, config, folder).scan_once(now=10.0) == 2
    assert list(folder.iterdir()) == []


class ResumingWriter(Importer):
    """A real importer; right after it has read the file, the program that wrote the
    file (paused for longer than the settle time) appends to it. That moment cannot be
    hit reliably with a second thread, so the write is made here."""

    def import_path(self, path, **kwargs):
        outcome = super().import_path(path, **kwargs)
        with open(path, "ab") as fh:
            fh.write(b"\x00" * 16)
        return outcome


def test_a_file_written_to_while_being_imported_is_not_deleted(store, config, folder: Path):
    importer = ResumingWriter(store, config.with_overrides(hot_folder_settle_seconds=0))
    watcher = HotFolder(importer, folder, threading.Event())
    photo = folder / "a.jpg"
    photo.write_bytes(JPEG)

    watcher.scan_once(now=0.0)

    assert photo.exists()  # the new bytes were never imported: keep them
    assert photo.stat().st_size == len(JPEG) + 16


def test_the_watch_thread_imports_and_stops(store, config, tmp_path: Path):
    folder = tmp_path / "not-yet-created"
    importer = Importer(
        store, config.with_overrides(hot_folder_settle_seconds=0.1, hot_folder_poll_seconds=0.05)
    )
    stop = threading.Event()
    watcher = HotFolder(importer, folder, stop)
    watcher.start()  # creates the folder
    try:
        staged = tmp_path / "a.jpg"
        staged.write_bytes(JPEG)
        os.rename(staged, folder / "a.jpg")
        deadline = time.monotonic() + 20
        while (folder / "a.jpg").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (folder / "a.jpg").exists()
        assert count_rows(store, "images") == 1
    finally:
        stop.set()
        watcher.thread.join(timeout=10)
    assert not watcher.thread.is_alive()
