"""What one outbox entry looks like when it leaves the box (online batches and mule
bundles alike): de-identified here when ``sync_deidentify`` is on."""

from __future__ import annotations

from typing import Any

from appliance.config import Config
from appliance.store.outbox import Entry
from appliance.sync.deid import deidentify, linkage_key


def wire_entry(entry: Entry, config: Config) -> dict[str, Any]:
    data = entry.payload
    if config.sync_deidentify:
        data = deidentify(data, linkage_key(config.data_dir))
    return {"id": entry.entry_id, "rev": entry.revision, "kind": entry.kind, "data": data}
