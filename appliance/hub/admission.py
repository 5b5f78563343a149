"""Load shedding: when boxes queue, the ones that waited too long are told when to come back.

After an outage a programme's boxes all reconnect in the same second. The hub finishes
~100 batches a second on two cores, so 500 boxes each with a request in flight wait
seconds in the queue (Little's law), and so does everyone else: a programme manager's
dashboard, a clinic enrolling a new box. Serving them all late helps no one.

So the hub measures how long each request waited for a worker thread (gunicorn's
``gthread`` queue: ``QueueTimedWorker`` notes when a connection was queued and when a
thread took it). A device sync request (``/api/v1/…`` except enrolment) that waited more
than ``hub_shed_after_ms`` is answered at once, before any work, with
``503 Service Unavailable`` and ``Retry-After: S``; S grows with the wait, so the longer
the queue the further the boxes are spread. The box's sync worker waits that long (with
jitter, ``sync.worker``) without counting it as a failure. Nothing is lost: the box still
holds the batch and sends it again; storing is idempotent. Pages for people and
enrolment are never shed.

Only with gunicorn (``hub serve --workers N``): waitress gives the app no queue time, so
a single-process hub queues as before.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# The box's own endpoints, whose requests it repeats until acknowledged.
SHEDDABLE_PREFIX = "/api/v1/"
NEVER_SHED = ("/api/v1/enrol",)
# Retry-After: this many seconds per second waited (at least 1, at most MAX_RETRY_AFTER_S),
# times a random factor so boxes told at the same moment do not return together.
SPREAD_PER_SECOND_WAITED = 6.0
MAX_RETRY_AFTER_S = 120
DRAIN_LIMIT = 16 * 1024 * 1024  # read and drop at most this much of a shed request's body

_waits = threading.local()


def queue_wait() -> float | None:
    """Seconds the request this thread is serving waited for it (None: not measured)."""
    return getattr(_waits, "seconds", None)


def retry_after_seconds(waited: float, rng: Callable[[], float] = random.random) -> int:
    spread = waited * SPREAD_PER_SECOND_WAITED * (0.5 + rng())
    return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(spread))))


def sheddable(path: str) -> bool:
    return path.startswith(SHEDDABLE_PREFIX) and not path.startswith(NEVER_SHED)


class ShedWhenQueued:
    """WSGI middleware: answer a device request that waited past ``threshold_s`` with 503."""

    def __init__(self, app: Callable, threshold_s: float) -> None:
        self.app = app
        self.threshold_s = threshold_s

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        waited = queue_wait()
        if (
            self.threshold_s <= 0
            or waited is None
            or waited <= self.threshold_s
            or not sheddable(environ.get("PATH_INFO", ""))
        ):
            return self.app(environ, start_response)
        _drain(environ)
        seconds = retry_after_seconds(waited)
        message = f"the hub is busy: send again in {seconds} s"
        body = json.dumps({"error": {"code": "busy", "message": message}}).encode()
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(seconds)),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def _drain(environ: dict[str, Any]) -> None:
    """Read the unread body, so closing the connection does not reset it under the answer."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    left = min(length, DRAIN_LIMIT)
    while stream is not None and left > 0:
        piece = stream.read(min(left, 64 * 1024))
        if not piece:
            break
        left -= len(piece)


def worker_class() -> type:
    """gunicorn's ``ThreadWorker``, noting how long each request waited for a thread."""
    from gunicorn.workers.gthread import ThreadWorker

    class QueueTimedWorker(ThreadWorker):
        def enqueue_req(self, conn):
            conn.appliance_queued_at = time.monotonic()
            return super().enqueue_req(conn)

        def handle(self, conn):
            queued = getattr(conn, "appliance_queued_at", None)
            _waits.seconds = None if queued is None else time.monotonic() - queued
            try:
                return super().handle(conn)
            finally:
                _waits.seconds = None

    return QueueTimedWorker
