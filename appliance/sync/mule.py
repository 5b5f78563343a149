"""Data-mule bundles: everything not yet acknowledged, on a USB stick, signed Ed25519.

A bundle is one JSON file::

    {"format": "appliance-sync-bundle/1", "device_id": ..., "signature": base64,
     "payload": base64(gzip(JSON {"bundle_id", "device_id", "created_at", "entries"}))}

The signature covers the exact payload bytes, so any change to them (or a swapped
device id) is refused. The hub verifies with the public key it recorded when the box
enrolled; the embedded entries go through the same idempotent upsert as online sync, and
the bundle id makes a replay a no-op. Exported rows stay pending on the box (marked
exported) until the hub confirms it holds them: online (``/known``) at the next link,
or, for a box that never has a link, by a *receipt* the hub writes when it imports the
bundle and the stick carries back::

    {"format": "appliance-sync-receipt/1", "device_id", "bundle_id", "entries": [[id, rev]],
     "mac": HMAC-SHA256 keyed with sha256(device token)}

Only the hub (which keeps that hash) and the box (which holds the token) can make one,
so a receipt found on a stick cannot make a box believe the hub holds what it does not.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.config import Config
from appliance.errors import MuleBundleError
from appliance.store import outbox
from appliance.store.db import Store, utc_now
from appliance.sync.entries import wire_entry
from appliance.sync.identity import device_key, load_identity

FORMAT = "appliance-sync-bundle/1"


def export_bundle(store: Store, config: Config, to: Path) -> dict[str, Any]:
    """Write every pending entry to ``to`` (a file, or a folder to put one in)."""
    identity = load_identity(config.data_dir)
    key = device_key(config.data_dir)
    entries = outbox.all_pending(store.conn())
    bundle_id = uuid.uuid4().hex
    body = {
        "bundle_id": bundle_id,
        "device_id": identity.device_id,
        "created_at": utc_now(),
        "entries": [wire_entry(e, config) for e in entries],
    }
    payload = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)
    envelope = {
        "format": FORMAT,
        "device_id": identity.device_id,
        "signature": base64.b64encode(key.sign(payload)).decode(),
        "payload": base64.b64encode(payload).decode(),
    }
    to = Path(to)
    if to.is_dir():
        to = to / f"sync-{identity.device_id}-{bundle_id[:8]}.bundle"
    tmp = to.with_name(to.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(envelope, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, to)
    outbox.mark_exported(store, [e.row_id for e in entries])
    return {"path": str(to), "bundle_id": bundle_id, "entries": len(entries)}


def read_bundle(path: Path) -> tuple[str, bytes, bytes]:
    """(device id, payload bytes, signature) of a bundle file, before any verification."""
    try:
        envelope = json.loads(Path(path).read_text(encoding="utf-8"))
        if envelope.get("format") != FORMAT:
            raise MuleBundleError(f"{path}: not a sync bundle ({envelope.get('format')!r})")
        return (
            str(envelope["device_id"]),
            base64.b64decode(envelope["payload"], validate=True),
            base64.b64decode(envelope["signature"], validate=True),
        )
    except MuleBundleError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MuleBundleError(f"{path}: unreadable sync bundle ({exc})") from exc


def verify_bundle(
    device_id: str, payload: bytes, signature: bytes, public_key: str
) -> dict[str, Any]:
    """The bundle's content once its signature verifies against the device's key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(signature, payload)
    except (InvalidSignature, ValueError) as exc:
        raise MuleBundleError("the bundle's signature does not verify: refused") from exc
    try:
        body = json.loads(gzip.decompress(payload))
    except (OSError, ValueError, EOFError) as exc:
        raise MuleBundleError(f"signed but unreadable bundle ({exc})") from exc
    if body.get("device_id") != device_id:
        raise MuleBundleError("the bundle's device does not match its signature: refused")
    return body


RECEIPT_FORMAT = "appliance-sync-receipt/1"


def _receipt_mac(token_hash_hex: str, body: dict[str, Any]) -> str:
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
        "format": RECEIPT_FORMAT,
        "device_id": device_id,
        "bundle_id": bundle_id,
        "entries": [[entry_id, revision] for entry_id, revision in entries],
    }
    envelope = {**body, "mac": _receipt_mac(token_hash_hex, body)}
    to = Path(to)
    if to.is_dir():
        to = to / f"receipt-{device_id}-{bundle_id[:8]}.json"
    tmp = to.with_name(to.name + ".tmp")
    tmp.write_text(json.dumps(envelope), encoding="utf-8")
    os.replace(tmp, to)
    return to


def apply_receipt(store: Store, config: Config, path: Path) -> dict[str, Any]:
    """The box's side: verify a receipt and mark what the hub holds as acknowledged."""
    identity = load_identity(config.data_dir)
    try:
        envelope = json.loads(Path(path).read_text(encoding="utf-8"))
        body = {k: envelope[k] for k in ("format", "device_id", "bundle_id", "entries")}
        given = str(envelope["mac"])
        keys = [(str(entry_id), int(revision)) for entry_id, revision in body["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MuleBundleError(f"{path}: unreadable receipt ({exc})") from exc
    if body["format"] != RECEIPT_FORMAT:
        raise MuleBundleError(f"{path}: not a sync receipt")
    if body["device_id"] != identity.device_id:
        raise MuleBundleError(f"{path}: a receipt for another box ({body['device_id']})")
    token_hash = hashlib.sha256(identity.token.encode()).hexdigest()
    if not hmac.compare_digest(given, _receipt_mac(token_hash, body)):
        raise MuleBundleError(f"{path}: the receipt does not verify: refused")
    acked = outbox.mark_acked(store, keys)
    return {"path": str(path), "bundle_id": body["bundle_id"], "entries": len(keys), "acked": acked}
