"""Background workers: claim a job, screen its image, complete it in one transaction.

decode the stored original -> preview -> screen (gate, quality, model) -> one
transaction: image decoded + result row + job done -> heatmap (the row names it; the
score is not kept waiting for a regenerable picture). Pixels that cannot be read
send the image to quarantine with the reason instead. A worker does not claim jobs
while the models it needs are not loaded: the jobs wait, nothing is lost.

Before decoding, a worker notes on the job that it is decoding (``decoding_since``,
committed). A job found with that note on its next attempt stopped the box mid-decode:
it is decoded again only in a memory-limited child process (ingest/sandbox.py), and
quarantined if that fails, so one crafted file cannot crash the box after every restart.
Full detail is a job of its own (``full``), decoded here under the same guard, never on the web.

A full disk is not the image's fault. Below the free-space reserve (``min_free_mb``) a
worker claims nothing (the jobs wait, no attempt is spent), and the previews, heatmaps
and full-detail views it writes never eat into the reserve: that is kept for the images
the doors must still accept. A job that meets a full disk all the same (another writer
took the space) waits in the queue with its attempt given back and a growing pause
(store/jobs.py); when the worker sees space come back, every waiting job goes at once.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

from appliance.config import Config
from appliance.errors import IngestError
from appliance.ingest.decode import DecodedImage, decode_file
from appliance.ingest.headers import ImageLimits
from appliance.ingest.sandbox import decode_in_child
from appliance.previews import (
    FULL_DETAIL,
    FULL_DETAIL_MAX_PX,
    HEATMAP_MAX_PX,
    THUMBNAIL_MAX_PX,
    full_detail_path,
    heatmap_png,
    preview_jpeg,
    preview_size,
    thumbnail_path,
    write_regenerable,
)
from appliance.screening.gate import age_in_years
from appliance.screening.pipeline import Screener
from appliance.screening.shadow import screen_in_shadow
from appliance.store import jobs, model_versions
from appliance.store.db import Store, audit, utc_now
from appliance.store.files import is_disk_full
from appliance.store.images import insert_quarantine
from appliance.store.population import park_for_population
from appliance.store.results import insert_result

log = logging.getLogger(__name__)

TAG_COLUMNS = ("modality", "body_part", "view_position", "laterality", "sop_class_uid")


def request_full_detail(store: Store, image_id: int) -> str:
    """Queue the full-detail view of a decoded image (once); returns the job's state."""
    with store.write() as conn:
        jobs.enqueue(conn, FULL_DETAIL, image_id, jobs.PRIORITY_INTERACTIVE)
        # Done but the file is gone (the previews were cleared): make it again.
        conn.execute(
            "UPDATE jobs SET state='queued', attempts=0 WHERE kind=? AND image_id=?"
            " AND state='done'",
            (FULL_DETAIL, image_id),
        )
        row = conn.execute(
            "SELECT state FROM jobs WHERE kind=? AND image_id=?", (FULL_DETAIL, image_id)
        ).fetchone()
    store.jobs_waiting.set()
    return row["state"]


