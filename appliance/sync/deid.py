"""De-identification for sync (setting ``sync_deidentify``): applied as entries leave.

Direct identifiers (patient name, file name, free-text note) are dropped; identifiers the
programme needs for linkage (patient ID, accession number, study and SOP UIDs) become a
keyed hash (HMAC-SHA256), so the same patient links across results without the hub ever
learning who it is. The key is ``secrets/deid_key`` (0600, made on first use); give every
box of a programme the same key file to link patients across sites.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from pathlib import Path
from typing import Any

from appliance.wire.secret_files import random_secret

KEY_FILE = "secrets/deid_key"
DROPPED_IMAGE_FIELDS = ("patient_name", "original_name")
HASHED_IMAGE_FIELDS = ("patient_id", "accession_number", "study_instance_uid", "sop_instance_uid")


def linkage_key(data_dir: Path) -> bytes:
    return random_secret(Path(data_dir) / KEY_FILE)


def keyed_hash(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def deidentify(payload: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of an outbox payload with direct identifiers replaced."""
    out = copy.deepcopy(payload)
    image = out.get("image") or {}
    for name in DROPPED_IMAGE_FIELDS:
        image.pop(name, None)
    for name in HASHED_IMAGE_FIELDS:
        if image.get(name):
            image[name] = "h:" + keyed_hash(key, str(image[name]))
    if "note" in out:
        out["note"] = None  # free text may name the patient
    out["deidentified"] = True
    return out
