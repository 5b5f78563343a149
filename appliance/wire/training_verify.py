"""The one door for a training export (issue 27), used by every reader: the hub's
import (USB or sync), ``build/retrain_data.py`` and the box's own tests.

An export (written by ``appliance training export``; layout in ``training_export.py``)
is checked whole before anything of it is used:

- ``manifest.sig`` verifies ``manifest.json``'s exact bytes with the key the manifest
  names (and, where the reader knows this device's key already, that key: trust on
  first use), read within bounded sizes;
- every manifest field is there with its type, format and version, and plausible values
  (identifiers, dates, model name, consent policy, counts; no image under ``never``);
- every listed file is there, nothing unlisted is (a dot-named file that a stick's OS
  adds is left unread), and every file's sha256 is the signed one;
- each image is a PNG of 8 or 16 bits with no text or EXIF chunk (pixels only);
- every ``labels.csv`` row fits the schema (site and device are the manifest's) and
  every image has a row.

The first fault ends the check with a ``TrainingExportError`` whose message starts with
the file at fault; nothing is returned half-checked. Each reader translates that error
once at its edge (the hub's command line and API, the retrain script).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.wire.csv_safe import FORMULA_STARTS
from appliance.wire.training_export import (
    FORMAT,
    LABEL_COLUMNS,
    LABELS,
    MANIFEST,
    MANIFEST_FIELDS,
    POLICIES,
    SIGNATURE,
    VERSION,
    TrainingExportError,
)

MAX_MANIFEST_BYTES = 32 << 20  # ~100 bytes a file: far more images than one export holds
MAX_SIGNATURE_BYTES = 4096
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
CHOICES = {
    "label": ("0", "1"),
    "label_source": ("outcome", "review"),
    "population": ("adult", "child", ""),
    "laterality": ("R", "L", ""),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that carry text or metadata rather than pixels: a de-identified image has none.
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"eXIf")


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


def max_bytes(rel: str) -> int:
    """The most bytes the file ``rel`` of an export may hold."""
    return {MANIFEST: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES}.get(
        rel, MAX_LABELS_BYTES if rel == LABELS else MAX_IMAGE_BYTES
    )


def _read(folder: Path, rel: str) -> bytes:
    path, limit = folder / rel, max_bytes(rel)
    if path.is_symlink() or not path.is_file():
        listed = "" if rel in (MANIFEST, SIGNATURE) else "listed in the signed manifest but "
        raise _refuse(rel, f"{listed}missing from the export (incomplete copy?)")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _refuse(rel, f"larger than {limit >> 20} MiB")
    return data


def check_png(data: bytes, where: str) -> int:
    """A de-identified PNG's bit depth (8 or 16; no text chunks), else refused. Reads
    the chunks' headers only: decoding the pixels is the reader's business."""
    if not data.startswith(PNG_SIGNATURE):
        raise _refuse(where, "not a PNG")
    offset, depth = len(PNG_SIGNATURE), None
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IHDR" and length >= 13:
            depth = data[offset + 16]
        if kind in TEXT_CHUNKS:
            raise _refuse(where, f"carries a {kind.decode()} chunk: not de-identified pixels only")
        if kind == b"IEND":
            break
        offset += 12 + length
    if depth not in (8, 16):
        raise _refuse(where, f"a PNG of {depth} bits, not 8 or 16")
    return depth


def unescape(cell: str) -> str:
    """A cell as the box held it: csv_safe's leading apostrophe before a formula taken off."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def _text(value: Any, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or (not value and not empty):
        raise _refuse(MANIFEST, f"{field} must be text of 1 to {MAX_TEXT} characters")
    if any(ord(c) < 32 for c in value):
        raise _refuse(MANIFEST, f"{field} holds control characters")
    return value


def _check_signature(data: bytes, sig: bytes, known_key: str | None) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(MANIFEST, f"not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise _refuse(MANIFEST, "not a JSON object")
    if manifest.get("format") != FORMAT:
        raise _refuse(MANIFEST, f"format {manifest.get('format')!r}, not {FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise _refuse(MANIFEST, f"version {version!r}: this reader reads version {VERSION}")
    public = manifest.get("public_key")
    if known_key is not None and public != known_key:
        raise _refuse(SIGNATURE, "signed by another key than the one this device used before")
    try:
        raw = base64.b64decode(str(public or ""), validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise _refuse(MANIFEST, f"public_key is not an Ed25519 key ({exc})") from exc
    try:
        key.verify(base64.b64decode(sig.strip(), validate=True), data)
    except (ValueError, binascii.Error, InvalidSignature) as exc:
        raise _refuse(SIGNATURE, f"the signature does not verify {MANIFEST}: it was changed"
                      " or signed by another key") from exc  # fmt: skip
    return manifest


def _check_fields(manifest: dict[str, Any]) -> None:
    for name, kinds in MANIFEST_FIELDS.items():
        if name not in manifest:
            raise _refuse(MANIFEST, f"no field {name}")
        if not isinstance(manifest[name], kinds) or isinstance(manifest[name], bool):
            raise _refuse(MANIFEST, f"field {name} has the wrong type")
    device = _text(manifest["device_id"], "device_id")
    export_id = _text(manifest["export_id"], "export_id")
    if not IDENT.match(device) or not IDENT.match(export_id):
        raise _refuse(MANIFEST, "device_id or export_id has characters not allowed")
    if not export_id.startswith(device + "-"):
        raise _refuse(MANIFEST, f"export_id {export_id!r} is not this device's")
    _text(manifest["site"], "site")
    try:
        datetime.fromisoformat(_text(manifest["created_at"], "created_at"))
        if manifest["since"] is not None:
            date.fromisoformat(_text(manifest["since"], "since"))
    except ValueError as exc:
        raise _refuse(MANIFEST, f"created_at or since is not a date ({exc})") from exc
    if manifest["model"] is not None and not MODEL.match(manifest["model"]):
        raise _refuse(MANIFEST, f"model {manifest['model']!r} is not a model name")
    if manifest["consent_policy"] not in POLICIES:
        raise _refuse(MANIFEST, f"consent_policy must be one of {', '.join(POLICIES)}")
    if not all(isinstance(w, str) for w in manifest["warnings"]):
        raise _refuse(MANIFEST, "warnings must be a list of text")
    counts = manifest["counts"]
    if not all(
        isinstance(counts.get(k), int) and not isinstance(counts.get(k), bool) and counts[k] >= 0
        for k in ("images", "labelled", "weak")
    ):
        raise _refuse(MANIFEST, "counts must give images, labelled and weak as numbers")


def _check_files(manifest: dict[str, Any]) -> dict[str, str]:
    files = manifest["files"]
    if LABELS not in files or len(files) > MAX_FILES:
        raise _refuse(MANIFEST, f"files must list {LABELS} and the images")
    for rel, sha in files.items():
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise _refuse(MANIFEST, f"{rel!r} has no sha256")
        named = IMAGE_PATH.match(rel)
        if rel != LABELS and not named:
            raise _refuse(MANIFEST, f"{rel!r} is not a file an export holds")
        if named and named.group(1) != sha:
            raise _refuse(rel, "its name is not its sha256")
    if manifest["counts"]["images"] != len(files) - 1:
        raise _refuse(MANIFEST, f"counts.images {manifest['counts']['images']} but "
                      f"{len(files) - 1} images listed")  # fmt: skip
    if manifest["counts"]["images"] and manifest["consent_policy"] == "never":
        raise _refuse(MANIFEST, "images exported under the consent policy 'never'")
    return files


def check_manifest(
    data: bytes, sig: bytes, known_key: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The signed manifest's fields, checked, and its files (relative path -> sha256):
    all that can be checked before the files themselves are there."""
    for rel, content in ((MANIFEST, data), (SIGNATURE, sig)):
        if len(content) > max_bytes(rel):
            raise _refuse(rel, f"larger than {max_bytes(rel)} bytes")
    manifest = _check_signature(data, sig, known_key)
    _check_fields(manifest)
    return manifest, _check_files(manifest)


def _check_listing(folder: Path, files: dict[str, str]) -> None:
    """Nothing unlisted (a file a stick's OS adds, named with a dot, is left unread)."""
    expected = {MANIFEST, SIGNATURE, LABELS, "images"}
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.name not in expected or (entry.name == "images") != entry.is_dir():
            raise _refuse(entry.name, "not part of a training export: not listed in the manifest")
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
        raise _refuse(LABELS, f"unreadable ({exc})") from exc
    if header is None or tuple(header) != LABEL_COLUMNS:
        raise _refuse(LABELS, f"the header must be {','.join(LABEL_COLUMNS)}")
    rows, seen = [], set()
    for number, cells in enumerate(raw_rows, start=2):
        where = f"{LABELS} line {number}"
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
        raise _refuse(unlabelled[0], f"has no row in {LABELS}")
    return rows


def _changed(rel: str) -> TrainingExportError:
    return _refuse(rel, "changed since it was exported (sha256 differs from the signed manifest)")


def verify_export(folder: Path, known_key: str | None = None) -> VerifiedExport:
    """Check one export directory whole (see the module's docstring). ``known_key``: the
    public key (base64) the reader recorded for this device, if it has seen it before."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _refuse(str(folder), "not a folder")
    manifest_bytes = _read(folder, MANIFEST)
    manifest, files = check_manifest(manifest_bytes, _read(folder, SIGNATURE), known_key)
    _check_listing(folder, files)
    labels = _read(folder, LABELS)
    if hashlib.sha256(labels).hexdigest() != files[LABELS]:
        raise _changed(LABELS)
    images = {rel: sha for rel, sha in files.items() if rel != LABELS}
    for rel in sorted(images):
        data = _read(folder, rel)
        if hashlib.sha256(data).hexdigest() != images[rel]:
            raise _changed(rel)
        check_png(data, rel)
    rows = _check_labels(labels, manifest, images)
    return VerifiedExport(
        folder, manifest, hashlib.sha256(manifest_bytes).hexdigest(), rows, images
    )
