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
from appliance.store import deliveries
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
    assert deliveries.counts(store.conn())["result_acked"] == 0

    applied = mule.apply_receipt(store, config, receipt)
    assert applied["entries"] == 120 and applied["acked"] == 120
    assert deliveries.counts(store.conn())["result_pending"] == 0
    assert mule.apply_receipt(store, config, receipt)["acked"] == 0  # again: nothing changes
    # The next bundle carries only what is new.
    make_backlog(store, 5)
    assert mule.export_bundle(store, config, stick)["entries"] == 5
    store.close()


def test_a_bundle_id_taken_by_another_box_loses_nothing(hub, tmp_path):
    """Box B signs a bundle that claims box A's bundle id and gets it imported first: the
    hub still imports A's real bundle (ids are per box), and A's receipt lists exactly
    what the hub holds, so A marks nothing acknowledged that the hub lacks."""
    import gzip

    from appliance.sync.identity import device_key
    from appliance.wire.bundle import read_bundle, seal_bundle, write_bundle

    database = hub.app.extensions["hub_database"]
    boxes = {}
    for name, size in (("a", 40), ("b", 7)):
        data_dir = tmp_path / name
        store = Store.open(data_dir)
        enrol(data_dir, hub.url, hub.enrol_code())
        config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)
        make_backlog(store, size)
        boxes[name] = (store, config)
    stick = tmp_path / "stick"
    stick.mkdir()
    store_a, config_a = boxes["a"]
    real = mule.export_bundle(store_a, config_a, stick)

    store_b, config_b = boxes["b"]
    theirs = mule.export_bundle(store_b, config_b, tmp_path)
    body = json.loads(gzip.decompress(read_bundle(theirs["path"])[1]))
    body["bundle_id"] = real["bundle_id"]  # B claims A's id, signed with B's own key
    hijack = write_bundle(seal_bundle(body, device_key(config_b.data_dir)),
                          tmp_path / "hijack.bundle", "hijack")
    assert records.import_bundle(database, hijack)["replay"] is False
    assert count(hub) == 7

    imported = records.import_bundle(database, real["path"], receipt_to=stick)
    assert imported["replay"] is False
    assert count(hub) == 47
    applied = mule.apply_receipt(store_a, config_a, imported["receipt"])
    assert applied["acked"] == 40
    assert deliveries.counts(store_a.conn())["result_pending"] == 0
    for store, _ in boxes.values():
        store.close()


def test_a_receipt_lists_only_what_the_hub_holds(hub, tmp_path):
    """A replayed import whose entries the hub no longer holds (an operator deleted a
    box's rows) must not tell the box they are safe."""

    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)
    make_backlog(store, 10)
    stick = tmp_path / "stick"
    stick.mkdir()
    report = mule.export_bundle(store, config, stick)
    database = hub.app.extensions["hub_database"]
    records.import_bundle(database, report["path"])
    conn = hub.conn()
    try:
        with conn.transaction():
            conn.execute("DELETE FROM entries WHERE entry_id IN (SELECT entry_id FROM entries"
                         " ORDER BY entry_id LIMIT 4)")
    finally:
        conn.close()
    replay = records.import_bundle(database, report["path"], receipt_to=stick)
    assert replay["replay"] is True
    assert mule.apply_receipt(store, config, replay["receipt"])["acked"] == 6
    assert deliveries.counts(store.conn())["result_pending"] == 4
    store.close()
