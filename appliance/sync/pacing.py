"""``sync_max_kbps``: what sync puts on the link, kept under an average rate.

One ``Pacer`` is shared by everything a sync pass sends (results, images, training
uploads: ``worker.py``) and by ``appliance training send`` run by hand
(``training_send.py``), so a training upload is paced as everything else is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from appliance.sync.client import HubClient


def bytes_moved(client: HubClient) -> int:
    """What ``client`` has sent and received so far (bytes)."""
    return client.bytes_sent + client.bytes_received


class Pacer:
    """Keeps the average rate since ``restart`` under ``limit_kbps`` (0: no limit) by
    pausing after each request: call it once a request is answered. ``counted`` says how
    many bytes went over the link so far."""

    def __init__(self, counted: Callable[[], int], limit_kbps: int) -> None:
        self.counted, self.limit_kbps = counted, limit_kbps
        self.started, self.base = time.monotonic(), 0

    def restart(self) -> None:
        """A new window (a new pass): what went before is not counted."""
        self.started, self.base = time.monotonic(), self.counted()

    def __call__(self) -> None:
        if self.limit_kbps <= 0:
            return
        due = (self.counted() - self.base) * 8 / (self.limit_kbps * 1000)
        elapsed = time.monotonic() - self.started
        if due > elapsed:
            time.sleep(due - elapsed)
