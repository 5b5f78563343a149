"""Signed model bundles: what the programme signs and every box (and the hub) verifies.

A programme signs the exact bytes of a bundle's ``manifest.json`` with Ed25519; the
manifest carries every other file's sha256, so the signature covers the whole bundle.
The signature travels beside the bundle as ``signature.json``::

    {"format": "appliance-model-signature/1", "key_id": sha256(raw public key) hex,
     "manifest_sha256": hex, "signature": base64}

Keys: the private key is a PEM file (PKCS#8, unencrypted, kept by the programme); the
public key is one line of base64 (its 32 raw bytes), which is what ``appliance models
trust`` takes and what a box keeps in ``secrets/model_keys/<key_id>.pub``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.errors import ModelPackageError
from appliance.wire.secret_files import write_secret

FORMAT = "appliance-model-signature/1"
SIGNATURE_FILE = "signature.json"
BUNDLE_PREFIX = "bundle/"  # the bundle's files inside the signed tar
MAX_HEADER_BYTES = 1 << 20  # signature.json and manifest.json: far below this
MAX_HEAD_MEMBERS = 8  # where signature.json and manifest.json must be (pack: first two)
MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES + (64 << 10)  # the two, with their tar headers


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as one line of base64 (raw 32 bytes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public: str) -> str:
    """A public key's id: the sha256 of its raw bytes, hex."""
    return hashlib.sha256(base64.b64decode(public)).hexdigest()


def read_public(text: str) -> str:
    """A public key given as base64 text or a PEM file's text, as base64 text."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return public_text(key)
        raw = base64.b64decode(text, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
        return base64.b64encode(raw).decode()
    except ValueError as exc:
        raise ModelPackageError(f"not an Ed25519 public key ({exc})") from exc


def new_key(private_path: Path) -> str:
    """Make a programme signing key: the private PEM at ``private_path`` (0600) and
    its public text beside it (``.pub``); returns the public text."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(Path(private_path), pem)
    public = public_text(key)
    Path(str(private_path) + ".pub").write_text(public + "\n", encoding="utf-8")
    return public


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelPackageError(f"{path}: not a usable private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelPackageError(f"{path}: not an Ed25519 private key")
    return key


def sign_manifest(manifest_bytes: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "key_id": key_id(public_text(key)),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "signature": base64.b64encode(key.sign(manifest_bytes)).decode(),
    }


def verify_manifest(manifest_bytes: bytes, signature: bytes | None, trusted: dict[str, str]) -> str:
    """The signing key's id once ``signature`` (the signature file's bytes) verifies
    ``manifest_bytes`` with one of the ``trusted`` keys (key id -> public text)."""
    if signature is None:
        raise ModelPackageError("unsigned: the file has no signature.json")
    try:
        envelope = json.loads(signature)
        if envelope.get("format") != FORMAT:
            raise ValueError(f"format {envelope.get('format')!r}")
        kid = str(envelope["key_id"])
        raw_signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelPackageError(f"unreadable signature.json ({exc})") from exc
    if kid not in trusted:
        raise ModelPackageError(
            f"signed by key {kid[:16]}…, which this box does not trust"
            " (appliance models trust PUBKEY)"
        )
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(trusted[kid]))
        public.verify(raw_signature, manifest_bytes)
    except (InvalidSignature, ValueError) as exc:
        raise ModelPackageError(
            f"the signature does not verify with key {kid[:16]}…: the manifest was changed"
            " or signed by another key"
        ) from exc
    return kid


class _Limited:
    """A file that gives at most ``limit`` bytes, then refuses: what reading the start
    of an unknown file may cost, whatever its headers claim (a gzip bomb, a tar header
    announcing gigabytes of file name)."""

    def __init__(self, source, limit: int) -> None:
        self.source, self.left = source, limit

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.left:
            size = self.left + 1
        data = self.source.read(size)
        self.left -= len(data)
        if self.left < 0:
            raise ModelPackageError("not a bundle file: its first members are too large")
        return data


def signed_parts(path: Path) -> tuple[bytes, bytes | None]:
    """(manifest.json's bytes, signature.json's bytes or None) read from a signed bundle
    file, without extracting anything else: what the hub checks before it publishes a
    file, and what a USB scan reads to recognise one.

    Bounded whatever the file holds: ``pack`` writes the signature and the manifest
    first, so only the first ``MAX_HEAD_MEMBERS`` members are looked at, and at most
    ``MAX_HEAD_BYTES`` are read (and unzipped): a tar of 400,000 members or a few MB of
    gzip that unpacks to gigabytes costs a few MB and a few milliseconds.
    """
    found: dict[str, bytes] = {}
    wanted = (SIGNATURE_FILE, BUNDLE_PREFIX + "manifest.json")
    try:
        with open(path, "rb") as raw:
            zipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            packed = _Limited(raw, MAX_HEAD_BYTES + (1 << 20))
            source = _Limited(gzip.GzipFile(fileobj=packed) if zipped else packed, MAX_HEAD_BYTES)
            with tarfile.open(fileobj=source, mode="r|") as tar:
                for count, member in enumerate(tar, 1):
                    if member.name in wanted and member.isreg():
                        if member.size > MAX_HEADER_BYTES:
                            raise ModelPackageError(f"{member.name} is too large")
                        found[member.name] = tar.extractfile(member).read()
                    if len(found) == len(wanted) or count >= MAX_HEAD_MEMBERS:
                        break
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise ModelPackageError(f"not a readable bundle file ({exc})") from exc
    manifest = found.get(wanted[1])
    if manifest is None:
        raise ModelPackageError("no bundle/manifest.json among the file's first members")
    return manifest, found.get(SIGNATURE_FILE)