class Worker:
    def __init__(
        self, store: Store, config: Config, screener: Screener, name: str | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.screener = screener
        # host:pid:name, so the next start-up can tell this process's leases (jobs.py)
        self.name = jobs.lease_owner(name or str(threading.get_ident()))
        self._had_room: bool | None = None  # what room_to_work saw last (None: not yet)

    def run_once(self) -> bool:
        """Process one job if there is one; returns False when there was nothing to do."""
        if not self.screener.ready or not self.room_to_work():
            return False
        # Between jobs: an activation (another process) loads the new set in the background.
        self.screener.reload_if_changed(model_versions.generation(self.store.conn()))
        job = jobs.claim(
            self.store, self.name, self.config.job_lease_seconds, self.config.job_max_attempts
        )
        if job is None:
            return False
        try:
            with self.screener.use() as models:  # the job ends on the set that claimed it
                self.process(job, models)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # also a native library's panic: the thread lives on
            error = f"{type(exc).__name__}: {exc}"
            if is_disk_full(exc):
                wait = jobs.wait_for_disk(self.store, job, error)
                log.warning(
                    "job %s (image %s) waits %s for disk space, no attempt spent: %s",
                    job.id,
                    job.image_id,
                    f"{wait:.0f} s" if wait is not None else "(lease lost meanwhile)",
                    error,
                )
            else:
                state = jobs.fail(self.store, job, error, self.config.job_max_attempts)
                log.exception("job %s (image %s) failed, now %s", job.id, job.image_id, state)
        return True

    def room_to_work(self) -> bool:
        """Whether the disk has more free space than the reserve. Below it nothing is
        claimed; when space comes back, the jobs that waited for it go at once."""
        free = shutil.disk_usage(self.store.data_dir).free
        room = free >= self.config.min_free_mb * 2**20
        if room and self._had_room is not True:
            woken = jobs.wake_waiting(self.store)
            if woken or self._had_room is False:
                log.info("disk space is back: screening goes on (%s job(s) waited)", woken)
        elif not room and self._had_room is not False:
            log.warning(
                "disk nearly full: %s MB free, %s MB kept in reserve: screening waits until"
                " space is freed",
                free // 2**20,
                self.config.min_free_mb,
            )
        self._had_room = room
        return room

    def keep(self, relative: Path, data: bytes) -> None:
        """Write a preview, heatmap or full-detail view (previews.write_regenerable)."""
        write_regenerable(self.store.data_dir, relative, data, self.config.min_free_mb)

    def drain(self) -> int:
        done = 0
        while self.run_once():
            done += 1
        return done

    def run_forever(self, stop: threading.Event, idle_wait: float = 1.0) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # e.g. database locked for too long: wait and try again
                log.exception("worker loop error")
                busy = False
            if not busy:
                # Woken at once when an image is stored; the timeout catches lease expiry.
                self.store.jobs_waiting.wait(idle_wait)
                self.store.jobs_waiting.clear()

    def process(self, job: jobs.Job, models=None) -> None:
        image = (
            self.store.conn()
            .execute(
                "SELECT i.*, s.patient_age, s.patient_birth_date, s.study_date FROM images i"
                " JOIN studies s ON s.id = i.study_id WHERE i.id=?",
                (job.image_id,),
            )
            .fetchone()
        )
        if job.kind == FULL_DETAIL:
            self.prepare_full_detail(job, image)
            return
        started = time.perf_counter()
        # Nothing downstream needs more than the preview's size: JPEG 2000 may stop
        # decoding one wavelet level early (4x faster for a 2000 px CR).
        decoded = self.decode(job, image, self.config.preview_max_px)
        if isinstance(decoded, IngestError):
            self._quarantine(job, image, decoded)
            return
        decode_ms = (time.perf_counter() - started) * 1000

        preview = Path("previews") / f"{image['id']}.jpg"
        self.keep(preview, preview_jpeg(decoded, self.config.preview_max_px))
        self.keep(thumbnail_path(image["id"]), preview_jpeg(decoded, THUMBNAIL_MAX_PX))
        tags = {column: image[column] for column in TAG_COLUMNS}
        tags["patient_age_years"] = age_in_years(
            image["patient_age"], image["patient_birth_date"], image["study_date"]
        )
        result = self.screener.screen(
            decoded,
            tags,
            population=image["population"],  # staff's choice, for an X-ray without an age
            models=models,
            route=image["route_chosen"],  # a clinician's word, where the router refused
            quality_overruled_by=image["quality_overruled_by"],  # or the quality check
            map_now=False,  # drawn once the result is stored (draw_heatmap)
        )
        result.timings_ms = {"decode": decode_ms, **result.timings_ms}
        heatmap_path = None
        if result.heat is not None and result.heat.validated:  # a scored image, map shown
            heatmap_path = Path("heatmaps") / f"{image['id']}.png"
        result_id = None
        with self.store.write() as conn:
            conn.execute(
                "UPDATE images SET state='decoded', decoded_at=?, decode_info=?, preview_path=?"
                " WHERE id=?",
                (utc_now(), json.dumps(decoded.summary()), str(preview), image["id"]),
            )
            if models is not None:  # which versions screened it (the set that claimed it)
                conn.execute(
                    "UPDATE jobs SET model_versions=? WHERE id=?",
                    (json.dumps(models.versions()), job.id),
                )
            if result.needs_population:  # no score until staff choose adult or child
                park_for_population(conn, image["id"])
            else:
                result_id = insert_result(
                    conn,
                    image["id"],
                    job.id,
                    result.as_dict(),
                    str(heatmap_path) if heatmap_path else None,
                )
            _decode_over(conn, job)
            if not jobs.complete(conn, job):
                raise RuntimeError("lease lost while processing")  # rolls the result back
        if heatmap_path is not None:
            self.draw_heatmap(decoded, result, heatmap_path)
        if models is not None and models.shadows and result_id is not None:
            try:  # the job is done: a shadow's trouble is logged, never the image's
                self.shadow(job, image, decoded, tags, result, result_id, models)
            except Exception:
                log.exception("shadow screening of image %s not stored", image["id"])

    def draw_heatmap(self, decoded: DecodedImage, result, relative: Path) -> None:
        """The page's overlay, after the result is stored (its row names the file): the
        worklist gets the score without waiting for the map. Lost to a power cut or a
        full disk here, the page shows the score without its map."""
        try:
            self.screener.draw_map(result, decoded.pixels.shape[:2],
                                   preview_size(decoded, HEATMAP_MAX_PX))
            self.keep(relative, heatmap_png(result.heatmap))
        except Exception:  # the result stands; only its overlay is missing
            log.exception("heatmap of %s not written", relative)

    def shadow(self, job, image, decoded, tags, result, result_id, models) -> None:
        """After the result is committed (it never waits for a shadow): each shadow
        version's result, in ``shadow_results`` only."""
        found = screen_in_shadow(
            self.screener, models, decoded, tags, result, population=image["population"]
        )
        with self.store.write() as conn:
            for item in found:
                item.result["timings_ms"] = {**item.result["timings_ms"], "shadow": item.ms}
                model_versions.insert_shadow_result(
                    conn,
                    image["id"],
                    job.id,
                    result_id,
                    item.active_version,
                    item.result,
                    item.version,
                    item.name,
                )

    def decode(self, job: jobs.Job, image, max_side: int | None) -> DecodedImage | IngestError:
        """The image's pixels, or why they cannot be had; guarded against a decode that
        stopped the box last time (see the module docstring)."""
        path = self.store.data_dir / image["stored_path"]
        limits = ImageLimits.from_config(self.config)
        memory_mb = self.config.decode_retry_memory_mb
        conn = self.store.conn()
        row = conn.execute("SELECT decoding_since FROM jobs WHERE id=?", (job.id,)).fetchone()
        if row["decoding_since"] is not None:
            log.warning(
                "job %s (image %s) stopped the box while decoding (since %s): decoding it"
                " in a child process limited to %s MB first",
                job.id,
                image["id"],
                row["decoding_since"],
                memory_mb,
            )
            refused = decode_in_child(path, limits, max_side, memory_mb)
            if refused is not None:
                return refused
        path.stat()  # a missing file is a plain failure, not a decode that stopped the box
        # Not waited onto the disk: the note is for a decode that stops this process,
        # which leaves it written; a power cut is not the file's doing.
        with self.store.write(durable=False) as conn:
            conn.execute("UPDATE jobs SET decoding_since=? WHERE id=?", (utc_now(), job.id))
        try:
            return decode_file(path, limits, max_side)
        except IngestError as exc:
            return exc
        except MemoryError:
            raise  # the note stays: the next attempt decodes in a child process first
        except Exception:
            with self.store.write() as conn:  # an ordinary failure: retried as usual
                _decode_over(conn, job)
            raise

    def prepare_full_detail(self, job: jobs.Job, image) -> None:
        """Decode the original in full, once, for the viewer: only for an image that
        decoded for screening; a refusal here leaves the screening result alone."""
        decoded = (
            self.decode(job, image, None)
            if image["state"] == "decoded"
            else IngestError("not decoded", detail=f"image state {image['state']}")
        )
        if isinstance(decoded, IngestError):
            with self.store.write() as conn:
                _decode_over(conn, job)
            jobs.fail(self.store, job, f"{decoded.reason} ({decoded.detail})", job.attempts)
            log.warning("full detail of image %s refused: %s", image["id"], decoded.reason)
            return
        self.keep(full_detail_path(image["id"]), preview_jpeg(decoded, FULL_DETAIL_MAX_PX))
        with self.store.write() as conn:
            _decode_over(conn, job)
            if not jobs.complete(conn, job):
                raise RuntimeError("lease lost while processing")

    def _quarantine(self, job: jobs.Job, image, exc: IngestError) -> None:
        """Pixels that cannot be read: keep the file, say why, never screen it."""
        with self.store.write() as conn:
            insert_quarantine(
                conn,
                sha256=image["sha256"],
                reason=exc.reason,
                detail=exc.detail,
                source=image["source"],
                source_detail=image["source_detail"] or "",
                original_name=image["original_name"] or "",
                stored_path=image["stored_path"],
                size_bytes=image["size_bytes"],
                image_id=image["id"],
            )
            conn.execute("UPDATE images SET state='quarantined' WHERE id=?", (image["id"],))
            insert_result(
                conn,
                image["id"],
                job.id,
                {"route": "refused", "reason": exc.reason, "hints": []},
                None,
            )
            audit(conn, "worker", "image.refused", f"image:{image['id']}", exc.reason)
            _decode_over(conn, job)
            jobs.complete(conn, job)
        log.warning("image %s quarantined: %s (%s)", image["id"], exc.reason, exc.detail)


def _decode_over(conn, job: jobs.Job) -> None:
    """The decode finished (with pixels or a refusal): the next attempt, if any, may
    decode in the service again."""
    conn.execute("UPDATE jobs SET decoding_since=NULL WHERE id=?", (job.id,))
