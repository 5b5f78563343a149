"""Removable media: finding volumes, listing what is importable, importing, never writing.

A USB bus cannot exist in the test environment, so every test simulates the mount root
with a temporary directory and sets ``usb_require_mountpoint=False`` (every sub-folder of
the root counts as a mounted volume). Everything else is real: real files on disk, real
DICOM files from pydicom's test set, real fundus photographs, a real SQLite store.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pydicom
import pytest
from helpers import FUNDUS_DIR, PDF, count_rows, testdata

from appliance.errors import StorageFullError
from appliance.ingest.importer import Importer
from appliance.ingest.sniff import NOT_AN_IMAGE
from appliance.ingest.usb import (
    LINK_NOT_FOLLOWED,
    Listing,
    UsbWatcher,
    Volume,
    find_volumes,
    import_listing,
    list_importable,
)
from appliance.store.images import list_quarantine
from appliance.store.volumes import list_volumes

DICOMDIR_SET = Path(testdata("DICOMDIR")).parent  # pydicom's dicomdirtests folder
# -- building sticks -------------------------------------------------------------------


def small_fundus(name: str) -> object:
    """A real fundus photograph, downscaled so PNG/TIFF copies stay small and fast."""
    image = cv2.imread(str(FUNDUS_DIR / name), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.resize(image, (263, 175), interpolation=cv2.INTER_AREA)


def encoded(extension: str, name: str = "hrf_12_h.jpg") -> bytes:
    ok, buffer = cv2.imencode(extension, small_fundus(name))
    assert ok
    return buffer.tobytes()


def bare_dicom() -> bytes:
    """MR_small written as old equipment does: no preamble, no file meta, no extension."""
    ds = pydicom.dcmread(io.BytesIO(testdata("MR_small.dcm").read_bytes()))
    ds.preamble = None
    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_camera_stick(volume: Path) -> dict[str, str]:
    """A stick as a clinic would hand it over; returns {relative path: what it is}."""
    jpeg = (FUNDUS_DIR / "IDRiD_003.jpg").read_bytes()
    files = {
        "DCIM/100CANON/IMG_0001.JPG": jpeg,
        "DCIM/100CANON/fundus_left.png": encoded(".png"),
        "DCIM/100CANON/scan.tif": encoded(".tiff"),
        "export/photo.dat": encoded(".png", "hrf_07_h.jpg"),  # a PNG, whatever the name
        "DICOM/IM000001": testdata("CT_small.dcm").read_bytes(),  # no extension
        "DICOM/OLDCT": bare_dicom(),  # no preamble, no extension
        "report.pdf": PDF,
        "notes.txt": b"Patient list for Tuesday\nbring the left eye images\n",
        "notes.jpg": b"this is text, whatever the name says\n",
        # Never looked at: hidden files, macOS resource forks, OS folders.
        ".hidden.jpg": jpeg,
        "DCIM/100CANON/._IMG_0001.JPG": jpeg,
        "System Volume Information/IndexerVolumeGuid": jpeg,
        ".Trashes/501/old.jpg": jpeg,
        "$RECYCLE.BIN/deleted.jpg": jpeg,
    }
    for relative, data in files.items():
        write(volume / relative, data)
    return {
        "DCIM/100CANON/IMG_0001.JPG": "jpeg",
        "DCIM/100CANON/fundus_left.png": "png",
        "DCIM/100CANON/scan.tif": "tiff",
        "export/photo.dat": "png",
        "DICOM/IM000001": "dicom",
        "DICOM/OLDCT": "dicom",
    }


def copy_dicomdir_set(volume: Path) -> None:
    """pydicom's DICOMDIR file set (3 patients, 31 instances, names without extension)."""
    volume.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DICOMDIR_SET / "DICOMDIR", volume / "DICOMDIR")
    for patient in ("77654033", "98892001", "98892003"):
        shutil.copytree(DICOMDIR_SET / patient, volume / patient)


def dicomdir_references(dicomdir: Path) -> list[tuple[str, ...]]:
    ds = pydicom.dcmread(io.BytesIO(dicomdir.read_bytes()))
    refs = []
    for record in ds.DirectoryRecordSequence:
        file_id = record.get("ReferencedFileID")
        if file_id:
            refs.append((file_id,) if isinstance(file_id, str) else tuple(file_id))
    return refs


