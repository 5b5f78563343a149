"""The sync worker: drains the outbox to the hub, by itself, whenever the link allows.

One pass (``sync_once``): probe the hub, confirm what a data-mule already delivered, send
pending results then reviews in batches, then (``sync_images``) the originals in chunks,
then fetch the model bundles the hub rolled out to this box (``models.py``), then, where
the site allows it (``training_sync``), send the training exports waiting in
``DATA_DIR/training/outgoing`` (``training_send.py``): last, and stopped as soon as a new
result waits, so that a big upload never holds back a patient's result. Everything a pass
sends is paced to ``sync_max_kbps`` together (``pacing.py``).
Each request that fails for a transient reason is retried with exponential backoff and
full jitter (a hub shedding load says when to come back: the box waits that long, which
is not a failure); a pass that still fails leaves everything pending, and ``run_forever``
tries again later (longer and longer, up to ``sync_retry_max_seconds``). Outbox rows only
change state when the hub acknowledges them, so a crash at any moment just means the
next pass resends, and the hub's idempotent upsert makes that harmless. An entry the
hub refuses as malformed (it names the field) is marked ``refused`` with the hub's
reason, never sent again (a later revision of it is), and counted on the System page.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.config import Config
from appliance.errors import (
    ApplianceError,
    HubAuthError,
    HubBusyError,
    HubCertificateError,
    HubRejectedError,
    HubUnreachableError,
    NotEnrolledError,
    SyncError,
)
from appliance.store import deliveries, outbox, sync_state
from appliance.store.db import Store, utc_now
from appliance.sync.client import HubClient
from appliance.sync.entries import wire_entry
from appliance.sync.identity import DEVICE_FILE, Identity, load_identity
from appliance.sync.models import ERROR_KEY, ModelSync
from appliance.sync.pacing import Pacer, bytes_moved

log = logging.getLogger(__name__)
T = TypeVar("T")
REQUEST_ATTEMPTS = 5
BUSY_ANSWERS = 20  # "come back in S s" answers to one request before the pass gives up
KNOWN_BATCH = 1000
# How often a box not enrolled yet looks for an enrolment made meanwhile (the command
# line in another process, or the System page): a file's existence, nothing sent.
ENROL_POLL_SECONDS = 5.0
REFUSALS_SHOWN = 5  # the latest entries the hub refused, on the System page


def backoff_delay(failures: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(high, low * 2**failures)]."""
    cap = min(high, low * (2 ** max(0, failures - 1)))
    return max(low / 10, cap * rng())


def busy_delay(retry_after: float, high: float, rng: Callable[[], float]) -> float:
    """The wait the hub asked for (never past ``high``), stretched by up to 2x at random
    so that boxes told together do not come back together."""
    return min(retry_after, high) * (1 + rng())


