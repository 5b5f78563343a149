"""Removable media: find mounted volumes, list what can be imported, import it.

The stick is only ever opened for reading: no index files, no "imported" markers, no
moving. Which files to take is decided by their first bytes (a fundus camera's card and
a DICOMDIR export both name files freely), and a DICOMDIR, when present, adds the files
it references even if they lack the DICOM preamble.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom

from appliance.errors import IngestError, StorageFullError
from appliance.ingest.importer import Importer, ImportOutcome
from appliance.ingest.sniff import IMAGE_KINDS, NOT_AN_IMAGE, sniff_file
from appliance.ingest.sources import open_regular, read_limited
from appliance.store import volumes as volume_rows

log = logging.getLogger(__name__)

# Folders operating systems and cameras put on sticks that never hold patient images.
SKIP_DIRS = {
    "system volume information",
    "$recycle.bin",
    ".trashes",
    ".spotlight-v100",
    ".fseventsd",
    "lost+found",
    ".thumbnails",
}


DICOMDIR_MAX_BYTES = 64 * 1024 * 1024

LINK_NOT_FOLLOWED = "This is a link to a file elsewhere, not a file on the stick; it was not read."


@dataclass(frozen=True)
class Volume:
    path: Path
    label: str


@dataclass
class Listing:
    importable: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # The volume (or folder) listed: no file is read from outside it.
    root: Path | None = None


def find_volumes(roots: list[str], require_mountpoint: bool = True) -> list[Volume]:
    """Mounted volumes under the roots: /media/LABEL or /media/USER/LABEL style."""
    found: list[Volume] = []
    for root in map(Path, roots):
        if require_mountpoint and root != Path("/") and os.path.ismount(root):
            found.append(Volume(root, root.name))  # e.g. `mount /dev/sdb1 /mnt`
            continue
        for child in _subfolders(root):
            if not require_mountpoint:
                found.append(Volume(child, child.name))
                continue
            if os.path.ismount(child):
                found.append(Volume(child, child.name))
                continue
            # one level more: udisks mounts at /media/<user>/<label>
            found.extend(Volume(g, g.name) for g in _subfolders(child) if os.path.ismount(g))
    return found


def _subfolders(folder: Path) -> list[Path]:
    """Sub-folders, skipping any that cannot be looked at: a stick pulled out without
    unmounting leaves a mount that fails with EIO, and must not hide its neighbours."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            if entry.is_dir():
                found.append(entry)
        except OSError:
            continue
    return sorted(found)


def list_importable(folder: Path) -> Listing:
    listing = Listing(root=folder)
    seen: set[Path] = set()
    for referenced in _dicomdir_files(folder):
        if referenced not in seen:  # a DICOMDIR may name a file twice
            listing.importable.append(referenced)
            seen.add(referenced)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in SKIP_DIRS
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path in seen or name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            try:
                # Never a FIFO or a device, never a link off the stick (the box's disk).
                kind = sniff_file(path, folder, LINK_NOT_FOLLOWED)
            except IngestError as exc:
                listing.skipped.append((path, exc.reason))
                continue
            except OSError as exc:
                listing.skipped.append((path, f"Cannot be read ({exc.strerror or exc})."))
                continue
            if kind in IMAGE_KINDS:
                listing.importable.append(path)
            else:
                listing.skipped.append((path, NOT_AN_IMAGE.get(kind, NOT_AN_IMAGE["unknown"])))
    return listing


def _dicomdir_files(folder: Path) -> list[Path]:
    dicomdir = (
        next((p for p in folder.iterdir() if p.name.upper() == "DICOMDIR"), None)
        if folder.is_dir()
        else None
    )
    if dicomdir is None:
        return []
    try:
        # Read like any file on the stick: never a FIFO, a device or a link off it, and
        # not without end (a DICOMDIR of thousands of images is a few MB).
        with open_regular(dicomdir, folder, LINK_NOT_FOLLOWED) as fh:
            raw = b"".join(read_limited(fh, DICOMDIR_MAX_BYTES))
        ds = pydicom.dcmread(BytesIO(raw), force=True)
        records = ds.get("DirectoryRecordSequence", [])
    except Exception as exc:  # a broken DICOMDIR must not hide the files themselves
        log.warning("ignoring unreadable DICOMDIR %s: %s", dicomdir, exc)
        return []
    files = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        path = _resolve_case_insensitive(folder, parts)
        if path is not None:
            files.append(path)
    return files