def relative(paths, volume: Path) -> set[str]:
    return {Path(p).relative_to(volume).as_posix() for p in paths}


def snapshot(volume: Path) -> list[tuple]:
    """Everything a write could change: each folder's entries, each file's size, mtime
    and content hash."""
    entries: list[tuple] = []
    for dirpath, dirnames, filenames in os.walk(volume):
        folder = Path(dirpath)
        st = folder.stat()
        entries.append(
            (
                "dir",
                folder.relative_to(volume).as_posix(),
                tuple(sorted(dirnames + filenames)),
                st.st_mtime_ns,
                st.st_mode,
            )
        )
        for name in filenames:
            path = folder / name
            st = path.stat()
            entries.append(
                (
                    "file",
                    path.relative_to(volume).as_posix(),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_mode,
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                )
            )
    return sorted(entries)


def chmod_tree(volume: Path, read_only: bool) -> None:
    for dirpath, _, filenames in os.walk(volume):
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o444 if read_only else 0o644)
        os.chmod(dirpath, 0o555 if read_only else 0o755)


@pytest.fixture
def usb_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def usb_config(config, usb_root: Path):
    return config.with_overrides(
        usb_roots=[str(usb_root)], usb_require_mountpoint=False, usb_auto_import=True
    )


@pytest.fixture
def usb_importer(store, usb_config) -> Importer:
    return Importer(store, usb_config)


# -- finding volumes -------------------------------------------------------------------


def test_find_volumes_lists_each_folder_under_a_simulated_root(usb_root: Path, tmp_path: Path):
    (usb_root / "XRAY_EXPORT").mkdir()
    (usb_root / "CANON_EOS").mkdir()
    write(usb_root / "stray-file.txt", b"not a volume")

    volumes = find_volumes(
        [str(usb_root), str(tmp_path / "no-such-root")], require_mountpoint=False
    )

    assert volumes == [
        Volume(usb_root / "CANON_EOS", "CANON_EOS"),
        Volume(usb_root / "XRAY_EXPORT", "XRAY_EXPORT"),
    ]


def test_plain_folders_are_not_volumes_when_a_mountpoint_is_required(usb_root: Path):
    (usb_root / "XRAY_EXPORT").mkdir()
    (usb_root / "nurse" / "CANON_EOS").mkdir(parents=True)  # /media/<user>/<label> layout

    assert find_volumes([str(usb_root)], require_mountpoint=True) == []


# -- listing ---------------------------------------------------------------------------


def test_listing_recognises_files_by_content_and_skips_system_files(tmp_path: Path):
    volume = tmp_path / "STICK"
    expected = make_camera_stick(volume)

    listing = list_importable(volume)

    assert relative(listing.importable, volume) == set(expected)
    assert len(listing.importable) == len(expected)
    reasons = {Path(p).relative_to(volume).as_posix(): r for p, r in listing.skipped}
    assert reasons == {
        "report.pdf": NOT_AN_IMAGE["pdf"],
        "notes.txt": NOT_AN_IMAGE["text"],
        "notes.jpg": NOT_AN_IMAGE["text"],
    }


def test_dicomdir_lists_every_referenced_file_once(tmp_path: Path):
    volume = tmp_path / "PACS_CD"
    copy_dicomdir_set(volume)
    references = dicomdir_references(volume / "DICOMDIR")
    assert len(references) == 31  # the fixture set we rely on

    listing = list_importable(volume)

    assert relative(listing.importable, volume) == {"/".join(ref) for ref in references}
    assert len(listing.importable) == len(references)
    assert listing.skipped == []  # the DICOMDIR itself is an index, not a refused file


def test_dicomdir_names_resolve_on_a_lower_case_fat_mount(tmp_path: Path):
    """FAT sticks mounted on Linux may show the DICOMDIR's upper-case names in lower case."""
    volume = tmp_path / "PACS_CD"
    copy_dicomdir_set(volume)
    for dirpath, dirnames, filenames in os.walk(volume, topdown=False):
        for name in dirnames + filenames:
            if name != "DICOMDIR":
                os.rename(Path(dirpath) / name, Path(dirpath) / name.lower())

    listing = list_importable(volume)

    assert len(listing.importable) == 31
    assert len(set(listing.importable)) == 31  # not listed again by the folder walk
    assert all(p.is_file() for p in listing.importable)


def without_preamble(volume: Path) -> tuple[Path, bytes]:
    """Some writers omit the 128-byte preamble but keep the file meta."""
    target = volume / "77654033" / "CR1" / "6154"
    original = target.read_bytes()
    target.write_bytes(original[132:])  # drop preamble + "DICM"
    return target, original


def test_dicom_without_preamble_is_found_with_or_without_dicomdir(tmp_path: Path):
    volume = tmp_path / "PACS_CD"
    copy_dicomdir_set(volume)
    target, _ = without_preamble(volume)

    assert list_importable(volume).importable.count(target) == 1

    (volume / "DICOMDIR").unlink()
    without_index = list_importable(volume)
    assert target in without_index.importable  # recognised by its file meta group
    assert target not in [p for p, _ in without_index.skipped]


def test_a_file_listed_only_by_the_dicomdir_is_imported(tmp_path: Path, usb_importer, store):
    volume = tmp_path / "PACS_CD"
    copy_dicomdir_set(volume)
    target, original = without_preamble(volume)
    assert target in list_importable(volume).importable

    outcome = usb_importer.import_path(target, source="usb")
    assert outcome.status == "stored"
    sop = pydicom.dcmread(io.BytesIO(original)).SOPInstanceUID
    row = store.conn().execute("SELECT sop_instance_uid FROM images").fetchone()
    assert row[0] == sop


def test_dicomdir_cannot_reach_files_outside_the_stick(tmp_path: Path, monkeypatch):
    """A DICOMDIR is data from an untrusted stick: "..", absolute names and links that
    leave the volume are ignored, so a crafted stick cannot copy the box's own files."""
    # The crafted names are not valid DICOM CS values; let pydicom read them quietly.
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    secret = write(tmp_path / "box" / "secret.jpg", (FUNDUS_DIR / "hrf_07_h.jpg").read_bytes())
    volume = tmp_path / "EVIL"
    copy_dicomdir_set(volume)
    (volume / "LINK").symlink_to(secret)
    ds = pydicom.dcmread(io.BytesIO((volume / "DICOMDIR").read_bytes()))
    records = [r for r in ds.DirectoryRecordSequence if r.get("ReferencedFileID")]
    records[0].ReferencedFileID = ["..", "box", "secret.jpg"]
    records[1].ReferencedFileID = str(secret)
    records[2].ReferencedFileID = "LINK"
    ds.save_as(volume / "DICOMDIR")

    listing = list_importable(volume)

    assert not any(p.resolve() == secret for p in listing.importable)
    # 28 references still count; the 3 files no longer referenced are found by content.
    assert len(listing.importable) == 31
    assert all(p.resolve().is_relative_to(volume) for p in listing.importable)
    assert (volume / "LINK", LINK_NOT_FOLLOWED) in listing.skipped


# -- importing -------------------------------------------------------------------------


def test_import_a_chosen_subset_then_the_rest(tmp_path: Path, usb_importer, store):
    volume = tmp_path / "STICK"
    make_camera_stick(volume)
    listing = list_importable(volume)
    chosen = [p for p in listing.importable if p.suffix in (".JPG", ".png")]
    assert len(chosen) == 2

    counts, outcomes = import_listing(
        usb_importer, Listing(importable=chosen), source="usb", source_detail="STICK"
    )

    assert counts == {"stored": 2}
    stored = {
        r["original_name"]
        for r in store.conn().execute("SELECT original_name FROM images WHERE source='usb'")
    }
    assert stored == {"IMG_0001.JPG", "fundus_left.png"}
    assert count_rows(store, "quarantine") == 0

    counts, outcomes = import_listing(usb_importer, listing, source="usb", source_detail="STICK")

    assert counts == {"stored": 4, "duplicate": 2, "refused": 3}
    assert count_rows(store, "images") == 6
    assert count_rows(store, "jobs") == 6  # every stored image has its screening job
    details = [r[0] for r in store.conn().execute("SELECT source_detail FROM images")]
    assert all(d.startswith("STICK:") for d in details)


