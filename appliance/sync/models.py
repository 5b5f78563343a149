"""Model bundles from the hub, during the sync pass (after results and images).

1. Ask the hub what this box should have (``GET /models``: name, version, sha256, size,
   activate), per model the version the programme rolled out to this box.
2. A version the box lacks is downloaded to ``models/.downloads/<sha256>.part`` in
   ranges (``sync_image_chunk_kb`` each, through the worker's retry and bandwidth cap);
   a cut connection, a hub restart or a power cut keeps what arrived, and the next try
   asks for the rest from the file's size (HTTP Range).
3. The whole file's sha256 must be the one the hub listed, then ``lifecycle.install``
   verifies it like any other file (signature with a key the box trusts, every hash,
   the contract) and installs it **in shadow**. A refused file is audited, its part
   deleted and its sha256 remembered, so the box does not fetch it again and again.
4. Only when the rollout says ``activate`` does the box activate it, once: an admin who
   then rolls back on the box is not overruled at the next pass.
5. The box reports every version it holds and its state (``POST /models/status``), which
   the hub's dashboard shows per box.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import Config
from appliance.errors import ApplianceError, HubRejectedError, ModelPackageError
from appliance.lifecycle import activation
from appliance.lifecycle.install import install
from appliance.store import model_versions, sync_state
from appliance.store.db import Store, audit
from appliance.sync.client import HubClient

log = logging.getLogger(__name__)
T = TypeVar("T")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BUNDLE_BYTES = 4 << 30
REMEMBERED = 100  # sha256s kept per list in sync_state
REFUSED_KEY, ACTIVATED_KEY, ERROR_KEY = "models_refused", "models_activated", "models_error"
REPORTED_KEY = "models_reported"


def downloads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / ".downloads"


class ModelSync:
    """One pass's model step; ``retry`` is the worker's (backoff, bandwidth cap)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        client: HubClient,
        retry: Callable[[Callable[[], T], str], T],
    ) -> None:
        self.store, self.config, self.client, self.retry = store, config, client, retry

    def _remembered(self, key: str) -> list[str]:
        try:
            return list(json.loads(sync_state.read(self.store.conn()).get(key) or "[]"))
        except ValueError:
            return []

    def _remember(self, key: str, sha: str) -> None:
        shas = [s for s in self._remembered(key) if s != sha] + [sha]
        sync_state.write(self.store, **{key: json.dumps(shas[-REMEMBERED:])})

    def run(self) -> dict[str, int]:
        """Fetch, install, activate as the hub says, then report; returns counts."""
        done = {"installed": 0, "activated": 0, "refused": 0}
        try:
            wanted = [e for e in self.retry(self.client.list_models, "models") if _valid(e)]
        except HubRejectedError as exc:  # a hub from before distribution: nothing to do
            log.info("sync: the hub lists no models (%s)", exc)
            return done
        self._discard_parts({e["sha256"] for e in wanted})
        for entry in wanted:
            self._one(entry, done)
        self.report()
        sync_state.write(self.store, **{ERROR_KEY: None})
        return done

    def _one(self, entry: dict[str, Any], done: dict[str, int]) -> None:
        name, version, sha = entry["name"], entry["version"], entry["sha256"]
        row = model_versions.row(self.store.conn(), name, version)
        if row is None or row["state"] == model_versions.REFUSED:
            if sha in self._remembered(REFUSED_KEY):
                return  # this very file was refused already: never fetched again
            part = self.download(entry)
            if part is None:
                done["refused"] += 1
                return
            try:
                install(self.store, self.config, part, actor="hub")
                done["installed"] += 1
            except ModelPackageError as exc:
                log.warning("sync: %s %s from the hub refused: %s", name, version, exc)
                self._remember(REFUSED_KEY, sha)
                done["refused"] += 1
                return
            finally:
                part.unlink(missing_ok=True)
            row = model_versions.row(self.store.conn(), name, version)
        if not entry["activate"] or row is None or sha in self._remembered(ACTIVATED_KEY):
            return
        if row["state"] != model_versions.ACTIVE:
            try:
                activation.activate(self.store, self.config, name, version, actor="hub")
                done["activated"] += 1
            except ApplianceError as exc:  # audited by activate; the admin decides now
                log.warning("sync: %s %s not activated: %s", name, version, exc)
        self._remember(ACTIVATED_KEY, sha)

    def download(self, entry: dict[str, Any]) -> Path | None:
        """The verified file, or None when its sha256 is not the listed one (audited,
        the part deleted). Raises a SyncError when the hub cannot be reached: what
        arrived stays for the next try."""
        sha, size = entry["sha256"], entry["size"]
        folder = downloads_dir(self.config.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{sha}.part"
        if part.exists() and part.stat().st_size > size:
            part.unlink()
        free = shutil.disk_usage(folder).free
        if free - (size - (part.stat().st_size if part.exists() else 0)) * 3 < (
            self.config.min_free_mb << 20
        ):
            raise ModelPackageError(f"not enough free disk for {entry['name']} {entry['version']}")
        piece = max(1, self.config.sync_image_chunk_kb) * 1024
        with open(part, "ab") as sink:

            def fetch() -> int:
                have = os.fstat(sink.fileno()).st_size  # what earlier tries left
                count = min(piece, size - have)
                return self.client.download_range(sha, sink, have, count, size)

            while os.fstat(sink.fileno()).st_size < size:
                self.retry(fetch, "model download")
            sink.flush()
            os.fsync(sink.fileno())
        digest = hashlib.sha256()
        with open(part, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != sha:
            part.unlink()
            reason = "the downloaded file does not match the sha256 the hub listed"
            with self.store.write() as conn:
                audit(conn, "hub", "model.refused", f"file:{sha}", reason)
            log.warning("sync: %s %s: %s", entry["name"], entry["version"], reason)
            self._remember(REFUSED_KEY, sha)
            return None
        return part

    def _discard_parts(self, wanted: set[str]) -> None:
        """Parts of files the hub no longer lists for this box."""
        folder = downloads_dir(self.config.data_dir)
        for part in folder.glob("*.part") if folder.is_dir() else []:
            if part.stem not in wanted:
                part.unlink(missing_ok=True)

    def report(self) -> None:
        """Tell the hub every version this box holds and its state (when it changed:
        the link is often slow and paid by the megabyte)."""
        rows = activation.listing(self.store, self.config)
        models = [{"name": r["name"], "version": r["version"], "state": r["state"]} for r in rows]
        text = json.dumps(models, sort_keys=True)
        if sync_state.read(self.store.conn()).get(REPORTED_KEY) == text:
            return
        self.retry(lambda: self.client.report_models(models), "models report")
        sync_state.write(self.store, **{REPORTED_KEY: text})


def _valid(entry: Any) -> bool:
    """An entry of the hub's list the box can act on (anything else is skipped)."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("version"), str)
        and isinstance(entry.get("sha256"), str)
        and SHA256.match(entry["sha256"]) is not None
        and type(entry.get("size")) is int
        and 0 < entry["size"] <= MAX_BUNDLE_BYTES
        and isinstance(entry.get("activate"), bool)
    )