def _resolve_case_insensitive(folder: Path, parts: list[str]) -> Path | None:
    """DICOMDIR names are upper case; FAT sticks mounted on Linux may show lower case.

    A DICOMDIR is data from the stick: a reference that leaves the volume ("..", an
    absolute name, a link) is ignored, so a crafted stick cannot import the box's files.
    """
    if any(part in ("", ".", "..") or "/" in part or "\\" in part for part in parts):
        return None
    current = folder
    for part in parts:
        candidate = current / part
        if not candidate.exists():
            matches = (
                [p for p in current.iterdir() if p.name.upper() == part.upper()]
                if current.is_dir()
                else []
            )
            if not matches:
                return None
            candidate = matches[0]
        current = candidate
    if not current.is_file() or not current.resolve().is_relative_to(folder.resolve()):
        return None
    return current


def import_listing(
    importer: Importer,
    listing: Listing,
    *,
    source: str,
    source_detail: str,
    progress: Callable[[int, int, ImportOutcome], None] | None = None,
) -> tuple[Counter, list[ImportOutcome]]:
    """Import the importable files; record the others as refused, copying nothing."""
    counts: Counter = Counter()
    outcomes = []
    total = len(listing.importable) + len(listing.skipped)
    for index, path in enumerate(listing.importable, 1):
        outcome = importer.import_path(
            path,
            source=source,
            source_detail=f"{source_detail}:{path}",
            within=listing.root,
            outside_reason=LINK_NOT_FOLLOWED,
            visit_key=f"{source}:{source_detail}",  # the stick, not each file on it
        )
        counts[outcome.status] += 1
        outcomes.append(outcome)
        if progress:
            progress(index, total, outcome)
    for index, (path, reason) in enumerate(listing.skipped, len(listing.importable) + 1):
        outcome = importer.refuse_in_place(path, reason, source, f"{source_detail}:{path}")
        counts[outcome.status] += 1
        outcomes.append(outcome)
        if progress:
            progress(index, total, outcome)
    return counts, outcomes


class UsbWatcher:
    """Polls for newly mounted volumes; lists them, and imports them if configured to."""

    def __init__(self, importer: Importer, stop: threading.Event) -> None:
        self.importer = importer
        self.store = importer.store
        self.config = importer.config
        self.stop = stop
        self.thread = threading.Thread(target=self.run, name="usb-watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("USB watcher poll failed")
            self.stop.wait(self.config.usb_poll_seconds)

    def poll_once(self) -> list[Volume]:
        """One look at the roots; returns the volumes newly seen this time."""
        found = find_volumes(self.config.usb_roots, self.config.usb_require_mountpoint)
        volume_rows.mark_absent_except(self.store, [str(v.path) for v in found])
        # Listing reads the first bytes of every file on the volume: do it once when the
        # volume appears, not every poll (a camera card holds thousands of files).
        known = {row["path"]: row for row in volume_rows.list_volumes(self.store)}
        new = []
        for volume in found:
            row = known.get(str(volume.path))
            # An auto-import that failed (disk full, restart with the stick still in) is
            # tried again; otherwise a volume already listed is left alone.
            retry = row is not None and self.config.usb_auto_import and row["state"] != "imported"
            if row is not None and not retry:
                continue
            listing = list_importable(volume.path)
            is_new = volume_rows.mark_present(
                self.store,
                str(volume.path),
                volume.label,
                len(listing.importable),
                len(listing.skipped),
            )
            if is_new:
                new.append(volume)
                log.info(
                    "volume %s: %d importable, %d other files",
                    volume.path,
                    len(listing.importable),
                    len(listing.skipped),
                )
            if self.config.usb_auto_import:
                self.import_volume(volume, listing)
        return new

    def import_volume(self, volume: Volume, listing: Listing) -> Counter:
        try:
            counts, _ = import_listing(
                self.importer, listing, source="usb", source_detail=volume.label
            )
        except StorageFullError:
            log.error("disk full while importing %s; the rest stays on the stick", volume.path)
            raise
        volume_rows.record_import(self.store, str(volume.path), counts)
        return counts