def test_non_images_are_refused_with_a_reason_and_nothing_is_copied(
    tmp_path: Path, usb_importer, store
):
    volume = tmp_path / "STICK"
    make_camera_stick(volume)

    _, outcomes = import_listing(
        usb_importer, list_importable(volume), source="usb", source_detail="STICK"
    )

    refused = {o.name: o.reason for o in outcomes if o.status == "refused"}
    assert refused == {
        "report.pdf": NOT_AN_IMAGE["pdf"],
        "notes.txt": NOT_AN_IMAGE["text"],
        "notes.jpg": NOT_AN_IMAGE["text"],
    }
    rows = list_quarantine(store)
    assert {r["original_name"]: r["reason"] for r in rows} == refused
    assert all(r["stored_path"] == "" and r["source"] == "usb" for r in rows)
    assert {r["size_bytes"] for r in rows if r["original_name"] == "report.pdf"} == {len(PDF)}
    assert list(store.quarantine_dir.iterdir()) == []  # nothing copied off the stick


def test_the_same_stick_twice_gives_duplicates_and_no_new_images(
    tmp_path: Path, usb_importer, store
):
    volume = tmp_path / "PACS_CD"
    copy_dicomdir_set(volume)
    first, _ = import_listing(
        usb_importer, list_importable(volume), source="usb", source_detail="PACS_CD"
    )
    images, jobs = count_rows(store, "images"), count_rows(store, "jobs")
    files = sorted(store.images_dir.rglob("*"))

    second, outcomes = import_listing(
        usb_importer, list_importable(volume), source="usb", source_detail="PACS_CD"
    )

    assert first == {"stored": 31}
    assert second == {"duplicate": 31}
    assert (count_rows(store, "images"), count_rows(store, "jobs")) == (images, jobs) == (31, 31)
    assert sorted(store.images_dir.rglob("*")) == files
    assert all(o.image_id for o in outcomes)


def test_the_stick_is_never_written(tmp_path: Path, usb_importer, store):
    """chmod alone proves nothing (the tests run as root, who may write anyway): the
    snapshot of every folder listing and every file's size, mtime and hash is the check."""
    volume = tmp_path / "STICK"
    make_camera_stick(volume)
    copy_dicomdir_set(volume / "CD")
    chmod_tree(volume, read_only=True)
    try:
        before = snapshot(volume)
        for _ in range(2):  # a second import (all duplicates) must not write either
            counts, _ = import_listing(
                usb_importer, list_importable(volume), source="usb", source_detail="STICK"
            )
        assert counts["duplicate"] == 6 + 31
        assert snapshot(volume) == before
        assert stat.S_IMODE((volume / "report.pdf").stat().st_mode) == 0o444
    finally:
        chmod_tree(volume, read_only=False)  # let tmp_path clean-up delete it


def test_a_full_disk_stops_the_import_and_stores_nothing(tmp_path: Path, store, usb_config):
    importer = Importer(store, usb_config.with_overrides(min_free_mb=10**9))
    volume = tmp_path / "STICK"
    make_camera_stick(volume)
    before = snapshot(volume)

    with pytest.raises(StorageFullError):
        import_listing(importer, list_importable(volume), source="usb", source_detail="STICK")

    assert count_rows(store, "images") == 0
    assert list(store.images_dir.rglob("*.*")) == []
    assert snapshot(volume) == before


# -- the watcher -----------------------------------------------------------------------


def volume_row(store, path: Path, present_only: bool = False) -> dict:
    rows = [r for r in list_volumes(store, present_only=present_only) if r["path"] == str(path)]
    assert len(rows) == 1
    return rows[0]


def test_watcher_notices_records_and_imports_a_new_volume(usb_root: Path, usb_importer, store):
    watcher = UsbWatcher(usb_importer, threading.Event())
    assert watcher.poll_once() == []

    volume = usb_root / "CANON_EOS"
    make_camera_stick(volume)
    assert watcher.poll_once() == [Volume(volume, "CANON_EOS")]

    row = volume_row(store, volume)
    assert (row["label"], row["present"], row["state"]) == ("CANON_EOS", 1, "imported")
    assert (row["importable"], row["skipped"]) == (6, 3)
    assert (row["imported"], row["quarantined"], row["duplicates"]) == (6, 3, 0)
    assert count_rows(store, "images") == 6

    # Still there: not new, not listed or imported again.
    write(volume / "DCIM" / "100CANON" / "IMG_0002.JPG", (FUNDUS_DIR / "hrf_07_h.jpg").read_bytes())
    assert watcher.poll_once() == []
    assert count_rows(store, "images") == 6
    assert volume_row(store, volume)["importable"] == 6


