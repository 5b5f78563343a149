"""The box's side of the data-mule: export a signed bundle, read the hub's receipt.

The formats, signing and verifying are in ``appliance.wire`` (the hub imports the same).
Exported rows stay pending on the box (marked exported) until the hub confirms it holds
them: online (``/known``) at the next link or, for a box that never has a link, by the
receipt the hub writes when it imports the bundle and the stick carries back.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.store import deliveries, outbox
from appliance.store.db import Store, utc_now
from appliance.sync.entries import wire_entry
from appliance.sync.identity import device_key, load_identity
from appliance.wire.bundle import seal_bundle, write_bundle
from appliance.wire.receipt import read_receipt


def export_bundle(store: Store, config: Config, to: Path) -> dict[str, Any]:
    """Write every pending entry to ``to`` (a file, or a folder to put one in)."""
    identity = load_identity(config.data_dir)
    entries = outbox.all_pending(store.conn(), outbox.HUB)
    bundle_id = uuid.uuid4().hex
    body = {
        "bundle_id": bundle_id,
        "device_id": identity.device_id,
        "created_at": utc_now(),
        "entries": [wire_entry(e, config) for e in entries],
    }
    path = write_bundle(seal_bundle(body, device_key(config.data_dir)), to, bundle_id)
    deliveries.mark_exported(store, [e.row_id for e in entries])
    return {"path": str(path), "bundle_id": bundle_id, "entries": len(entries)}


def apply_receipt(store: Store, config: Config, path: Path) -> dict[str, Any]:
    """Verify a receipt and mark what the hub holds as acknowledged."""
    identity = load_identity(config.data_dir)
    bundle_id, keys = read_receipt(path, device_id=identity.device_id, token=identity.token)
    acked = deliveries.mark_acked(store, keys, outbox.HUB)
    return {"path": str(path), "bundle_id": bundle_id, "entries": len(keys), "acked": acked}
