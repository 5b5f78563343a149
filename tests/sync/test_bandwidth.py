"""The bandwidth setting really limits what sync puts on the link (real hub, loopback)."""

from __future__ import annotations

import time

from sync.synckit import make_backlog

from appliance.sync.worker import SyncWorker


def test_sync_max_kbps_slows_the_backlog_to_the_configured_rate(box, hub):
    store, config = box
    make_backlog(store, 200)
    capped = config.with_overrides(sync_max_kbps=64, sync_batch_size=50)
    worker = SyncWorker(store, capped)
    started = time.monotonic()
    report = worker.sync_once()
    elapsed = time.monotonic() - started
    assert report["acked"] == 200
    client = worker.client()
    kilobits = (client.bytes_sent + client.bytes_received) * 8 / 1000
    # Average rate within the cap (the last request may end just before the pause).
    assert kilobits / elapsed <= 64 * 1.25, (kilobits, elapsed)
    assert elapsed >= 0.5  # the cap made it wait: uncapped this takes ~0.1 s


def test_no_cap_means_no_pause(box, hub):
    store, config = box
    make_backlog(store, 600)
    started = time.monotonic()
    assert SyncWorker(store, config.with_overrides(sync_batch_size=100)).sync_once()["acked"] == 600
    assert time.monotonic() - started < 5
