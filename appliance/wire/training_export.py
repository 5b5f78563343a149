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
export. :func:`verify_export` is the door: the signature against the manifest's own
public key (and, where the reader already knows this device, against that key: trust
on first use), the manifest's schema, every file's hash, nothing missing and nothing
unlisted. A tampered or incomplete export is refused whole, naming the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

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
IMAGE_FILE = re.compile(r"^images/[0-9a-f]{64}\.png$")
MAX_MANIFEST_BYTES = 64 << 20  # a manifest names each image once: far below this
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


# -- the door ---------------------------------------------------------------------------
def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict):
        raise TrainingExportError(f"{MANIFEST}: not a JSON object")
    for name, kinds in MANIFEST_FIELDS.items():
        if name not in manifest:
            raise TrainingExportError(f"{MANIFEST}: no field {name}")
        if not isinstance(manifest[name], kinds) or isinstance(manifest[name], bool):
            raise TrainingExportError(f"{MANIFEST}: field {name} has the wrong type")
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise TrainingExportError(
            f"{MANIFEST}: format {manifest['format']!r} version {manifest['version']!r},"
            f" expected {FORMAT!r} version {VERSION}"
        )
    if manifest["consent_policy"] not in POLICIES:
        raise TrainingExportError(f"{MANIFEST}: field consent_policy is not one of {POLICIES}")
    for name in ("images", "labelled", "weak"):
        value = manifest["counts"].get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TrainingExportError(f"{MANIFEST}: field counts.{name} is not a count")
    if not all(isinstance(w, str) for w in manifest["warnings"]):
        raise TrainingExportError(f"{MANIFEST}: field warnings must be a list of text")
    for rel, digest in manifest["files"].items():
        if rel != LABELS and not IMAGE_FILE.match(str(rel)):
            raise TrainingExportError(f"{MANIFEST}: files names {rel!r}, not an export file")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise TrainingExportError(f"{MANIFEST}: the sha256 of {rel} is not 64 hex digits")
    if LABELS not in manifest["files"]:
        raise TrainingExportError(f"{MANIFEST}: files does not list {LABELS}")


def _check_signature(data: bytes, signature: bytes, public: str, known_key: str | None) -> None:
    if known_key is not None and public != known_key:
        raise TrainingExportError(
            f"{SIGNATURE}: signed by another key than the one this device used before"
        )
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True))
        key.verify(base64.b64decode(signature.strip(), validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise TrainingExportError(
            f"{SIGNATURE}: the signature does not verify: {MANIFEST} was changed or signed"
            " by another key"
        ) from exc


def verify_export(folder: Path, known_key: str | None = None) -> dict[str, Any]:
    """The manifest of the export in ``folder`` once everything in it checks out, or
    ``TrainingExportError`` naming the first file that does not. ``known_key``: the
    public key (base64) the reader recorded for this device, if it has seen it before."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() or not (folder / SIGNATURE).is_file():
        raise TrainingExportError(f"{folder}: no {MANIFEST} and {SIGNATURE}: not an export")
    if (folder / MANIFEST).stat().st_size > MAX_MANIFEST_BYTES:
        raise TrainingExportError(f"{MANIFEST}: too large")
    data = (folder / MANIFEST).read_bytes()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingExportError(f"{MANIFEST}: not JSON ({exc})") from exc
    _check_manifest(manifest)
    _check_signature(data, (folder / SIGNATURE).read_bytes(), manifest["public_key"], known_key)
    listed = manifest["files"]
    for rel, digest in sorted(listed.items()):
        path = folder / rel
        if not path.is_file() or path.is_symlink():
            raise TrainingExportError(f"{rel}: listed in the manifest but missing")
        if sha256_file(path) != digest:
            raise TrainingExportError(f"{rel}: changed since it was exported (sha256 differs)")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    extra = sorted(present - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        raise TrainingExportError(f"{extra[0]}: not listed in the manifest")
    images = sum(1 for rel in listed if rel != LABELS)
    if images != manifest["counts"]["images"]:
        raise TrainingExportError(
            f"{MANIFEST}: counts.images says {manifest['counts']['images']}, files list {images}"
        )
    return manifest
