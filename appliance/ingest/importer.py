"""The one path every image takes into the store, whatever device it came from.

check (cheap, no pixel decode) -> deduplicate -> write the original atomically ->
record image + screening job + audit line in one transaction. A file that fails the
check is kept in quarantine with a plain-language reason. Only after the transaction has
committed does the caller acknowledge (DICOM success, HTTP 201, "imported" on screen).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.errors import DecodeError, IngestError, StoreError
from appliance.ingest import raster
from appliance.ingest.dicom import DAMAGED, check_image_dataset, dicom_record, read_dicom
from appliance.ingest.sniff import IMAGE_KINDS, NOT_AN_IMAGE, sniff
from appliance.store.db import Store
from appliance.store.files import (
    atomic_write_bytes,
    clear_tmp,
    ensure_free_space,
    sha256_bytes,
)
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


class Importer:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    def import_path(self, path: Path, *, source: str, source_detail: str = "") -> ImportOutcome:
        """Import one file; the file itself is only ever read (USB sticks stay untouched)."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > self.config.upload_max_mb * 1024 * 1024:
                raise IngestError(
                    f"The file is {size // (1024 * 1024)} MB, larger than the "
                    f"{self.config.upload_max_mb} MB limit for one image."
                )
            raw = path.read_bytes()
        except IngestError as exc:
            return self.refuse_in_place(path, exc.reason, source, source_detail)
        except OSError as exc:
            return self.refuse_in_place(
                path, f"The file could not be read ({exc.strerror or exc}).", source, source_detail
            )
        return self.import_bytes(
            raw, source=source, source_detail=source_detail or str(path), original_name=path.name
        )

    def import_bytes(
        self,
        raw: bytes,
        *,
        source: str,
        source_detail: str = "",
        original_name: str = "",
        priority: int = PRIORITY_NORMAL,
    ) -> ImportOutcome:
        sha = sha256_bytes(raw)
        kind = sniff(raw[:512])
        try:
            try:
                record = self._describe(raw, kind, sha, source, source_detail, original_name)
            except IngestError:
                raise
            except Exception as exc:  # a malformed value pydicom accepted but we cannot use
                raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc
        except IngestError as exc:
            return self._quarantine(raw, sha, kind, exc, source, source_detail, original_name)

        conn = self.store.conn()
        duplicate = find_duplicate(conn, record.sop_instance_uid, sha)
        if duplicate is not None:
            return ImportOutcome("duplicate", original_name, image_id=duplicate)

        ensure_free_space(self.store.data_dir, len(raw), self.config.min_free_mb)
        relative = Path("images") / sha[:2] / f"{sha}{EXTENSIONS[kind]}"
        atomic_write_bytes(self.store.data_dir / relative, raw, self.store.tmp_dir)
        try:
            with self.store.write() as conn:
                duplicate = find_duplicate(conn, record.sop_instance_uid, sha)
                if duplicate is not None:  # another sender won the race
                    return ImportOutcome("duplicate", original_name, image_id=duplicate)
                image_id = insert_image(conn, record, str(relative), priority)
        except sqlite3.Error as exc:
            raise StoreError(f"could not record {original_name or sha[:12]}: {exc}") from exc
        self.store.jobs_waiting.set()
        log.info("stored image %s from %s (%s)", image_id, source, source_detail)
        return ImportOutcome("stored", original_name, image_id=image_id)

    def _describe(
        self, raw: bytes, kind: str, sha: str, source: str, source_detail: str, name: str
    ) -> ImageRecord:
        max_pixels = self.config.max_image_pixels
        if kind == "dicom":
            ds = read_dicom(raw)
            check_image_dataset(ds, max_pixels)
            return dicom_record(
                ds,
                sha256=sha,
                size_bytes=len(raw),
                source=source,
                source_detail=source_detail,
                original_name=name,
            )
        if kind in IMAGE_KINDS:
            size = raster.check_raster(raw, kind, max_pixels)
            width, height = size if size else (None, None)
            return ImageRecord(
                sha256=sha,
                size_bytes=len(raw),
                file_format=kind,
                source=source,
                source_detail=source_detail,
                original_name=name,
                # A photo has no study: give it its own, stable for the same bytes.
                study_instance_uid=f"2.25.{int(sha[:30], 16)}",
                rows=height,
                columns=width,
                frames=1,
            )
        raise IngestError(NOT_AN_IMAGE.get(kind, NOT_AN_IMAGE["unknown"]))

    def _quarantine(
        self,
        raw: bytes,
        sha: str,
        kind: str,
        exc: IngestError,
        source: str,
        source_detail: str,
        name: str,
    ) -> ImportOutcome:
        conn = self.store.conn()
        existing = quarantined_sha(conn, sha)
        if existing is not None:
            return ImportOutcome("quarantined", name, quarantine_id=existing, reason=exc.reason)
        ensure_free_space(self.store.data_dir, len(raw), self.config.min_free_mb)
        relative = Path("quarantine") / f"{sha}{EXTENSIONS.get(kind, '.bin')}"
        atomic_write_bytes(self.store.data_dir / relative, raw, self.store.tmp_dir)
        with self.store.write() as conn:
            qid = insert_quarantine(
                conn,
                sha256=sha,
                reason=exc.reason,
                detail=exc.detail,
                source=source,
                source_detail=source_detail,
                original_name=name,
                stored_path=str(relative),
                size_bytes=len(raw),
            )
        log.warning(
            "quarantined %s from %s: %s (%s)", name or sha[:12], source, exc.reason, exc.detail
        )
        return ImportOutcome("quarantined", name, quarantine_id=qid, reason=exc.reason)

    def refuse_in_place(
        self, path: Path, reason: str, source: str, source_detail: str
    ) -> ImportOutcome:
        """Record a file that is not taken in (too big, unreadable, not an image on a
        stick): where it is and why, so the nurse sees it in the quarantine list. Nothing
        is copied; the file stays where it is."""
        with self.store.write() as conn:
            existing = conn.execute(
                "SELECT id FROM quarantine WHERE sha256='' AND source_detail=? AND reason=?",
                (source_detail or str(path), reason),
            ).fetchone()
            if existing is not None:  # the same stick again: one row is enough
                return ImportOutcome("refused", path.name, quarantine_id=existing[0], reason=reason)
            qid = insert_quarantine(
                conn,
                sha256="",
                reason=reason,
                detail=None,
                source=source,
                source_detail=source_detail or str(path),
                original_name=path.name,
                stored_path="",
                size_bytes=_size(path),
            )
        return ImportOutcome("refused", path.name, quarantine_id=qid, reason=reason)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
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
            outcome = importer.import_bytes(
                path.read_bytes(),
                source="recovered",
                source_detail=str(path),
                original_name=path.name,
            )
            recovered += outcome.status == "stored"
            if outcome.status == "duplicate":  # same SOP instance held under other bytes
                path.unlink(missing_ok=True)
    return {"temp_files_removed": removed, "files_recovered": recovered}
