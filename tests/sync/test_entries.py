"""What leaves the box: de-identified when asked, the box keeping its own copy."""

from __future__ import annotations

import json

from sync.synckit import make_backlog

from appliance.store import outbox
from appliance.sync.deid import deidentify, linkage_key
from appliance.sync.entries import wire_entry


def test_deidentification_replaces_direct_identifiers_with_a_keyed_hash(store, config):
    make_backlog(store, 2)
    first, second = outbox.pending(store.conn(), 2)
    key = linkage_key(config.data_dir)
    assert (config.data_dir / "secrets" / "deid_key").stat().st_mode & 0o777 == 0o600
    clean = deidentify(first.payload, key)
    image = clean["image"]
    assert "patient_name" not in image and "original_name" not in image
    assert image["patient_id"].startswith("h:") and "P000000" not in json.dumps(clean)
    assert deidentify(first.payload, key)["image"]["patient_id"] == image["patient_id"]
    assert deidentify(second.payload, key)["image"]["patient_id"] != image["patient_id"]
    assert first.payload["image"]["patient_name"] == "Doe^Jane0"  # the box keeps its own copy
    wire = wire_entry(first, config.with_overrides(sync_deidentify=True))
    assert wire["data"]["deidentified"] is True and "Doe^Jane0" not in json.dumps(wire)


def test_the_hub_learns_which_chest_model_and_population_scored(box, hub, models):
    """A real result from the worker reaches the hub (its upsert unchanged): the payload
    names the model and the population and how it was decided; a resend changes nothing."""
    from helpers import testdata
    from sync.synckit import hub_entries

    from appliance.ingest.importer import Importer
    from appliance.screening.pipeline import Screener
    from appliance.sync.worker import SyncWorker
    from appliance.worker import Worker

    store, config = box
    Importer(store, config).import_path(testdata("RG1_J2KI.dcm"), source="dicom")
    Worker(store, config, Screener(models, config), name="t").drain()
    worker = SyncWorker(store, config)
    assert worker.sync_once()["acked"] == 1
    conn = hub.conn()
    try:
        [entry] = hub_entries(conn)
        data = json.loads(entry["payload"])
        assert data["model"]["name"] == "cxr-adult-abnormal"  # RG1's patient: born 1940
        assert (data["population"], data["population_source"]) == ("adult", "dicom_age")
        model = conn.one("SELECT model_name FROM entries WHERE entry_id = ?", (entry["entry_id"],))
        assert model["model_name"] == "cxr-adult-abnormal"  # the dashboard's model table
        assert worker.sync_once()["sent"] == 0
        assert [e["revision"] for e in hub_entries(conn)] == [entry["revision"]]
    finally:
        conn.close()
