"""Pushing the hub's reports to a FHIR server (``hub_fhir_server_url``), with retries.

Each pass builds, for every result, the transaction Bundle that PUTs its
DiagnosticReport (Observations contained) and ImagingStudy, and sends the ones whose
content changed since the server last took them (a new revision, a review or an
outcome arrived): ``fhir_pushed`` keeps the digest of what each report's server copy
holds. PUT with our ids makes a resend an update, never a duplicate. A request that
fails for a transient reason (no connection, timeout, 429, 5xx) is retried with
exponential backoff; a pass that still fails leaves the rest for the next one. A
bearer token for the server, if it needs one, is read from
``DATA_DIR/secrets/fhir_server_token``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhir.resources.R4B.bundle import Bundle

from appliance.hub.db import Connection, HubDatabase
from appliance.hub.fhir import search
from appliance.hub.fhir.resources import diagnostic_report, imaging_study
from appliance.hub.records import now

log = logging.getLogger(__name__)
ATTEMPTS = 4
TRANSIENT = {408, 429, 500, 502, 503, 504}


class PushError(Exception):
    """The FHIR server did not take a bundle (after retries, or refused it)."""


def transaction(item: dict[str, Any]) -> Bundle:
    entry = item["entry"]
    report = diagnostic_report(entry, item["site"], item["review"], item["outcome"])
    resources = [report]
    study = imaging_study(entry["device_id"], entry["payload"], item["site"])
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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
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
        """Send every report whose content changed; raises PushError when one fails."""
        conn = self.database.connect()
        report = {"pushed": 0, "unchanged": 0}
        try:
            done = {
                (r["device_id"], r["entry_id"]): r["digest"]
                for r in conn.execute("SELECT device_id, entry_id, digest FROM fhir_pushed")
            }
            for item in search.find(conn, search.Query(count=10**9)):
                entry = item["entry"]
                bundle = transaction(item)
                body = bundle.model_dump_json(exclude_none=True)
                digest = hashlib.sha256(body.encode()).hexdigest()
                key = (entry["device_id"], entry["entry_id"])
                if done.get(key) == digest:
                    report["unchanged"] += 1
                    continue
                self.send(bundle)
                _mark_pushed(conn, key, digest)
                report["pushed"] += 1
        finally:
            conn.close()
        return report

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                pushed = self.push_once()["pushed"]
                if pushed:
                    log.info("fhir: %s reports pushed", pushed)
            except PushError as exc:
                log.warning("fhir: %s", exc)
            except Exception:  # never let the pusher die silently
                log.exception("fhir: unexpected failure")
            stop.wait(interval)


def _mark_pushed(conn: Connection, key: tuple[str, str], digest: str) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO fhir_pushed (device_id, entry_id, digest, pushed_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (device_id, entry_id) DO UPDATE SET digest = excluded.digest,"
            " pushed_at = excluded.pushed_at",
            (*key, digest, now()),
        )
