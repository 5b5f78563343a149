"""The bundle format on its own: what one side seals, the other verifies, byte for byte."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.errors import MuleBundleError
from appliance.wire.bundle import (
    public_key_text,
    read_bundle,
    seal_bundle,
    verify_bundle,
    write_bundle,
)

BODY = {"bundle_id": "b" * 32, "device_id": "dev-1", "created_at": "now", "entries": [{"id": 1}]}


def test_what_the_box_seals_the_hub_opens(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = write_bundle(seal_bundle(BODY, key), tmp_path, BODY["bundle_id"])
    assert path.name == "sync-dev-1-bbbbbbbb.bundle" and not list(tmp_path.glob("*.tmp"))
    device_id, payload, signature = read_bundle(path)
    assert verify_bundle(device_id, payload, signature, public_key_text(key)) == BODY


def test_another_key_or_a_changed_byte_is_refused(tmp_path):
    key = Ed25519PrivateKey.generate()
    envelope = seal_bundle(BODY, key)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    signature = base64.b64decode(envelope["signature"])
    other = public_key_text(Ed25519PrivateKey.generate())
    with pytest.raises(MuleBundleError, match="does not verify"):
        verify_bundle("dev-1", bytes(payload), signature, other)
    payload[5] ^= 1
    with pytest.raises(MuleBundleError, match="does not verify"):
        verify_bundle("dev-1", bytes(payload), signature, public_key_text(key))


def test_a_signed_bundle_under_another_device_id_is_refused():
    key = Ed25519PrivateKey.generate()
    envelope = seal_bundle(BODY, key)
    payload = base64.b64decode(envelope["payload"])
    signature = base64.b64decode(envelope["signature"])
    with pytest.raises(MuleBundleError, match="does not match"):
        verify_bundle("dev-2", payload, signature, public_key_text(key))


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "unreadable sync bundle"),
        (json.dumps({"format": "something/1"}), "not a sync bundle"),
        (json.dumps({"format": "appliance-sync-bundle/1", "device_id": "d"}), "unreadable"),
    ],
)
def test_what_is_not_a_bundle_says_so(tmp_path, text, message):
    path = tmp_path / "x.bundle"
    path.write_text(text)
    with pytest.raises(MuleBundleError, match=message):
        read_bundle(path)
