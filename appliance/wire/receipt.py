"""Receipts: what the hub holds from one imported bundle, carried back on the stick.

A box that never has a link learns from a receipt which of its exported entries the
hub holds, and stops offering them::

    {"format": "appliance-sync-receipt/1", "device_id", "bundle_id", "entries": [[id, rev]],
     "mac": HMAC-SHA256 keyed with sha256(device token)}

Only the hub (which keeps that hash) and the box (which holds the token) can make one,
so a receipt found on a stick cannot make a box believe the hub holds what it does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import MuleBundleError

FORMAT = "appliance-sync-receipt/1"


def token_hash(token: str) -> str:
    """What the hub keeps of a device token (hex sha256); the receipt's MAC key."""
    return hashlib.sha256(token.encode()).hexdigest()


def _mac(token_hash_hex: str, body: dict[str, Any]) -> str:
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(bytes.fromhex(token_hash_hex), message, hashlib.sha256).hexdigest()


def write_receipt(
    to: Path,
    *,
    device_id: str,
    bundle_id: str,
    entries: list[tuple[str, int]],
    token_hash_hex: str,
) -> Path:
    """The hub's side: what it now holds from one bundle, for the stick to carry back."""
    body = {
        "format": FORMAT,
        "device_id": device_id,
        "bundle_id": bundle_id,
        "entries": [[entry_id, revision] for entry_id, revision in entries],
    }
    envelope = {**body, "mac": _mac(token_hash_hex, body)}
    to = Path(to)
    if to.is_dir():
        to = to / f"receipt-{device_id}-{bundle_id[:8]}.json"
    tmp = to.with_name(to.name + ".tmp")
    tmp.write_text(json.dumps(envelope), encoding="utf-8")
    os.replace(tmp, to)
    return to


def read_receipt(path: Path, *, device_id: str, token: str) -> tuple[str, list[tuple[str, int]]]:
    """The box's side: (bundle id, entries the hub holds) of a receipt that verifies
    against this box's token; anything else raises ``MuleBundleError``."""
    try:
        envelope = json.loads(Path(path).read_text(encoding="utf-8"))
        body = {k: envelope[k] for k in ("format", "device_id", "bundle_id", "entries")}
        given = str(envelope["mac"])
        keys = [(str(entry_id), int(revision)) for entry_id, revision in body["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MuleBundleError(f"{path}: unreadable receipt ({exc})") from exc
    if body["format"] != FORMAT:
        raise MuleBundleError(f"{path}: not a sync receipt")
    if body["device_id"] != device_id:
        raise MuleBundleError(f"{path}: a receipt for another box ({body['device_id']})")
    if not hmac.compare_digest(given, _mac(token_hash(token), body)):
        raise MuleBundleError(f"{path}: the receipt does not verify: refused")
    return str(body["bundle_id"]), keys
