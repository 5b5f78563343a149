"""The one path every image takes into the store, whatever device it came from.

spool (copy into the data dir's tmp/ while hashing, stopping at ``upload_max_mb``) ->
check (headers only, no pixel decode) -> deduplicate -> rename the spooled copy into
place -> record image + screening job + audit line in one transaction. A file that fails
the check is kept in quarantine with a plain-language reason. Only after the transaction
has committed does the caller acknowledge (DICOM success, HTTP 201, "imported" on
screen). Nothing is held in memory but a chunk: the checks read headers from the copy.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import timezone
from pathlib import Path
from typing import BinaryIO

from appliance.config import Config
from appliance.errors import DecodeError, IngestError, StoreError
from appliance.ingest import raster
from appliance.ingest.dicom import DAMAGED, check_image_dataset, dicom_record, read_dicom
from appliance.ingest.exif import photo_taken_at
from appliance.ingest.headers import ImageLimits, from_file
from appliance.ingest.laterality import laterality_from_name
from appliance.ingest.sniff import HEADER_BYTES, IMAGE_KINDS, NOT_AN_IMAGE, sniff
from appliance.ingest.sources import open_regular, read_limited, too_large
from appliance.store.db import Store
from appliance.store.files import clear_tmp, ensure_free_space, move_into_place, write_chunks
from appliance.store.image_names import is_other_name, remember_other_name
from appliance.store.images import (
    ImageRecord,
    find_duplicate,
    insert_image,
    insert_quarantine,
    quarantined_sha,
)
from appliance.store.jobs import PRIORITY_NORMAL

log = logging.getLogger(__name__)

EXTENSIONS = {"dicom": ".dcm", "jpeg": ".jpg", "png": ".png", "tiff": ".tif"}


@dataclass(frozen=True)
class ImportOutcome:
    # stored | duplicate | quarantined (a copy kept) | refused (left where it was, noted)
    status: str
    name: str
    image_id: int | None = None
    quarantine_id: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Spooled:
    """A received file, copied whole into the data dir's tmp/ (not yet fsynced)."""

    path: Path
    sha256: str
    size: int


