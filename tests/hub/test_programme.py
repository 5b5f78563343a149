"""The hub's programme view, fed by a real box through the real sync: outcomes and the
monitoring summary travel through the outbox like reviews, idempotently; the dashboard
shows, per site, positivity and refusal week by week, the threshold in force,
calibration status and alarms. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import shutil

import pytest
from monitoring import sets
from sync.synckit import FAST_RETRIES, HubThread, enrol

from appliance.config import load_config
from appliance.hub import records
from appliance.ingest.importer import Importer
from appliance.monitoring import calibration, monitor, outcome_import
from appliance.screening.models import CXR
from appliance.screening.pipeline import Screener
from appliance.store.db import Store
from appliance.sync.worker import SyncWorker
from appliance.worker import Worker


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    conn = server.conn()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
    finally:
        conn.close()
    yield server
    server.close()


def dashboard(hub) -> str:
    client = hub.app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    return re.sub(r"\s+", " ", client.get("/").get_data(as_text=True))


def entries(hub, kind: str) -> list[dict]:
    conn = hub.conn()
    try:
        return conn.execute("SELECT * FROM entries WHERE kind = ?", (kind,))
    finally:
        conn.close()


def test_a_box_sends_outcomes_and_its_summary_and_the_hub_shows_the_programme(
    tmp_path, hub, models
):
    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code("Ndola"))
    config = load_config(
        data_dir,
        environ={},
        usb_roots=[],
        chest_population="child",
        calibration_min_positives=5,
        calibration_min_negatives=5,
        # A reserve of 70 % of the free disk: the box still stores images, and it warns
        # that the disk is nearly full (under twice the reserve): an alarm to send.
        min_free_mb=int(shutil.disk_usage(tmp_path).free // 2**20 * 0.7),
        **FAST_RETRIES,
    )
    children = sets.children()[::10]  # 40, normal and pneumonia
    importer = Importer(store, config)
    for item in children:
        importer.import_path(item.path, source="usb")
    Worker(store, config, Screener(models, config), name="t").drain()
    register = "original_name,test,result,date\n" + "".join(
        f"{i.name},radiologist,{'positive' if i.positive else 'negative'},2024-05-02\n"
        for i in children
    )
    imported = outcome_import.import_csv(
        store, register, entered_by="lab", source="csv", match_days=14
    )
    assert imported.ok and imported.imported == 40
    report = calibration.calibrate(store, config, CXR, 0.9)
    applied = calibration.apply(store, config, report, "admin")
    assert monitor.queue_summary(store, monitor.report(store, config))

    worker = SyncWorker(store, config)
    sent = worker.sync_once()
    assert sent["sent"] == sent["acked"] == 40 + 40 + 1  # results, outcomes, the summary
    [summary] = entries(hub, "monitor")
    assert summary["revision"] == 1 and summary["image_sha256"] is None
    held = entries(hub, "outcome")
    assert len(held) == 40 and all(e["image_sha256"] for e in held)

    # A resend changes nothing; a newer summary replaces the older one.
    assert worker.sync_once()["sent"] == 0
    assert monitor.queue_summary(store, monitor.report(store, config), force=True)
    worker.sync_once()
    assert [e["revision"] for e in entries(hub, "monitor")] == [2]
    assert len(entries(hub, "outcome")) == 40

    page = dashboard(hub)
    n_pos = sum(i.positive for i in children)
    assert f"<td>Ndola</td><td>{config.site_name}" not in page  # box name, not site name
    row = re.search(
        r"<tr><td><a [^>]*>Ndola · [^<]*</a></td><td>cxr-pneumonia [^<]*</td>(.*?)</tr>", page
    )
    assert row, page
    assert f"{applied['new']:.3f} (calibrated" in row.group(1)
    assert f"<td>{n_pos} / {40 - n_pos}</td>" in row.group(1)
    assert "The disk is nearly full" in page  # the box's alarm, at the hub
    flagged = sum(
        r for (r,) in store.conn().execute("SELECT triage IN ('urgent', 'review') FROM results")
    )
    # the chest films' positivity (never mixed with retina photos'), no image refused
    assert (
        '<td><a href="/sites/Ndola">Ndola</a></td><td>1</td>' in page
        and f"<td>40</td><td>{100 * flagged / 40:.1f}%</td><td>–</td><td>0.0%</td>" in page
    )
    store.close()


def test_the_hub_refuses_a_kind_it_does_not_know(hub):
    with pytest.raises(ValueError, match="one of result, review, outcome, monitor"):
        records.validate_entries({"entries": [{"id": "x", "rev": 1, "kind": "pacs", "data": {}}]})


def test_outcomes_and_the_summary_travel_by_data_mule_and_come_back_in_the_receipt(tmp_path, hub):
    """A box that never has a link: its outcomes and its summary (an entry of no image)
    go in the bundle, the hub holds them, and the receipt acknowledges every one."""
    from monitoring.cases import confirm, scored

    from appliance.store import outbox
    from appliance.sync import mule

    data_dir = tmp_path / "box"
    store = Store.open(data_dir)
    enrol(data_dir, hub.url, hub.enrol_code())
    config = load_config(data_dir, environ={}, usb_roots=[], min_free_mb=1)
    confirm(store, scored(store, [0.9, 0.1]), [True, False])
    outbox.record_monitor(
        store.conn(),
        {"generated_at": "2026-01-05T10:00:00+00:00", "warnings": [], "calibration": {}},
    )
    stick = tmp_path / "stick"
    stick.mkdir()
    report = mule.export_bundle(store, config, stick)
    assert report["entries"] == 5  # two results, two outcomes, the summary
    database = hub.app.extensions["hub_database"]
    imported = records.import_bundle(database, report["path"], receipt_to=stick)
    assert imported["replay"] is False
    assert len(entries(hub, "outcome")) == 2 and len(entries(hub, "monitor")) == 1
    applied = mule.apply_receipt(store, config, imported["receipt"])
    assert applied["acked"] == 5
    assert outbox.all_pending(store.conn()) == []
    store.close()
