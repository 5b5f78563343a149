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
