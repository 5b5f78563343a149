"""The PACS sender: drains the outbox's ``pacs`` rows, by itself, after each commit.

A thread of ``appliance serve`` (``run_forever``) looks every ``pacs_interval_seconds``
for rows to send; the screening worker never waits for it (the row is written in the
result's transaction, the objects are built and sent afterwards). For each configured
PACS that is due: one association, then for each pending row the Secondary Capture and
the SR of that version, built from what the store knows now. A PACS that cannot be
reached waits (exponential backoff with full jitter, ``pacs_retry_min_seconds`` up to
``pacs_retry_max_seconds``, kept in the store so it survives a restart) and costs its
rows nothing; an object it refuses costs its row one of ``pacs_max_attempts`` tries.
Rows become ``acked`` only once the PACS answered success for every object, so a crash
at any moment means a resend, and the stable UIDs make that a no-op for the PACS.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pydicom

from appliance.config import Config
from appliance.errors import PacsRejectedError, PacsUnreachableError
from appliance.pacs import scu
from appliance.pacs.capture import build_capture
from appliance.pacs.facts import read_facts
from appliance.pacs.report import build_report
from appliance.pacs.targets import Target, from_row
from appliance.store import pacs_outbox
from appliance.store.db import Store

log = logging.getLogger(__name__)


def backoff_delay(failures: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [low/10, min(high, low * 2**(failures-1))]."""
    cap = min(high, low * (2 ** max(0, failures - 1)))
    return max(low / 10, cap * rng())


def build_objects(
    store: Store, row: dict[str, Any], target: Target, timezone_name: str = "UTC"
) -> list[pydicom.Dataset]:
    """What one row sends to one PACS, in order: the capture, then the report
    (``timezone_name``: the clinic's, whose day a retina photo's eyes are summed over)."""
    facts = read_facts(
        store, row["local_id"], int(row["payload"]["version"]), timezone_name
    )
    capture = build_capture(facts)
    report = build_report(facts, capture, with_capture="sc" in target.objects)
    return [obj for kind, obj in (("sc", capture), ("sr", report)) if kind in target.objects]


class PacsSender:
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.rng = rng
        self.clock = clock

    def send_once(self, *, ignore_backoff: bool = False) -> dict[str, int]:
        """One pass over every configured PACS that is due; never raises a PacsError."""
        report = {"sent": 0, "refused": 0, "unreachable": 0}
        now = self.clock()
        for row in pacs_outbox.targets(self.store.conn()):
            if not ignore_backoff and row["next_attempt_at"] and row["next_attempt_at"] > now:
                continue
            target = from_row(row)
            try:
                sent, refused = self._send_target(target)
            except PacsUnreachableError as exc:
                delay = backoff_delay(
                    row["failures"] + 1,
                    self.config.pacs_retry_min_seconds,
                    self.config.pacs_retry_max_seconds,
                    self.rng,
                )
                pacs_outbox.target_attempt(
                    self.store, target.address, error=str(exc), retry_at=self.clock() + delay
                )
                log.warning("pacs: %s; next try in %.1fs", exc, delay)
                report["unreachable"] += 1
                continue
            if sent or refused or row["failures"]:
                pacs_outbox.target_attempt(self.store, target.address)
            report["sent"] += sent
            report["refused"] += refused
        return report

    def _send_target(self, target: Target) -> tuple[int, int]:
        limit = self.config.pacs_max_attempts
        rows = pacs_outbox.pending_for(self.store.conn(), target.address, limit)
        if not rows:
            return 0, 0
        sent = refused = 0
        calling = self.config.dicom_aet
        with scu.association(target, calling, self.config.pacs_timeout_seconds) as assoc:
            while rows:
                for row in rows:
                    try:
                        objects = build_objects(self.store, row, target, self.config.timezone)
                    except Exception as exc:  # one row that cannot be built stops no other
                        log.exception("pacs: result %s cannot be built", row["local_id"])
                        pacs_outbox.mark_refused(self.store, row["id"], f"not built: {exc}")
                        refused += 1
                        continue
                    try:
                        for obj in objects:
                            scu.store(assoc, target, obj)
                    except PacsRejectedError as exc:
                        log.warning("pacs: result %s not stored: %s", row["local_id"], exc)
                        pacs_outbox.mark_refused(self.store, row["id"], str(exc))
                        refused += 1
                        continue
                    pacs_outbox.mark_sent(self.store, row)
                    sent += 1
                rows = [
                    r
                    for r in pacs_outbox.pending_for(self.store.conn(), target.address, limit)
                    if r["attempts"] == 0  # this pass already tried the refused ones
                ]
        if sent:
            log.info("pacs: %s results stored by %s", sent, target.address)
        return sent, refused

    def run_forever(self, stop: threading.Event) -> None:
        """The thread in ``appliance serve``."""
        while not stop.is_set():
            try:
                self.send_once()
            except Exception:  # never let the sender die silently
                log.exception("pacs: unexpected failure")
            stop.wait(self.config.pacs_interval_seconds)
