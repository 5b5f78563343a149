"""Receipts on their own: only the token's holder and the hub can make one that verifies."""

from __future__ import annotations

import json

import pytest

from appliance.errors import MuleBundleError
from appliance.wire.receipt import read_receipt, token_hash, write_receipt

TOKEN = "device-token"


def receipt(tmp_path, **overrides):
    fields = {
        "device_id": "dev-1",
        "bundle_id": "c" * 32,
        "entries": [("result:a", 1), ("review:b", 3)],
        "token_hash_hex": token_hash(TOKEN),
    }
    return write_receipt(tmp_path, **{**fields, **overrides})


def test_the_box_reads_what_the_hub_wrote(tmp_path):
    path = receipt(tmp_path)
    assert path.name == "receipt-dev-1-cccccccc.json"
    bundle_id, keys = read_receipt(path, device_id="dev-1", token=TOKEN)
    assert bundle_id == "c" * 32 and keys == [("result:a", 1), ("review:b", 3)]


def test_an_added_entry_another_token_or_another_box_is_refused(tmp_path):
    path = receipt(tmp_path)
    data = json.loads(path.read_text())
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**data, "entries": data["entries"] + [["result:x", 1]]}))
    with pytest.raises(MuleBundleError, match="does not verify"):
        read_receipt(forged, device_id="dev-1", token=TOKEN)
    with pytest.raises(MuleBundleError, match="does not verify"):
        read_receipt(path, device_id="dev-1", token="another-token")
    with pytest.raises(MuleBundleError, match="another box"):
        read_receipt(path, device_id="dev-2", token=TOKEN)
    unreadable = tmp_path / "half.json"
    unreadable.write_text(path.read_text()[:40])
    with pytest.raises(MuleBundleError, match="unreadable receipt"):
        read_receipt(unreadable, device_id="dev-1", token=TOKEN)