class SyncWorker:
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        client: HubClient | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.config = config
        self._client = client
        self._given_client = client is not None  # a test's: never replaced
        self._identity: Identity | None = None
        self.on_hub: Callable[[str], None] | None = None  # told the hub's URL once enrolled
        self.rng = rng
        self._pace = Pacer(lambda: bytes_moved(self.client()), config.sync_max_kbps)

    # -- plumbing --------------------------------------------------------------------
    def enrolled(self) -> bool:
        return self._given_client or (self.config.data_dir / DEVICE_FILE).exists()

    def hub_url(self) -> str:
        """Where this pass sends: the configured URL, else the one enrolled with."""
        identity = self._identity or load_identity(self.config.data_dir)
        return self.config.sync_hub_url or identity.hub_url

    def client(self) -> HubClient:
        if not self._given_client:
            # Read each pass: `appliance sync enrol` in another process may have
            # enrolled this box, or enrolled it again, since the last one.
            identity = load_identity(self.config.data_dir)
            if identity != self._identity:
                self._identity, self._client = identity, None
        if self._client is None:
            identity = self._identity or load_identity(self.config.data_dir)
            self._client = HubClient(
                self.hub_url(),
                identity.token,
                ca_bundle=self.config.sync_ca_bundle,
                timeout=self.config.sync_timeout_seconds,
                keep_alive=True,  # closed at the end of each pass
            )
        return self._client

    def _retry(self, call: Callable[[], T], what: str) -> T:
        """Retry a transient failure a few times, waiting longer each time (with jitter).
        A hub shedding load says when to come back: that wait is not a failure."""
        attempt = busy = 0
        while True:
            try:
                result = call()
            except HubBusyError as exc:
                busy += 1
                if busy > BUSY_ANSWERS:
                    raise
                delay = busy_delay(exc.retry_after, self.config.sync_retry_max_seconds, self.rng)
                log.info("sync: the hub is busy (%s); sending again in %.1fs", what, delay)
                time.sleep(delay)
            except HubUnreachableError as exc:
                attempt += 1
                if attempt == REQUEST_ATTEMPTS:
                    raise
                delay = backoff_delay(
                    attempt,
                    self.config.sync_retry_min_seconds,
                    self.config.sync_retry_max_seconds,
                    self.rng,
                )
                log.info("sync: %s failed (%s); retrying in %.2fs", what, exc, delay)
                time.sleep(delay)
            else:
                self._pace()  # sync_max_kbps: a pause after each answer where due
                return result

    def _set_state(self, **values: Any) -> None:
        sync_state.write(self.store, **values)

    # -- one pass --------------------------------------------------------------------
    def sync_once(self) -> dict[str, Any]:
        """Send everything pending now; raises a ``SyncError`` when the hub cannot be reached."""
        started = utc_now()
        self._set_state(last_attempt_at=started)
        report: dict[str, Any] = {
            "confirmed": 0,
            "sent": 0,
            "acked": 0,
            "refused": 0,
            "images": 0,
        }
        try:
            client = self.client()
            self._pace.restart()
            self._retry(client.ping, "probe")
            report["confirmed"] = self._confirm_exported(client)
            while True:
                batch = outbox.pending(self.store.conn(), self.config.sync_batch_size, outbox.HUB)
                if not batch:
                    break
                wire = [wire_entry(e, self.config) for e in batch]
                answer = self._retry(lambda w=wire: client.send_batch(w), "batch")
                report["sent"] += len(batch)
                report["acked"] += deliveries.mark_acked(self.store, answer.acked, outbox.HUB)
                report["refused"] += self._refused(batch, answer.refused)
                refused = {(r["id"], r["rev"]) for r in answer.refused}
                missing = {e.key for e in batch} - set(answer.acked) - refused
                if missing:  # never loop forever on something the hub will not take
                    raise HubRejectedError(f"the hub did not acknowledge {len(missing)} entries")
            if self.config.sync_images:
                report["images"] = self._send_images(client)
            report["models"] = self._sync_models(client)
            if self.config.training_sync:
                report["training"] = self._send_training(client)
        except SyncError as exc:
            failures = int(self.state().get("failures") or 0) + 1
            self._set_state(
                last_error=f"{utc_now()} {exc}", last_problem=problem(exc), failures=failures
            )
            raise
        finally:
            if self._client is not None:
                self._client.close()  # the pass's connection: idle until the next would go stale
        self._set_state(last_success_at=utc_now(), last_error=None, last_problem=None, failures=0)
        if report["acked"]:
            log.info("sync: %s entries acknowledged by the hub", report["acked"])
        if report["refused"]:
            log.warning("sync: %s entries refused by the hub (see System)", report["refused"])
        return report

    def _refused(self, batch: list[outbox.Entry], refusals: list[dict[str, Any]]) -> int:
        """Keep what the hub refused as malformed, with its reason: never sent again (a
        later revision is); the System page shows it. Only entries of this batch."""
        sent = {e.key for e in batch}
        mine = [r for r in refusals if (r["id"], r["rev"]) in sent]
        changed = deliveries.mark_refused(self.store, mine, outbox.HUB)
        for refusal in mine[:REFUSALS_SHOWN]:
            log.warning(
                "sync: the hub refused %s rev %s: %s",
                refusal["id"],
                refusal["rev"],
                str(refusal.get("message") or "")[:300],
            )
        return changed

    def _sync_models(self, client: HubClient) -> dict[str, int] | str:
        """The model step: its failure (a cut download, a full disk) is recorded and
        logged but fails no pass, since results and images went through; what was
        downloaded so far stays, and the next pass resumes it."""
        try:
            return ModelSync(self.store, self.config, client, self._retry).run()
        except (ApplianceError, OSError) as exc:
            log.warning("sync: model bundles: %s", exc)
            self._set_state(**{ERROR_KEY: f"{utc_now()} {exc}"})
            return str(exc)

    def _send_training(self, client: HubClient) -> dict[str, Any] | str:
        """The training exports waiting (``training_send.py``), as the model step: a
        failure is logged, fails no pass, and the next pass resumes where it stopped."""
        from appliance.sync.training_send import TrainingSender  # it imports this module

        def result_waiting() -> bool:  # a result goes first: the upload stops for it
            return bool(outbox.pending(self.store.conn(), 1, outbox.HUB))

        sender = TrainingSender(client, self.config, rng=self.rng, pace=self._pace,
                                stop=result_waiting, by_worker=True)  # fmt: skip
        try:
            return sender.send_all()
        except (ApplianceError, OSError) as exc:
            log.warning("sync: training exports: %s", exc)
            return str(exc)

    def _confirm_exported(self, client: HubClient) -> int:
        """Entries a data-mule carried: ask the hub which it holds instead of resending."""
        confirmed = 0
        after = 0
        while True:
            batch = outbox.pending_exported(self.store.conn(), KNOWN_BATCH, after, outbox.HUB)
            if not batch:
                return confirmed
            after = batch[-1].row_id
            keys = [e.key for e in batch]
            acked = self._retry(lambda k=keys: client.known(k), "confirm")
            confirmed += deliveries.mark_acked(self.store, acked, outbox.HUB)

    def _send_images(self, client: HubClient) -> int:
        if self.config.sync_deidentify:
            log.info("sync: images are not sent while sync_deidentify is on")
            return 0
        rows = sync_state.originals_to_send(self.store.conn())
        for row in rows:
            self._send_image(client, row)
            sync_state.mark_original_sent(self.store, row["id"])
        return len(rows)

    def _send_image(self, client: HubClient, image: dict[str, Any]) -> None:
        sha = image["sha256"]
        status = self._retry(lambda: client.image_status(sha), "image status")
        if status.get("complete"):
            return
        have = set(status.get("chunks", []))
        chunk_size = max(1, self.config.sync_image_chunk_kb) * 1024
        path = self.store.data_dir / image["stored_path"]
        size = path.stat().st_size
        count = max(1, -(-size // chunk_size))
        with open(path, "rb") as fh:
            for index in range(count):
                if index in have:
                    continue  # resumed: the hub verified this chunk already
                fh.seek(index * chunk_size)
                data = fh.read(chunk_size)
                digest = hashlib.sha256(data).hexdigest()
                self._retry(
                    lambda i=index, d=data, h=digest: client.put_chunk(sha, i, d, h), "chunk"
                )
        self._retry(lambda: client.complete_image(sha, size, count), "image complete")

    # -- forever ---------------------------------------------------------------------
    def run_forever(self, stop: threading.Event) -> None:
        """The thread in ``appliance serve``: pass after pass, backing off while it fails.
        Started on every box: until it is enrolled, it only looks every few seconds
        whether it has been (so no restart is needed after `appliance sync enrol`)."""
        failures = 0
        told = waiting = None
        while not stop.is_set():
            if not self.enrolled():
                if not waiting:
                    log.info("sync: waiting for an enrolment (`appliance sync enrol` or System)")
                    waiting = True
                stop.wait(min(ENROL_POLL_SECONDS, self.config.sync_interval_seconds))
                continue
            try:
                if self.on_hub is not None and (url := self.hub_url()) != told:
                    told = url
                    self.on_hub(url)
                self.sync_once()
                failures = 0
                delay = self.config.sync_interval_seconds
            except NotEnrolledError as exc:
                log.warning("sync: %s", exc)
                delay = max(self.config.sync_interval_seconds, 60.0)
            except SyncError as exc:
                failures += 1
                self._client = None  # re-read the identity: the box may have been re-enrolled
                delay = backoff_delay(
                    failures,
                    self.config.sync_retry_min_seconds,
                    self.config.sync_retry_max_seconds,
                    self.rng,
                )
                log.warning("sync: %s; next try in %.0fs", exc, delay)
            except Exception:  # never let the sync thread die silently
                failures += 1
                log.exception("sync: unexpected failure")
                delay = self.config.sync_retry_max_seconds
            self._set_state(next_attempt_at=time.time() + delay)
            stop.wait(delay)

    def state(self) -> dict[str, str]:
        return sync_state.read(self.store.conn())


def problem(exc: SyncError) -> str:
    """What kind of failure ``exc`` is, as one word the System page puts in plain words
    (the technical text stays in ``last_error``, the log and ``appliance sync status``)."""
    if isinstance(exc, HubBusyError):
        return "busy"
    if isinstance(exc, HubUnreachableError):
        return "unreachable"
    if isinstance(exc, HubCertificateError):
        return "certificate"
    if isinstance(exc, HubAuthError):
        return "revoked" if exc.status == 403 else "unknown_device"
    if isinstance(exc, NotEnrolledError):
        return "not_enrolled"
    if isinstance(exc, HubRejectedError):
        return "rejected"
    return "failed"


def sync_status(store: Store, config: Config) -> dict[str, Any]:
    """What the System page and ``appliance sync status`` show. The hub's URL is the
    configured one, else the one enrolled with: a box enrolled by another process (the
    command line while ``appliance serve`` runs) is not shown as "not set up"."""
    conn = store.conn()
    state = sync_state.read(conn)
    try:
        identity = load_identity(config.data_dir)
        device = {"device_id": identity.device_id, "site": identity.site}
        enrolled_url = identity.hub_url
    except NotEnrolledError:
        device = {"device_id": None, "site": None}
        enrolled_url = ""
    next_at = state.get("next_attempt_at")
    return {
        "hub_url": config.sync_hub_url or enrolled_url,
        "enrolled": device["device_id"] is not None,
        **device,
        **deliveries.counts(conn, outbox.HUB),
        "images": config.sync_images and not config.sync_deidentify,
        "images_acked": sync_state.originals_sent(conn),
        "deidentify": config.sync_deidentify,
        "last_attempt_at": state.get("last_attempt_at"),
        "last_success_at": state.get("last_success_at"),
        "last_error": state.get("last_error"),
        "failures": int(state.get("failures") or 0),
        "next_attempt_in_s": (max(0, round(float(next_at) - time.time())) if next_at else None),
        "models_error": state.get(ERROR_KEY),  # added last: --json keys keep their order
    }


def sync_overview(store: Store, config: Config) -> dict[str, Any]:
    """The System page's: ``sync_status`` and what kind the last failure was
    (``problem``; None after a success). Kept apart so that ``sync status --json``
    keeps its keys."""
    state = sync_state.read(store.conn())
    overview = sync_status(store, config)
    overview["problem"] = state.get("last_problem") if overview["last_error"] else None
    overview["last_error_at"] = (overview["last_error"] or "").split(" ", 1)[0] or None
    # What the hub refused as malformed: kept here, never sent again (deliveries.refused).
    overview["refused"] = deliveries.refused(store.conn(), REFUSALS_SHOWN, outbox.HUB)
    return overview
