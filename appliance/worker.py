"""Background workers: claim a job, process its image, complete it in one transaction.

Today a screening job decodes the stored original (so damaged pixels are caught and the
image quarantined with a reason) and stores a preview for the viewer. The screening
models hook in here (issue 4): decode -> fitness gate -> preprocess -> infer -> store.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path

import cv2
import numpy as np

from appliance.config import Config
from appliance.errors import IngestError
from appliance.ingest.decode import DecodedImage, decode_bytes
from appliance.store import jobs
from appliance.store.db import Store, audit, utc_now
from appliance.store.files import atomic_write_bytes
from appliance.store.images import insert_quarantine

log = logging.getLogger(__name__)


def preview_png(image: DecodedImage, max_px: int) -> bytes:
    """An 8-bit PNG no larger than ``max_px`` on its longest side (for the viewer)."""
    pixels = image.pixels
    scale = max_px / max(pixels.shape[:2])
    if scale < 1:
        size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    eight_bit = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if eight_bit.ndim == 3:
        eight_bit = cv2.cvtColor(eight_bit, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", eight_bit)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


class Worker:
    def __init__(self, store: Store, config: Config, name: str | None = None) -> None:
        self.store = store
        self.config = config
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def run_once(self) -> bool:
        """Process one job if there is one; returns False when the queue was empty."""
        job = jobs.claim(
            self.store, self.name, self.config.job_lease_seconds, self.config.job_max_attempts
        )
        if job is None:
            return False
        try:
            self.process(job)
        except Exception as exc:
            state = jobs.fail(
                self.store, job, f"{type(exc).__name__}: {exc}", self.config.job_max_attempts
            )
            log.exception("job %s (image %s) failed, now %s", job.id, job.image_id, state)
        return True

    def drain(self) -> int:
        done = 0
        while self.run_once():
            done += 1
        return done

    def run_forever(self, stop: threading.Event, idle_wait: float = 0.5) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # e.g. database locked for too long: wait and try again
                log.exception("worker loop error")
                busy = False
            if not busy:
                stop.wait(idle_wait)

    def process(self, job: jobs.Job) -> None:
        image = (
            self.store.conn()
            .execute(
                "SELECT id, stored_path, source, source_detail, original_name, sha256, size_bytes"
                " FROM images WHERE id=?",
                (job.image_id,),
            )
            .fetchone()
        )
        raw = (self.store.data_dir / image["stored_path"]).read_bytes()
        try:
            decoded = decode_bytes(raw, self.config.max_image_pixels)
        except IngestError as exc:
            self._quarantine(job, image, exc)
            return
        preview = Path("previews") / f"{image['id']}.png"
        atomic_write_bytes(
            self.store.data_dir / preview,
            preview_png(decoded, self.config.preview_max_px),
            self.store.tmp_dir,
        )
        with self.store.write() as conn:
            conn.execute(
                "UPDATE images SET state='decoded', decoded_at=?, decode_info=?, preview_path=?"
                " WHERE id=?",
                (utc_now(), json.dumps(decoded.summary()), str(preview), image["id"]),
            )
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
            audit(conn, "worker", "image.refused", f"image:{image['id']}", exc.reason)
            jobs.complete(conn, job)
        log.warning("image %s quarantined: %s (%s)", image["id"], exc.reason, exc.detail)