def test_watcher_marks_a_removed_volume_absent_and_a_returning_one_new(
    usb_root: Path, usb_importer, store
):
    watcher = UsbWatcher(usb_importer, threading.Event())
    volume = usb_root / "PACS_CD"
    copy_dicomdir_set(volume)
    other = usb_root / "OTHER"
    make_camera_stick(other)
    assert len(watcher.poll_once()) == 2

    shutil.rmtree(volume)  # pulled out
    assert watcher.poll_once() == []
    assert volume_row(store, volume)["present"] == 0
    assert volume_row(store, other)["present"] == 1
    assert [r["path"] for r in list_volumes(store)] == [str(other)]

    copy_dicomdir_set(volume)  # plugged in again
    assert watcher.poll_once() == [Volume(volume, "PACS_CD")]
    row = volume_row(store, volume)
    assert (row["present"], row["imported"], row["duplicates"]) == (1, 31, 31)
    assert count_rows(store, "images") == 31 + 6


def test_watcher_only_lists_when_auto_import_is_off(usb_root: Path, store, usb_config):
    importer = Importer(store, usb_config.with_overrides(usb_auto_import=False))
    watcher = UsbWatcher(importer, threading.Event())
    volume = usb_root / "CANON_EOS"
    make_camera_stick(volume)

    assert watcher.poll_once() == [Volume(volume, "CANON_EOS")]

    row = volume_row(store, volume)
    assert (row["state"], row["importable"], row["skipped"], row["imported"]) == ("seen", 6, 3, 0)
    assert count_rows(store, "images") == 0
    assert count_rows(store, "quarantine") == 0


def test_watcher_thread_imports_a_volume_and_stops(usb_root: Path, store, usb_config):
    importer = Importer(store, usb_config.with_overrides(usb_poll_seconds=0.05))
    stop = threading.Event()
    watcher = UsbWatcher(importer, stop)
    watcher.start()
    try:
        # A mount appears whole: build the stick aside, then move it under the root.
        copy_dicomdir_set(usb_root.parent / "staging" / "PACS_CD")
        os.rename(usb_root.parent / "staging" / "PACS_CD", usb_root / "PACS_CD")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = list_volumes(store)
            if rows and rows[0]["state"] == "imported":
                break
            time.sleep(0.05)
        assert [r["imported"] for r in list_volumes(store)] == [31]
    finally:
        stop.set()
        watcher.thread.join(timeout=10)
    assert not watcher.thread.is_alive()


def test_refused_files_are_noted_once_however_often_the_stick_returns(
    tmp_path: Path, usb_importer, store
):
    volume = tmp_path / "STICK"
    make_camera_stick(volume)
    for _ in range(2):
        import_listing(usb_importer, list_importable(volume), source="usb", source_detail="STICK")
    assert count_rows(store, "quarantine") == 3


def test_a_failed_auto_import_is_retried_while_the_stick_stays(usb_root: Path, store, usb_config):
    volume = usb_root / "CANON_EOS"
    make_camera_stick(volume)
    full = UsbWatcher(
        Importer(store, usb_config.with_overrides(min_free_mb=10**9)), threading.Event()
    )
    with pytest.raises(StorageFullError):
        full.poll_once()
    assert volume_row(store, volume)["state"] == "seen"
    # Space freed (simulated by a normal reserve): the next poll imports without re-insertion.
    watcher = UsbWatcher(Importer(store, usb_config), threading.Event())
    assert watcher.poll_once() == []  # not new...
    assert volume_row(store, volume)["state"] == "imported"  # ...but imported now
    assert count_rows(store, "images") == 6


def test_a_stick_mounted_directly_on_a_root_is_a_volume(tmp_path: Path):
    """A real tmpfs mount stands in for the stick (no USB bus here)."""
    root = tmp_path / "mnt"
    root.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        assert find_volumes([str(root)], require_mountpoint=True) == [Volume(root, "mnt")]
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
