"""Data-mule bundles: the hub imports them once, refuses tampering, replays change nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sync.synckit import HubThread, enrol, make_backlog

from appliance.config import load_config
from appliance.errors import MuleBundleError
from appliance.hub import records
from appliance.store.db import Store
from appliance.sync import mule
from appliance.sync.worker import SyncWorker


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    yield server
    server.close()


def count(hub) -> int:
    conn = hub.conn()
    try:
        return conn.one("SELECT COUNT(*) AS n FROM entries")["n"]
    finally:
        conn.close()


def test_bundle_import_tamper_replay_and_the_box_learns_of_it(hub, tmp_path):
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)
    make_backlog(store, 300)
    report = mule.export_bundle(store, config, tmp_path)
    assert report["entries"] == 300
    bundle = tmp_path / report["path"]
    database = hub.app.extensions["hub_database"]

    envelope = json.loads(bundle.read_text())
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[len(payload) // 2] ^= 1
    tampered = tmp_path / "tampered.bundle"
    tampered.write_text(json.dumps({**envelope, "payload": base64.b64encode(payload).decode()}))
    with pytest.raises(MuleBundleError, match="signature does not verify"):
        records.import_bundle(database, tampered)
    forged = tmp_path / "forged.bundle"
    forged.write_text(json.dumps({**envelope, "device_id": "dev-someone-else"}))
    with pytest.raises(MuleBundleError, match="unknown device"):
        records.import_bundle(database, forged)
    assert count(hub) == 0

    assert records.import_bundle(database, bundle)["replay"] is False
    assert count(hub) == 300
    replay = records.import_bundle(database, bundle)
    assert (replay["bundle_id"], replay["entries"], replay["replay"]) == (
        report["bundle_id"],
        300,
        True,
    )
    assert count(hub) == 300

    # Online again: the box asks what the hub holds instead of sending it all again.
    again = SyncWorker(store, config).sync_once()
    assert again["confirmed"] == 300 and again["sent"] == 0
    assert count(hub) == 300
    store.close()


def test_a_box_that_never_has_a_link_learns_from_the_receipt(hub, tmp_path):
    """Stick to the hub with a bundle, back to the box with a receipt: no network."""
    from appliance.store import outbox

    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())  # the one contact enrolment needs
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)
    make_backlog(store, 120)
    stick = tmp_path / "stick"
    stick.mkdir()
    report = mule.export_bundle(store, config, stick)
    database = hub.app.extensions["hub_database"]
    imported = records.import_bundle(database, report["path"], receipt_to=stick)
    receipt = imported["receipt"]

    forged = tmp_path / "forged.json"
    data = json.loads(Path(receipt).read_text())
    forged.write_text(json.dumps({**data, "entries": data["entries"] + [["result:x", 1]]}))
    with pytest.raises(MuleBundleError, match="does not verify"):
        mule.apply_receipt(store, config, forged)
    assert outbox.counts(store.conn())["result_acked"] == 0

    applied = mule.apply_receipt(store, config, receipt)
    assert applied["entries"] == 120 and applied["acked"] == 120
    assert outbox.counts(store.conn())["result_pending"] == 0
    assert mule.apply_receipt(store, config, receipt)["acked"] == 0  # again: nothing changes
    # The next bundle carries only what is new.
    make_backlog(store, 5)
    assert mule.export_bundle(store, config, stick)["entries"] == 5
    store.close()
