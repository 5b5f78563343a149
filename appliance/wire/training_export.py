"""A training export (issue 27): what a box writes and the hub reads, checked the same
way by both.

    <export id>/                 export id = "<device_id>-<UTC yyyymmddThhmmssZ>"
      manifest.json              UTF-8, sorted keys: format, version, export_id,
                                 device_id, site, created_at, model, since,
                                 consent_policy, public_key, counts, files, warnings
      manifest.sig               base64 Ed25519 signature of manifest.json's exact bytes
      labels.csv                 LABEL_COLUMNS, one row per image
      images/<sha256>.png        de-identified pixels only

``manifest.files`` holds every other file's sha256, so the signature covers the whole
export. Every reader checks an export with the one door, ``training_verify.verify_export``
(the hub's import by USB or sync, ``build/retrain_data.py``): a tampered, incomplete or
malformed export is refused whole, naming the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.errors import ApplianceError
from appliance.wire.secret_files import write_secret

FORMAT = "appliance-training-export"
VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
LABELS = "labels.csv"
IMAGES = "images"
LABEL_COLUMNS = (
    "file",
    "label",
    "label_source",
    "outcome_test",
    "model",
    "population",
    "laterality",
    "score",
    "model_version",
    "patient_key",
    "site",
    "device",
    "taken_on",
)
LABEL_SOURCES = ("outcome", "review")
POLICIES = ("never", "ask", "always")
# field -> the types it may have (None: null allowed)
MANIFEST_FIELDS: dict[str, tuple] = {
    "format": (str,),
    "version": (int,),
    "export_id": (str,),
    "device_id": (str,),
    "site": (str,),
    "created_at": (str,),
    "model": (str, type(None)),
    "since": (str, type(None)),
    "consent_policy": (str,),
    "public_key": (str,),
    "counts": (dict,),
    "files": (dict,),
    "warnings": (list,),
}


class TrainingExportError(ApplianceError):
    """A training export that cannot be written, or that is refused when read."""


# -- the box's export key ---------------------------------------------------------------
def export_key(path: Path) -> Ed25519PrivateKey:
    """The box's export signing key at ``path`` (PEM, 0600), made on first use."""
    path = Path(path)
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainingExportError(f"{path}: not a usable export key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TrainingExportError(f"{path}: not an Ed25519 key")
    return key


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half as base64 of its 32 raw bytes (what the manifest carries)."""
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """``manifest.sig``'s content for ``data`` (manifest.json's exact bytes)."""
    return base64.b64encode(key.sign(data))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
