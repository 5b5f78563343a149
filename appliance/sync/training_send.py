"""Training exports sent to the hub with sync (issue 27; the hub's side is
``appliance/hub/training_api.py``), where the site allows it (``training_sync``).

``appliance training send`` writes an export into ``DATA_DIR/training/outgoing/`` and
sends every export there, one file at a time in chunks of ``sync_image_chunk_kb``, the
signed manifest first. Before each export the box asks the hub what it holds already
(whole files, images it keeps from another export, the chunks of an unfinished file) and
sends only the rest, so a dropped link resumes where it stopped. A chunk the hub finds
damaged (its sha256 differs) is sent again, a few times at most. Once the hub has
imported the export, or answers that it had, the box's copy is deleted; an export the
hub refuses is moved to ``DATA_DIR/training/refused/`` with the hub's reason beside it,
and never sent again. A request that fails for a transient reason is retried with
backoff, as the sync worker does; when the link stays down the command stops, and
running it again sends what is still missing.

The sync worker sends the same folder in its own passes (``worker.py``), after the
results, images and models of the pass, and stops between two chunks as soon as a result
waits (``stop``): the next pass sends the result first, then goes on where it stopped.
An export waits there until the hub confirms it imported it: ``training send --queue``
puts one there without sending. Every request is paced to ``sync_max_kbps``
(``pacing.py``), by hand as by the worker.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import Config
from appliance.errors import HubBusyError, HubRejectedError, HubUnreachableError
from appliance.sync.client import HubClient
from appliance.sync.pacing import Pacer, bytes_moved
from appliance.sync.worker import BUSY_ANSWERS, REQUEST_ATTEMPTS, backoff_delay, busy_delay
from appliance.wire.training_export import LABELS, MANIFEST, SIGNATURE

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTGOING = "training/outgoing"
REFUSED = "training/refused"
CHUNK_ATTEMPTS = 3  # a chunk or file refused as damaged is sent this many times at most
ANSWERS = (400, 409, 413, 422)  # the hub's refusals, read for their code


class HubRefusal(HubRejectedError):
    """The hub refused one request of a training upload; ``code`` says which refusal."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    """The upload stopped between two chunks for something more urgent (a result)."""


class TrainingSender:
    """Sends the exports in ``DATA_DIR/training/outgoing`` through ``client``: paced by
    ``pace`` (one of its own on ``sync_max_kbps`` unless the worker shares its own),
    stopping between chunks once ``stop()`` says so (``report["stopped"]``)."""

    def __init__(
        self,
        client: HubClient,
        config: Config,
        *,
        rng: Callable[[], float] = random.random,
        pace: Callable[[], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
        by_worker: bool = False,
    ) -> None:
        self.client, self.config, self.rng, self.stop = client, config, rng, stop
        self.pace = pace or Pacer(lambda: bytes_moved(client), config.sync_max_kbps)
        self.again = "the next sync pass goes on" if by_worker else (
            "run `appliance training send` again to go on")  # fmt: skip
        self.chunk_bytes = config.sync_image_chunk_kb * 1024
        self.outgoing = config.data_dir / OUTGOING
        self.report: dict[str, Any] = {
            "exports": 0, "images": 0, "labels": 0, "files_sent": 0, "files_held": 0,
            "chunks_sent": 0, "chunks_resent": 0, "already_imported": [], "refused": [],
        }  # fmt: skip
        # and "stopped": True where ``stop`` stopped the upload

    def _retry(self, call: Callable[[], T], what: str) -> T:
        attempt = busy = 0
        while True:
            try:
                answer = call()
            except HubBusyError as exc:
                busy += 1
                if busy > BUSY_ANSWERS:
                    raise
                time.sleep(busy_delay(exc.retry_after, self.config.sync_retry_max_seconds,
                                      self.rng))  # fmt: skip
            except HubUnreachableError as exc:
                attempt += 1
                if attempt == REQUEST_ATTEMPTS:
                    raise HubUnreachableError(
                        f"{exc}; {self.again} where it stopped (what the hub holds is not"
                        " sent again)"
                    ) from exc
                delay = backoff_delay(attempt, self.config.sync_retry_min_seconds,
                                      self.config.sync_retry_max_seconds, self.rng)  # fmt: skip
                log.info("training send: %s failed (%s); again in %.2fs", what, exc, delay)
                time.sleep(delay)
            else:
                self.pace()  # sync_max_kbps: a pause after each answer where due
                return answer

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        """One request, retried while transient; a refusal raises ``HubRefusal``."""
        answer = self._retry(
            lambda: self.client.request(method, path, answers=ANSWERS, **kwargs), what
        )
        error = answer.get("error")
        if isinstance(error, dict):
            raise HubRefusal(str(error.get("code", "")), str(error.get("message", "")))
        return answer

    def pending(self) -> list[Path]:
        if not self.outgoing.is_dir():
            return []
        return sorted(p for p in self.outgoing.iterdir() if p.is_dir()
                      and not p.name.startswith("."))  # fmt: skip

    def send_all(self) -> dict[str, Any]:
        try:
            for folder in self.pending():
                self.send(folder)
        except Stopped:  # what the hub holds stays there: the next try goes on from it
            self.report["stopped"] = True
        return self.report

    def send(self, folder: Path) -> None:
        """Send one export whole, then have the hub check and import it."""
        export_id = folder.name
        base = f"/training/{export_id}"
        try:
            status = self._call("GET", base, "status")
            if status.get("imported"):
                done = {"already": True}
            else:
                self._send_files(folder, base, status)
                done = self._call("POST", f"{base}/complete", "complete")
        except HubRefusal as exc:
            if exc.code != "export_refused":
                raise
            self._refused(folder, str(exc))
            return
        if done.get("already"):
            self.report["already_imported"].append(export_id)
        else:
            self.report["exports"] += 1
            self.report["images"] += int(done.get("images", 0))
            self.report["labels"] += int(done.get("labels", 0))
        shutil.rmtree(folder)  # the hub holds it now

    def _send_files(self, folder: Path, base: str, status: dict[str, Any]) -> None:
        held = set(status.get("held") or [])
        chunks = status.get("chunks") or {}
        for rel in (SIGNATURE, MANIFEST):  # first: the hub takes no other file before them
            self._send_file(folder, base, rel, rel in held, chunks.get(rel))
        if MANIFEST not in held:  # now the hub knows the files: which it keeps already
            status = self._call("GET", base, "status")
            held, chunks = set(status.get("held") or []), status.get("chunks") or {}
        images = sorted(p.relative_to(folder).as_posix() for p in (folder / "images").glob("*"))
        for rel in (LABELS, *images):
            self._send_file(folder, base, rel, rel in held, chunks.get(rel))

    def _send_file(self, folder: Path, base: str, rel: str, held: bool, have) -> None:
        if held:
            self.report["files_held"] += 1
            return
        data = (folder / rel).read_bytes()
        size, step = len(data), self.chunk_bytes
        count = max(1, -(-size // step))
        have = set(have or [])  # the chunks the hub holds of it from an earlier try
        body = {"size": size, "chunks": count, "sha256": hashlib.sha256(data).hexdigest()}
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            for index in range(count):
                if index not in have:
                    if self.stop():
                        raise Stopped
                    self._send_chunk(base, rel, index, data[index * step : (index + 1) * step])
            try:
                self._call("POST", f"{base}/files/{rel}", rel, body=body)
                break
            except HubRefusal as exc:  # its chunks were put together wrong: all again
                if exc.code != "file_checksum" or attempt == CHUNK_ATTEMPTS:
                    raise
                have = set()
        self.report["files_sent"] += 1

    def _send_chunk(self, base: str, rel: str, index: int, chunk: bytes) -> None:
        digest = hashlib.sha256(chunk).hexdigest()
        path = f"{base}/files/{rel}/chunks/{index}"
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            try:
                self._call("PUT", path, f"{rel} chunk {index}", raw=chunk,
                           headers={"X-Chunk-Sha256": digest})  # fmt: skip
                self.report["chunks_sent"] += 1
                return
            except HubRefusal as exc:  # damaged on the way: the hub kept nothing of it
                if exc.code != "chunk_checksum" or attempt == CHUNK_ATTEMPTS:
                    raise
                self.report["chunks_resent"] += 1
                log.warning("training send: %s chunk %d damaged on the way; again", rel, index)

    def _refused(self, folder: Path, why: str) -> None:
        target = self.config.data_dir / REFUSED / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(folder), target)
        (target.parent / f"{folder.name}.why.txt").write_text(why + "\n", encoding="utf-8")
        self.report["refused"].append({"export": folder.name, "why": why})