class Importer:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits.from_config(self.config)

    @property
    def max_bytes(self) -> int:
        return self.limits.max_bytes

    def import_path(
        self,
        path: Path,
        *,
        source: str,
        source_detail: str = "",
        within: Path | None = None,
        outside_reason: str = "",
        visit_key: str | None = None,
    ) -> ImportOutcome:
        """Import one file; the file itself is only ever read (USB sticks stay untouched).

        ``within``: the volume or folder the file was found in; a link leaving it is
        refused with ``outside_reason``. FIFOs, devices and folders are refused, and a
        file is read no further than ``upload_max_mb``.
        """
        path = Path(path)
        try:
            with open_regular(path, within, outside_reason) as fh:
                stat = os.fstat(fh.fileno())
                size = stat.st_size
                if size > self.max_bytes:
                    raise too_large(self.max_bytes, size)
                ensure_free_space(self.store.data_dir, size, self.config.min_free_mb)
                spooled = self.spool(fh)
        except IngestError as exc:
            return self.refuse_in_place(path, exc.reason, source, source_detail)
        except OSError as exc:
            return self.refuse_in_place(
                path, f"The file could not be read ({exc.strerror or exc}).", source, source_detail
            )
        return self.import_spooled(
            spooled,
            source=source,
            source_detail=source_detail or str(path),
            original_name=path.name,
            visit_key=visit_key if visit_key is not None else f"{source}:{source_detail}",
            file_time=stat.st_mtime,  # a camera card's: when the photo was taken
        )

    def import_bytes(
        self,
        raw: bytes,
        *,
        source: str,
        source_detail: str = "",
        original_name: str = "",
        priority: int = PRIORITY_NORMAL,
        visit_key: str | None = None,
    ) -> ImportOutcome:
        ensure_free_space(self.store.data_dir, len(raw), self.config.min_free_mb)
        return self.import_stream(
            io.BytesIO(raw),
            source=source,
            source_detail=source_detail,
            original_name=original_name,
            priority=priority,
            visit_key=visit_key,
        )

    def import_stream(
        self,
        stream: BinaryIO,
        *,
        source: str,
        source_detail: str = "",
        original_name: str = "",
        priority: int = PRIORITY_NORMAL,
        visit_key: str | None = None,
        file_time: float | None = None,
    ) -> ImportOutcome:
        """Spool ``stream`` and import it; ``FileTooLargeError`` past ``upload_max_mb``."""
        return self.import_spooled(
            self.spool(stream),
            source=source,
            source_detail=source_detail,
            original_name=original_name,
            priority=priority,
            visit_key=visit_key,
            file_time=file_time,
        )

    def spool(self, stream: BinaryIO) -> Spooled:
        """Copy ``stream`` into tmp/ while hashing it, refusing it past ``upload_max_mb``."""
        return Spooled(*write_chunks(read_limited(stream, self.max_bytes), self.store.tmp_dir))

    def import_spooled(
        self,
        spooled: Spooled,
        *,
        source: str,
        source_detail: str = "",
        original_name: str = "",
        priority: int = PRIORITY_NORMAL,
        visit_key: str | None = None,
        file_time: float | None = None,
    ) -> ImportOutcome:
        """``visit_key``: the source as one key (default ``source:source_detail``), and
        ``file_time`` the file's own time (epoch seconds), when the door knows it."""
        if visit_key is None:
            visit_key = f"{source}:{source_detail}"
        try:
            return self._import_spooled(
                spooled, source, source_detail, original_name, priority, (visit_key, file_time)
            )
        finally:
            spooled.path.unlink(missing_ok=True)  # gone already once renamed into place

    def _import_spooled(
        self,
        spooled: Spooled,
        source: str,
        source_detail: str,
        name: str,
        priority: int,
        visit: tuple[str, float | None],
    ) -> ImportOutcome:
        with open(spooled.path, "rb") as fh:
            kind = sniff(fh.read(HEADER_BYTES))
        sha = spooled.sha256
        try:
            try:
                record = self._describe(spooled, kind, source, source_detail, name)
            except IngestError:
                raise
            except Exception as exc:  # a malformed value pydicom accepted but we cannot use
                raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc
        except IngestError as exc:
            return self._quarantine(spooled, kind, exc, source, source_detail, name)
        record = self._when_taken(record, spooled, kind, *visit)

        conn = self.store.conn()
        duplicate = find_duplicate(conn, record.sop_instance_uid, sha)
        if duplicate is not None:
            self._remember_name(duplicate, name)
            return ImportOutcome("duplicate", name, image_id=duplicate)

        relative = Path("images") / sha[:2] / f"{sha}{EXTENSIONS[kind]}"
        self._keep(spooled, relative)
        try:
            with self.store.write() as conn:
                duplicate = find_duplicate(conn, record.sop_instance_uid, sha)
                if duplicate is not None:  # another sender won the race
                    remember_other_name(conn, duplicate, name)
                    return ImportOutcome("duplicate", name, image_id=duplicate)
                image_id = insert_image(conn, record, str(relative), priority)
        except sqlite3.Error as exc:
            raise StoreError(f"could not record {name or sha[:12]}: {exc}") from exc
        self.store.jobs_waiting.set()
        log.info("stored image %s from %s (%s)", image_id, source, source_detail)
        return ImportOutcome("stored", name, image_id=image_id)

    def _remember_name(self, image_id: int, name: str) -> None:
        """A duplicate's file name, kept beside the image held (a lab register may name
        this copy); read first, so a copy arriving again under a known name writes nothing."""
        if not is_other_name(self.store.conn(), image_id, name):
            return
        try:
            with self.store.write() as conn:
                remember_other_name(conn, image_id, name)
        except sqlite3.Error as exc:  # the image is held either way: still a duplicate
            log.warning("could not remember %s as a name of image %s: %s", name, image_id, exc)

    def _when_taken(
        self, record: ImageRecord, spooled: Spooled, kind: str, key: str, file_time: float | None
    ) -> ImageRecord:
        """The photo's visit key and time: the camera's own (EXIF), else the file's,
        else now (a DICOM sender sends as it takes)."""
        taken, clock = None, "received"
        if kind == "jpeg":
            with open(spooled.path, "rb") as fh:
                exif = photo_taken_at(from_file(fh))
            if exif is not None:
                taken, clock = exif.replace(tzinfo=timezone.utc).timestamp(), "exif"
        if taken is None and file_time is not None:
            taken, clock = file_time, "file"
        if taken is None:
            taken = time.time()
        return replace(record, visit_key=key[:300], taken_at=taken, taken_from=clock)

    def _keep(self, spooled: Spooled, relative: Path) -> None:
        move_into_place(spooled.path, self.store.data_dir / relative)

    def _describe(
        self, spooled: Spooled, kind: str, source: str, source_detail: str, name: str
    ) -> ImageRecord:
        limits = self.limits
        if kind == "dicom":
            ds = read_dicom(spooled.path, limits.max_bytes)
            check_image_dataset(ds, limits)
            return dicom_record(
                ds,
                sha256=spooled.sha256,
                size_bytes=spooled.size,
                source=source,
                source_detail=source_detail,
                original_name=name,
            )
        if kind in IMAGE_KINDS:
            with open(spooled.path, "rb") as fh:
                width, height = raster.check_raster(fh, kind, limits)
            return ImageRecord(
                sha256=spooled.sha256,
                size_bytes=spooled.size,
                file_format=kind,
                source=source,
                source_detail=source_detail,
                original_name=name,
                # A photo has no study: give it its own, stable for the same bytes.
                study_instance_uid=f"2.25.{int(spooled.sha256[:30], 16)}",
                rows=height,
                columns=width,
                frames=1,
                laterality=laterality_from_name(name),  # "P0042_OD.jpg": a camera's name
            )
        raise IngestError(NOT_AN_IMAGE.get(kind, NOT_AN_IMAGE["unknown"]))

    def _quarantine(
        self,
        spooled: Spooled,
        kind: str,
        exc: IngestError,
        source: str,
        source_detail: str,
        name: str,
    ) -> ImportOutcome:
        conn = self.store.conn()
        existing = quarantined_sha(conn, spooled.sha256)
        if existing is not None:
            return ImportOutcome("quarantined", name, quarantine_id=existing, reason=exc.reason)
        relative = Path("quarantine") / f"{spooled.sha256}{EXTENSIONS.get(kind, '.bin')}"
        self._keep(spooled, relative)
        with self.store.write() as conn:
            qid = insert_quarantine(
                conn,
                sha256=spooled.sha256,
                reason=exc.reason,
                detail=exc.detail,
                source=source,
                source_detail=source_detail,
                original_name=name,
                stored_path=str(relative),
                size_bytes=spooled.size,
            )
        log.warning(
            "quarantined %s from %s: %s (%s)",
            name or spooled.sha256[:12],
            source,
            exc.reason,
            exc.detail,
        )
        return ImportOutcome("quarantined", name, quarantine_id=qid, reason=exc.reason)

    def refuse_in_place(
        self, path: Path, reason: str, source: str, source_detail: str
    ) -> ImportOutcome:
        """Record a file that is not taken in (too big, unreadable, not an image on a
        stick): where it is and why, so the nurse sees it in the quarantine list. Nothing
        is copied; the file stays where it is."""
        return self.record_refusal(
            path.name, reason, source, source_detail or str(path), _size(path)
        )

    def record_refusal(
        self, name: str, reason: str, source: str, source_detail: str, size: int
    ) -> ImportOutcome:
        """A quarantine row without a kept copy (also a DICOM transfer stopped early)."""
        with self.store.write() as conn:
            existing = conn.execute(
                "SELECT id FROM quarantine WHERE sha256='' AND source_detail=? AND reason=?",
                (source_detail, reason),
            ).fetchone()
            if existing is not None:  # the same stick again: one row is enough
                return ImportOutcome("refused", name, quarantine_id=existing[0], reason=reason)
            qid = insert_quarantine(
                conn,
                sha256="",
                reason=reason,
                detail=None,
                source=source,
                source_detail=source_detail,
                original_name=name,
                stored_path="",
                size_bytes=size,
            )
        return ImportOutcome("refused", name, quarantine_id=qid, reason=reason)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def recover(store: Store, config: Config) -> dict[str, int]:
    """After a crash: drop half-written temp files, re-register stored but unrecorded files.

    A file renamed into place whose transaction never committed was never acknowledged,
    but it is a complete image, so keeping it costs nothing and may save a re-send.
    """
    removed = clear_tmp(store.tmp_dir)
    known = {row[0] for row in store.conn().execute("SELECT sha256 FROM images")}
    importer = Importer(store, config)
    recovered = 0
    for path in store.images_dir.glob("*/*"):
        if path.stem not in known:
            outcome = importer.import_path(path, source="recovered", source_detail=str(path))
            recovered += outcome.status == "stored"
            # The same SOP instance held under other bytes, or a file stored before the
            # checks of today refuse it (its copy is in quarantine/ now).
            if outcome.status in ("duplicate", "quarantined"):
                path.unlink(missing_ok=True)
    return {"temp_files_removed": removed, "files_recovered": recovered}
