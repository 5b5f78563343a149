"""The box's identity with its hub: device token and Ed25519 signing key, both 0600.

``secrets/sync_device.json`` holds the hub URL, device id, site and token the hub issued
at enrolment; ``secrets/sync_key.pem`` the private key that signs data-mule bundles (the
hub learnt the public half at enrolment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.errors import NotEnrolledError
from appliance.wire.secret_files import write_secret

DEVICE_FILE = "secrets/sync_device.json"
KEY_FILE = "secrets/sync_key.pem"


@dataclass(frozen=True)
class Identity:
    hub_url: str
    device_id: str
    site: str
    token: str


def load_identity(data_dir: Path) -> Identity:
    path = Path(data_dir) / DEVICE_FILE
    if not path.exists():
        raise NotEnrolledError(
            "this box is not enrolled with a hub: run `appliance sync enrol --hub URL --code CODE`"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    return Identity(data["hub_url"], data["device_id"], data.get("site", ""), data["token"])


def save_identity(data_dir: Path, identity: Identity) -> Path:
    path = Path(data_dir) / DEVICE_FILE
    body = {
        "hub_url": identity.hub_url,
        "device_id": identity.device_id,
        "site": identity.site,
        "token": identity.token,
    }
    write_secret(path, json.dumps(body, indent=2).encode())
    return path


def device_key(data_dir: Path) -> Ed25519PrivateKey:
    """The box's signing key, created on first use."""
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(path, pem)
    return key
