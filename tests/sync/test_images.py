"""Originals follow the results (sync_images): chunked, sha256 per chunk, resumable."""

from __future__ import annotations

import hashlib
import os

from sync.synckit import make_backlog

from appliance.sync.worker import SyncWorker


def test_images_go_after_results_in_chunks_and_resume_where_they_stopped(box, hub):
    store, config = box
    [image_id] = make_backlog(store, 1)
    original = os.urandom(5000)
    sha = hashlib.sha256(original).hexdigest()
    path = config.data_dir / "images" / sha[:2] / f"{sha}.dcm"
    path.parent.mkdir(parents=True)
    path.write_bytes(original)
    with store.write() as conn:
        conn.execute(
            "UPDATE images SET sha256 = ?, stored_path = ?, size_bytes = ? WHERE id = ?",
            (sha, str(path.relative_to(config.data_dir)), len(original), image_id),
        )
    config = config.with_overrides(sync_images=True, sync_image_chunk_kb=1)
    worker = SyncWorker(store, config)
    # A first attempt stopped after chunk 0 and 1: they are not sent again.
    for index in (0, 1):
        chunk = original[index * 1024 : (index + 1) * 1024]
        worker.client().put_chunk(sha, index, chunk, hashlib.sha256(chunk).hexdigest())
    client, sent = worker.client(), []
    put_chunk = client.put_chunk
    client.put_chunk = lambda s, i, d, h: (sent.append(i), put_chunk(s, i, d, h))
    report = worker.sync_once()
    assert report == {
        "confirmed": 0,
        "sent": 1,
        "acked": 1,
        "refused": 0,
        "images": 1,
        "models": {"installed": 0, "activated": 0, "refused": 0},
    }
    assert sent == [2, 3, 4]
    device = worker.client().ping()["device_id"]
    assert (hub.data_dir / "images" / device / sha[:2] / sha).read_bytes() == original
    assert worker.sync_once()["images"] == 0  # acknowledged: never sent again
    # With de-identification on, originals (which carry the identifiers) stay on the box.
    assert SyncWorker(store, config.with_overrides(sync_deidentify=True)).sync_once()["images"] == 0
