"""A watched folder: files dropped in are imported, then removed from the folder.

A file is taken only once its size and modification time have stayed the same for
``hot_folder_settle_seconds``, so a copy still in progress is never imported half-done.
It is removed only after the store holds it (or its quarantine copy): a crash between
the two leaves the file in place and the next scan finds it a duplicate.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from appliance.errors import StorageFullError
from appliance.ingest.importer import Importer

log = logging.getLogger(__name__)

LINK_OUT_OF_FOLDER = "This is a link to a file outside the watched folder; it was not read."


class HotFolder:
    def __init__(self, importer: Importer, folder: Path, stop: threading.Event) -> None:
        self.importer = importer
        self.folder = Path(folder)
        self.stop = stop
        self.settle = importer.config.hot_folder_settle_seconds
        self.poll = importer.config.hot_folder_poll_seconds
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, since)
        self._refused: set[tuple[Path, int, int]] = set()
        self.thread = threading.Thread(target=self.run, name="hot-folder", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.scan_once()
            except Exception:
                log.exception("hot folder scan failed")
            self.stop.wait(self.poll)

    def scan_once(self, now: float | None = None) -> int:
        """Import every settled file; returns how many were taken in."""
        now = time.monotonic() if now is None else now
        current: dict[Path, tuple[int, int, float]] = {}
        taken = 0
        files = self._files()
        for path in files:
            try:
                st = path.lstat()  # a link is judged when it is opened, not followed here
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if (path, *key) in self._refused:
                continue
            previous = self._seen.get(path)
            since = previous[2] if previous and previous[:2] == key else now
            current[path] = (*key, since)
            if now - since < self.settle:
                continue
            try:
                # A FIFO, a device or a link out of the folder is refused, never read.
                outcome = self.importer.import_path(
                    path, source="folder", within=self.folder, outside_reason=LINK_OUT_OF_FOLDER
                )
            except StorageFullError:
                log.error("disk full: %s stays in the hot folder", path)
                break
            if outcome.status == "refused":  # not copied, so it must stay where it is
                self._refused.add((path, *key))
                continue
            if _signature(path) != key:  # written to again while being read: the new
                continue  # bytes were never imported, so keep the file for the next scan
            path.unlink(missing_ok=True)
            current.pop(path, None)
            taken += 1
        self._seen = current
        listed = set(files)  # forget refusals of files that are gone
        self._refused = {entry for entry in self._refused if entry[0] in listed}
        return taken

    def _files(self) -> list[Path]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath) / n for n in filenames if not n.startswith("."))
        return sorted(found)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns
