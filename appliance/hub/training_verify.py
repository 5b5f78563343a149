"""The hub's door for a box's training export (issue 27): checked whole, against the
contract, before anything of it is kept.

An export is a directory written by ``appliance training export`` on a box::

    <export id>/manifest.json    the signed manifest (format, version, device, site, key,
                                 counts, every file's sha256, warnings)
    <export id>/manifest.sig     base64 Ed25519 signature of manifest.json's exact bytes
    <export id>/labels.csv       one row per image (LABEL_COLUMNS)
    <export id>/images/<sha256>.png

``verify_export`` checks the signature with the manifest's own public key (whose key it
is, is the importer's business: trust on first use per device), the format and version,
every field of the manifest and of labels.csv, that every listed file is there and
nothing unlisted is, and every file's sha256. The first fault ends the check with a
``TrainingExportError`` naming the file; nothing is returned half-checked.

(The box's side will have its own pure check in ``appliance/wire/training_export.py``;
this one follows the same written contract and may become a call to it.)
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.errors import ApplianceError
from appliance.wire.csv_safe import FORMULA_STARTS

FORMAT = "appliance-training-export"
VERSION = 1
LABEL_COLUMNS = (
    "file", "label", "label_source", "outcome_test", "model", "population", "laterality",
    "score", "model_version", "patient_key", "site", "device", "taken_on",
)  # fmt: skip
MAX_MANIFEST_BYTES = 32 << 20  # ~100 bytes a file: far more images than one export holds
MAX_LABELS_BYTES = 64 << 20
MAX_IMAGE_BYTES = 64 << 20  # a 16-bit 4k x 4k PNG is ~32 MiB
MAX_FILES = 200_000
MAX_TEXT = 200

IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
IMAGE_PATH = re.compile(r"^images/([0-9a-f]{64})\.png$")
PATIENT_KEY = re.compile(r"^([0-9a-f]{32}|img-[0-9a-f]{16})$")
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
CONSENT = ("never", "ask", "always")
CHOICES = {
    "label": ("0", "1"),
    "label_source": ("outcome", "review"),
    "population": ("adult", "child", ""),
    "laterality": ("R", "L", ""),
}


class TrainingExportError(ApplianceError):
    """A training export is refused whole: unsigned, tampered, incomplete or malformed."""


@dataclass(frozen=True)
class VerifiedExport:
    """An export that passed every check: its manifest, label rows and image files."""

    folder: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    rows: list[dict[str, str]]
    images: dict[str, str]  # relative path -> sha256 (the file's name)

    @property
    def export_id(self) -> str:
        return self.manifest["export_id"]


def _refuse(where: str, why: str) -> TrainingExportError:
    return TrainingExportError(f"{where}: {why}")


def _read(folder: Path, rel: str, limit: int) -> bytes:
    path = folder / rel
    if path.is_symlink() or not path.is_file():
        raise _refuse(rel, "missing from the export (incomplete copy?)")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _refuse(rel, f"larger than {limit >> 20} MiB")
    return data


def file_sha256(path: Path, where: str, limit: int = MAX_IMAGE_BYTES) -> str:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            size += len(block)
            if size > limit:
                raise _refuse(where, f"larger than {limit >> 20} MiB")
            digest.update(block)
    return digest.hexdigest()


def unescape(cell: str) -> str:
    """A cell as the box held it: csv_safe's leading apostrophe before a formula taken off."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def _text(value: Any, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or (not value and not empty):
        raise _refuse("manifest.json", f"{field} must be text of 1 to {MAX_TEXT} characters")
    if any(ord(c) < 32 for c in value):
        raise _refuse("manifest.json", f"{field} holds control characters")
    return value


