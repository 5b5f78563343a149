"""Data-mule bundles: a box's unacknowledged entries on a USB stick, signed Ed25519.

A bundle is one JSON file::

    {"format": "appliance-sync-bundle/1", "device_id": ..., "signature": base64,
     "payload": base64(gzip(JSON {"bundle_id", "device_id", "created_at", "entries"}))}

The signature covers the exact payload bytes, so any change to them (or a swapped
device id) is refused. The box signs with its own key (``appliance.sync.identity``);
the hub verifies with the public half it recorded when the box enrolled, in the text
form ``public_key_text`` gives.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.errors import MuleBundleError

FORMAT = "appliance-sync-bundle/1"


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half of a box's signing key as the hub stores it (base64, raw bytes)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def seal_bundle(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed envelope of ``body`` (which names its ``device_id``)."""
    payload = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)
    return {
        "format": FORMAT,
        "device_id": body["device_id"],
        "signature": base64.b64encode(key.sign(payload)).decode(),
        "payload": base64.b64encode(payload).decode(),
    }


def write_bundle(envelope: dict[str, Any], to: Path, bundle_id: str) -> Path:
    """Write the envelope to ``to`` (a file, or a folder to put one in), fsynced: a stick
    pulled out right after holds the whole bundle or none of it."""
    to = Path(to)
    if to.is_dir():
        to = to / f"sync-{envelope['device_id']}-{bundle_id[:8]}.bundle"
    tmp = to.with_name(to.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(envelope, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, to)
    return to


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
