"""Pushing the hub's reports to a FHIR server (``hub_fhir_server_url``), with retries.

Each pass reads the entries that arrived since the last pass (``search.changed``, in
arrival order, from a position kept in ``hub_meta``), builds for each result they touch
(its new revision, or a review or outcome of its image) the transaction Bundle that PUTs
its DiagnosticReport (Observations contained) and ImagingStudy, and sends the ones whose
content changed since the server last took them: ``fhir_pushed`` keeps the digest of
what each report's server copy holds. So a pass costs what arrived, not the million
results the hub holds. Entries are read only ``settle_seconds`` after they arrived: a
batch still being written when the pass ran (its rows carry the time it started) is
never passed over. The position moves only past a page whose reports all went.

A report that cannot be built (a stored record with a field of the wrong type, kept
from before the hub checked them at its door) or that the server refuses as invalid
(400, 409, 412, 422) is skipped: noted for the admin (``bad_records.py``), counted in
the pass's ``skipped``, logged, and passed over, so the reports of every other site
still go. An answer that says the server will take nothing (401, 403, 404 ...) stops
the pass, as an unreachable server does.

PUT with our ids makes a resend an update, never a duplicate. A request that fails for a
transient reason (no connection, timeout, 429, 5xx) is retried with exponential backoff;
a pass that still fails leaves the rest for the next one. A bearer token for the server,
if it needs one, is read from ``DATA_DIR/secrets/fhir_server_token``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhir.resources.R4B.bundle import Bundle

from appliance.hub import bad_records
from appliance.hub.db import Connection, HubDatabase
from appliance.hub.fhir import search
from appliance.hub.fhir.resources import UnrenderableRecord, rendered
from appliance.hub.records import now

log = logging.getLogger(__name__)
ATTEMPTS = 4
TRANSIENT = {408, 429, 500, 502, 503, 504}
REFUSED_AS_INVALID = {400, 409, 412, 422}  # this bundle's fault: skip it, send the rest
SETTLE_SECONDS = 300.0  # far above a batch's transaction (30 s statement timeout)
PAGE = 1000
MARK_KEY = "fhir_push_position"


class PushError(Exception):
    """The FHIR server did not take a bundle (after retries, or refused it)."""


class BundleRefused(PushError):
    """The FHIR server refused one bundle as invalid (the others may still go)."""


def transaction(item: dict[str, Any]) -> Bundle:
    """The transaction Bundle of a found result; UnrenderableRecord where its stored
    record cannot be written as FHIR."""
    report, study = rendered(item)
    resources: list[Any] = [report]
    if study is not None:
        resources.insert(0, study)
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:appliance:{r.get_resource_type()}:{r.id}",
                    "resource": r.model_dump(mode="json", exclude_none=True),
                    "request": {"method": "PUT", "url": f"{r.get_resource_type()}/{r.id}"},
                }
                for r in resources
            ],
        }
    )


class FhirPusher:
    def __init__(
        self,
        database: HubDatabase,
        server_url: str,
        data_dir: Path,
        *,
        timeout: float = 30.0,
        retry_min: float = 1.0,
        settle_seconds: float = SETTLE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.settle_seconds = settle_seconds
        self.url = urlsplit(server_url.rstrip("/"))
        self.timeout = timeout
        self.retry_min = retry_min
        self.sleep = sleep
        token_file = data_dir / "secrets" / "fhir_server_token"
        self.token = token_file.read_text().strip() if token_file.exists() else None

    def _post(self, body: bytes) -> None:
        cls = (
            http.client.HTTPSConnection
            if self.url.scheme == "https"
            else http.client.HTTPConnection
        )
        conn = cls(self.url.netloc, timeout=self.timeout)
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request("POST", self.url.path or "/", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status in TRANSIENT:
            raise ConnectionError(f"FHIR server answered {response.status}")
        if response.status in REFUSED_AS_INVALID:
            raise BundleRefused(
                f"FHIR server refused the bundle: {response.status} {answer[:300]!r}"
            )
        if not 200 <= response.status < 300:
            raise PushError(f"FHIR server refused the bundle: {response.status} {answer[:300]!r}")

    def send(self, bundle: Bundle) -> None:
        body = bundle.model_dump_json(exclude_none=True).encode()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._post(body)
                return
            except (OSError, http.client.HTTPException) as exc:
                if attempt == ATTEMPTS:
                    raise PushError(f"FHIR server unreachable: {exc}") from exc
                delay = self.retry_min * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
                log.info("fhir: push failed (%s); retrying in %.2fs", exc, delay)
                self.sleep(delay)

    def push_once(self) -> dict[str, int]:
        """Send every report whose content changed; raises PushError when one fails
        (a report that cannot be built or that the server refuses is skipped)."""
        conn = self.database.connect()
        report = {"pushed": 0, "unchanged": 0, "skipped": 0}
        until = (datetime.now(timezone.utc) - timedelta(seconds=self.settle_seconds)).isoformat(
            timespec="milliseconds"
        )
        try:
            position = _position(conn)
            while True:
                keys, last = search.changed(conn, position, until, PAGE)
                if last is None:
                    break
                for key in keys:
                    self._push_report(conn, key, report)
                position = last
                _keep_position(conn, position)
        finally:
            conn.close()
        return report

    def _push_report(self, conn: Connection, key: tuple[str, str], report: dict) -> None:
        item = search.by_key(conn, *key)
        if item is None:
            return
        unreadable = list(item["unreadable"])  # a review or outcome passed over
        try:
            bundle = transaction(item)
        except UnrenderableRecord as exc:
            unreadable.append(_skipped(key, str(exc)))
            bad_records.note(conn, unreadable, "fhir-push")
            report["skipped"] += 1
            return
        bad_records.note(conn, unreadable, "fhir-push")
        body = bundle.model_dump_json(exclude_none=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
        held = conn.one("SELECT digest FROM fhir_pushed WHERE device_id = ? AND entry_id = ?", key)
        if held is not None and held["digest"] == digest:
            report["unchanged"] += 1
            return
        try:
            self.send(bundle)
        except BundleRefused as exc:
            bad_records.note(conn, [_skipped(key, str(exc))], "fhir-push")
            report["skipped"] += 1
            return
        _mark_pushed(conn, key, digest)
        report["pushed"] += 1

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                done = self.push_once()
                if done["pushed"] or done["skipped"]:
                    log.info(
                        "fhir: %s reports pushed, %s skipped", done["pushed"], done["skipped"]
                    )
            except PushError as exc:
                log.warning("fhir: %s", exc)
            except Exception:  # never let the pusher die silently
                log.exception("fhir: unexpected failure")
            stop.wait(interval)


def _skipped(key: tuple[str, str], reason: str) -> dict[str, Any]:
    return {"device_id": key[0], "entry_id": key[1], "kind": "result", "reason": reason}


def _position(conn: Connection) -> search.Position | None:
    row = conn.one("SELECT value FROM hub_meta WHERE key = ?", (MARK_KEY,))
    return tuple(json.loads(row["value"])) if row else None


def _keep_position(conn: Connection, position: search.Position) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO hub_meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (MARK_KEY, json.dumps(list(position))),
        )


def _mark_pushed(conn: Connection, key: tuple[str, str], digest: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO fhir_pushed (device_id, entry_id, digest, pushed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id, entry_id) DO UPDATE SET digest = excluded.digest,"
            " pushed_at = excluded.pushed_at",
            (*key, digest, now()),
        )
