"""One simulated box of ``bench/hub_load.py``: what a real box's outbox holds, sent the
way the box's sync worker sends it (its ``HubClient``, batch order, retry rule)."""

from __future__ import annotations

import copy
import hashlib
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sync.synckit import make_backlog

from appliance.config import load_config
from appliance.errors import HubBusyError, HubUnreachableError, SyncError
from appliance.store import outbox
from appliance.store.db import Store
from appliance.store.reviews import add_review
from appliance.store.users import create_user, get_user
from appliance.sync.client import HubClient
from appliance.sync.entries import wire_entry
from appliance.sync.worker import BUSY_ANSWERS, REQUEST_ATTEMPTS, backoff_delay, busy_delay
from appliance.wire.bundle import public_key_text

WEEKS_BACK = 12


def template_entries(data_dir: Path, results: int, reviews: int) -> list[dict[str, Any]]:
    """A real box's pending entries, as they leave it: ``results`` results (through
    ``insert_result``) and ``reviews`` reviews of screened ones (``add_review``)."""
    store = Store.open(data_dir)
    try:
        image_ids = make_backlog(store, results)
        user = get_user(store, create_user(store, "reviewer", "123456", "clinician"))
        screened = [
            i
            for i in image_ids
            if store.conn()
            .execute("SELECT route FROM results WHERE image_id = ?", (i,))
            .fetchone()["route"]
            != "refused"
        ]
        for image_id in screened[:reviews]:
            add_review(store, image_id=image_id, user=user, verdict="agree", reasons=[], note="")
        config = load_config(data_dir, environ={})
        return [wire_entry(e, config) for e in outbox.all_pending(store.conn())]
    finally:
        store.close()


def box_entries(index: int, template: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The template with this box's own ids, image hashes and dates (12 weeks back)."""
    rng = random.Random(index)
    now = datetime.now(timezone.utc)
    shas: dict[str, str] = {}
    ids: dict[str, str] = {}
    out = []
    for entry in template:
        entry = copy.deepcopy(entry)
        data = entry["data"]
        old = data["image"]["sha256"]
        sha = shas.setdefault(old, hashlib.sha256(f"{index}:{old}".encode()).hexdigest())
        data["image"]["sha256"] = sha
        if entry["kind"] == "result":
            ids[entry["id"]] = entry["id"] = f"result:{uuid.uuid4().hex}"
            when = now - timedelta(seconds=rng.uniform(0, WEEKS_BACK * 7 * 86400))
            data["created_at"] = when.isoformat(timespec="seconds")
        else:
            entry["id"] = f"review:{sha}"
            data["result_entry"] = ids.get(data.get("result_entry"), data.get("result_entry"))
        out.append(entry)
    return out


class Box:
    def __init__(self, index: int, template: list[dict[str, Any]], args: Any) -> None:
        self.index = index
        self.entries = box_entries(index, template)
        self.batch, self.retry_min, self.retry_max = args.batch, args.retry_min, args.retry_max
        self.spread = args.spread
        self.ca_bundle = args.ca_bundle
        self.rng = random.Random(1000 + index)
        self.device_id = ""
        self.token = ""
        self.latencies_ms: list[float] = []  # requests the hub did
        self.busy_ms: list[float] = []  # requests it answered "come back in S s"
        self.first_answer_ms: float | None = None  # the first answer after the link came back
        self.transport_failures = 0
        self.errors = 0
        self.done = False
        self.client: HubClient | None = None

    def enrol(self, hub_url: str, code: str) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = public_key_text(Ed25519PrivateKey.generate())
        answer = HubClient(hub_url).enrol(code, f"box-{self.index:03d}", key)
        self.device_id, self.token = answer["device_id"], answer["token"]

    def _timed(self, call):
        """Latency from the request going on the wire (``sent_at``: after the box's JSON
        and gzip, which here would measure 500 boxes sharing one process) to its answer."""
        client = self.client
        try:
            result = call()
        except HubBusyError:  # load shedding: an answer, not an error
            self.busy_ms.append((time.perf_counter() - client.sent_at) * 1000)
            self._first(self.busy_ms[-1])
            raise
        except HubUnreachableError as exc:
            if exc.__cause__ is None:  # the hub answered, with a 5xx, 408 or 429: an error
                self.errors += 1
            else:  # no answer: the proxy dropped it, or a worker died with it
                self.transport_failures += 1
            raise
        except SyncError:
            self.errors += 1
            raise
        self.latencies_ms.append((time.perf_counter() - client.sent_at) * 1000)
        self._first(self.latencies_ms[-1])
        return result

    def _first(self, ms: float) -> None:
        if self.first_answer_ms is None:
            self.first_answer_ms = ms

    def _retry(self, call):
        """The sync worker's ``_retry``: a few tries with backoff and full jitter; the
        wait a busy hub asks for, stretched at random, without counting a failure."""
        attempt = busy = 0
        while True:
            try:
                return self._timed(call)
            except HubBusyError as exc:
                busy += 1
                if busy > BUSY_ANSWERS:
                    raise
                time.sleep(busy_delay(exc.retry_after, self.retry_max, self.rng.random))
            except HubUnreachableError:
                attempt += 1
                if attempt == REQUEST_ATTEMPTS:
                    raise
                time.sleep(backoff_delay(attempt, self.retry_min, self.retry_max, self.rng.random))

    def sync(self, hub_url: str, go: threading.Event, abort: threading.Event) -> None:
        """Passes until everything is acknowledged (``run_forever``), at most 100."""
        self.client = client = HubClient(
            hub_url, self.token, timeout=60.0, ca_bundle=self.ca_bundle, keep_alive=True
        )
        pending = list(self.entries)
        go.wait()
        if self.spread:  # the box's own backoff timer running out, not the link coming back
            time.sleep(self.rng.uniform(0, self.spread))
        for failures in range(1, 101):
            if abort.is_set():  # the hub is gone: nothing more to measure
                return
            try:
                self._retry(client.ping)
                while pending:
                    batch = pending[: self.batch]
                    acked = set(self._retry(lambda b=batch: client.send_entries(b)))
                    pending = [e for e in pending if (e["id"], e["rev"]) not in acked]
                    if any((e["id"], e["rev"]) not in acked for e in batch):
                        self.errors += 1  # the hub left some unacknowledged
                        return
                self.done = True
                client.close()  # as the sync worker does at the end of a pass
                return
            except HubUnreachableError:
                time.sleep(backoff_delay(failures, self.retry_min, self.retry_max, self.rng.random))
            except SyncError:
                return