def _check_signature(manifest_bytes: bytes, sig_bytes: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse("manifest.json", f"not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise _refuse("manifest.json", "not a JSON object")
    if manifest.get("format") != FORMAT:
        raise _refuse("manifest.json", f"format {manifest.get('format')!r}, not {FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise _refuse("manifest.json", f"version {version!r}: this hub reads version {VERSION}")
    try:
        public = base64.b64decode(str(manifest.get("public_key", "")), validate=True)
        key = Ed25519PublicKey.from_public_bytes(public)
    except (ValueError, binascii.Error) as exc:
        raise _refuse("manifest.json", f"public_key is not an Ed25519 key ({exc})") from exc
    try:
        signature = base64.b64decode(sig_bytes.strip(), validate=True)
        key.verify(signature, manifest_bytes)
    except (ValueError, binascii.Error, InvalidSignature) as exc:
        raise _refuse("manifest.sig", "the signature does not verify manifest.json") from exc
    return manifest


def _check_manifest(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's fields; returns its files (relative path -> sha256)."""
    device = _text(manifest.get("device_id"), "device_id")
    export_id = _text(manifest.get("export_id"), "export_id")
    if not IDENT.match(device) or not IDENT.match(export_id):
        raise _refuse("manifest.json", "device_id or export_id has characters not allowed")
    if not export_id.startswith(device + "-"):
        raise _refuse("manifest.json", f"export_id {export_id!r} is not this device's")
    _text(manifest.get("site"), "site")
    try:
        datetime.fromisoformat(_text(manifest.get("created_at"), "created_at"))
        if manifest.get("since") is not None:
            date.fromisoformat(_text(manifest["since"], "since"))
    except ValueError as exc:
        raise _refuse("manifest.json", f"created_at or since is not a date ({exc})") from exc
    if manifest.get("model") is not None and not MODEL.match(str(manifest["model"])):
        raise _refuse("manifest.json", f"model {manifest['model']!r} is not a model name")
    if manifest.get("consent_policy") not in CONSENT:
        raise _refuse("manifest.json", f"consent_policy must be one of {', '.join(CONSENT)}")
    warnings = manifest.get("warnings")
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise _refuse("manifest.json", "warnings must be a list of text")
    counts = manifest.get("counts")
    if not isinstance(counts, dict) or not all(
        isinstance(counts.get(k), int) and not isinstance(counts.get(k), bool) and counts[k] >= 0
        for k in ("images", "labelled", "weak")
    ):
        raise _refuse("manifest.json", "counts must give images, labelled and weak as numbers")
    files = manifest.get("files")
    if not isinstance(files, dict) or "labels.csv" not in files or len(files) > MAX_FILES:
        raise _refuse("manifest.json", "files must list labels.csv and the images")
    for rel, sha in files.items():
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise _refuse("manifest.json", f"{rel!r} has no sha256")
        named = IMAGE_PATH.match(rel)
        if rel != "labels.csv" and not named:
            raise _refuse("manifest.json", f"{rel!r} is not a file an export holds")
        if named and named.group(1) != sha:
            raise _refuse(rel, "its name is not its sha256")
    if counts["images"] != len(files) - 1:
        raise _refuse("manifest.json", f"counts.images {counts['images']} but "
                      f"{len(files) - 1} images listed")  # fmt: skip
    if counts["images"] and manifest["consent_policy"] == "never":
        raise _refuse("manifest.json", "images exported under the consent policy 'never'")
    return files


def _check_listing(folder: Path, files: dict[str, str]) -> None:
    """Nothing unlisted (a file a stick's OS adds, named with a dot, is left unread)."""
    expected = {"manifest.json", "manifest.sig", "labels.csv", "images"}
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.name not in expected or (entry.name == "images") != entry.is_dir():
            raise _refuse(entry.name, "not part of a training export")
    images = folder / "images"
    for entry in images.iterdir() if images.is_dir() else ():
        rel = f"images/{entry.name}"
        if not entry.name.startswith(".") and rel not in files:
            raise _refuse(rel, "not listed in the signed manifest")


def _check_row(row: dict[str, str], manifest: dict[str, Any], where: str) -> None:
    for field, allowed in CHOICES.items():
        if row[field] not in allowed:
            raise _refuse(where, f"{field} {row[field]!r} is not one of {allowed}")
    if not MODEL.match(row["model"]) or (manifest["model"] not in (None, row["model"])):
        raise _refuse(where, f"model {row['model']!r} is not a model name of this export")
    if not PATIENT_KEY.match(row["patient_key"]):
        raise _refuse(where, "patient_key is not a salted key")
    if row["site"] != manifest["site"] or row["device"] != manifest["device_id"]:
        raise _refuse(where, "site or device differs from the manifest's")
    try:
        if not DAY.match(row["taken_on"]):
            raise ValueError(row["taken_on"])
        date.fromisoformat(row["taken_on"])
        if row["score"] and not 0 <= float(row["score"]) <= 100:
            raise ValueError(f"score {row['score']}")
    except ValueError as exc:
        raise _refuse(where, f"taken_on or score is not valid ({exc})") from exc
    for field in ("outcome_test", "model_version"):
        if len(row[field]) > MAX_TEXT or any(ord(c) < 32 for c in row[field]):
            raise _refuse(where, f"{field} is too long or holds control characters")


def _check_labels(data: bytes, manifest: dict[str, Any], images: dict[str, str]) -> list:
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        raw_rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _refuse("labels.csv", f"unreadable ({exc})") from exc
    if header is None or tuple(header) != LABEL_COLUMNS:
        raise _refuse("labels.csv", f"the header must be {','.join(LABEL_COLUMNS)}")
    rows, seen = [], set()
    for number, cells in enumerate(raw_rows, start=2):
        where = f"labels.csv line {number}"
        if len(cells) != len(LABEL_COLUMNS):
            raise _refuse(where, f"{len(cells)} cells, not {len(LABEL_COLUMNS)}")
        row = dict(zip(LABEL_COLUMNS, (unescape(c) for c in cells), strict=True))
        if row["file"] not in images:
            raise _refuse(where, f"{row['file']!r} is not an image of the export")
        if (row["file"], row["model"]) in seen:
            raise _refuse(where, f"{row['file']} appears twice for {row['model']}")
        seen.add((row["file"], row["model"]))
        _check_row(row, manifest, where)
        rows.append(row)
    unlabelled = sorted(set(images) - {file for file, _ in seen})
    if unlabelled:
        raise _refuse(unlabelled[0], "has no row in labels.csv")
    return rows


def verify_export(folder: Path) -> VerifiedExport:
    """Check one export directory whole (see the module's docstring)."""
    folder = Path(folder)
    manifest_bytes = _read(folder, "manifest.json", MAX_MANIFEST_BYTES)
    manifest = _check_signature(manifest_bytes, _read(folder, "manifest.sig", 4096))
    files = _check_manifest(manifest)
    _check_listing(folder, files)
    labels = _read(folder, "labels.csv", MAX_LABELS_BYTES)
    if hashlib.sha256(labels).hexdigest() != files["labels.csv"]:
        raise _refuse("labels.csv", "sha256 differs from the signed manifest")
    images = {rel: sha for rel, sha in files.items() if rel != "labels.csv"}
    for rel in sorted(images):
        path = folder / rel
        if path.is_symlink() or not path.is_file():
            raise _refuse(rel, "missing from the export (incomplete copy?)")
        if file_sha256(path, rel) != images[rel]:
            raise _refuse(rel, "sha256 differs from the signed manifest (changed or damaged)")
    rows = _check_labels(labels, manifest, images)
    return VerifiedExport(
        folder, manifest, hashlib.sha256(manifest_bytes).hexdigest(), rows, images
    )
