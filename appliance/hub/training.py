"""Training exports gathered at the hub (issue 27): ``appliance hub training import``.

Each export, from a stick or sent with sync (``training_api.py``), is checked whole first
by the one door every reader uses (``appliance.wire.training_verify.verify_export``:
signature, format, every field, every file's sha256, PNGs of pixels only). Then:

- **Whose key.** The first export the hub sees from a device records that device's
  public key (trust on first use); an export for the same device_id signed by another
  key is refused (a copied device id, or a box rebuilt without its key: the programme
  decides, by hand).
- **Once.** An export already imported (same export id, same signed manifest) adds
  nothing and is reported "already imported"; the same id with another manifest is
  refused.
- **Whole or nothing.** Every new image is read again from the stick, hashed, decoded
  (a PNG, 8 or 16 bits, no text chunks: pixels only) and its perceptual hash taken,
  into a staging folder; only when all of them pass are they moved into the
  content-addressed store (``DATA_DIR/training/images/<sha[:2]>/<sha>.png``) and the
  rows written in one transaction — which also records each new patient's locked-test
  split (``training_split``). A fault anywhere removes what this export placed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.hub.db import Connection, HubDatabase
from appliance.hub.records import now
from appliance.hub.training_split import record_splits
from appliance.wire.training_export import TrainingExportError
from appliance.wire.training_verify import (
    MAX_IMAGE_BYTES,
    VerifiedExport,
    verify_export,
)
from appliance.wire.training_verify import check_png as check_png_chunks

HASH_SIZE = 16  # dHash of a 17 x 16 grey thumbnail: 256 bits


def training_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "training"


def image_path(data_dir: Path, sha: str) -> Path:
    return training_dir(data_dir) / "images" / sha[:2] / f"{sha}.png"


def dhash(pixels: np.ndarray) -> str:
    """The difference hash of an image (any depth, grey or colour): 256 bits, hex.

    Each bit says whether a cell of a 17 x 16 grey thumbnail is brighter than its left
    neighbour: a re-saved, rescaled or slightly brightened copy keeps almost every bit."""
    grey = pixels
    if grey.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if grey.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        grey = cv2.cvtColor(grey, code)
    small = cv2.resize(
        grey.astype(np.float32), (HASH_SIZE + 1, HASH_SIZE), interpolation=cv2.INTER_AREA
    )
    return np.packbits(small[:, 1:] > small[:, :-1]).tobytes().hex()


def check_png(data: bytes, where: str) -> np.ndarray:
    """The pixels of a de-identified PNG (8 or 16 bits, no text chunks), else refused."""
    check_png_chunks(data, where)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise TrainingExportError(f"{where}: its pixels cannot be read")
    return pixels


def find_exports(folder: Path) -> list[Path]:
    """The exports in ``folder``: itself if it is one, else the folders in it that look
    like one (an unfinished ``.partial-`` folder included, to be refused by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingExportError(f"{folder}: not a folder")
    if (folder / "manifest.json").exists():
        return [folder]
    markers = ("manifest.json", "manifest.sig", "labels.csv", "images")
    return [
        child
        for child in sorted(folder.iterdir())
        if child.is_dir()
        and (child.name.startswith(".partial-") or any((child / m).exists() for m in markers))
    ]


def _stage_images(data_dir: Path, export: VerifiedExport, held: set[str], staging: Path):
    """Every image the hub does not hold yet, read again, checked and staged; returns
    the rows for ``training_images``."""
    staging.mkdir(parents=True, exist_ok=True)
    rows = []
    for rel, sha in sorted(export.images.items()):
        if sha in held:
            continue
        with open(export.folder / rel, "rb") as source:
            data = source.read(MAX_IMAGE_BYTES + 1)
        if hashlib.sha256(data).hexdigest() != sha:  # changed since it was checked
            raise TrainingExportError(f"{rel}: sha256 differs from the signed manifest")
        pixels = check_png(data, rel)
        with open(staging / f"{sha}.png", "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        height, width = pixels.shape[:2]
        stored = image_path(data_dir, sha)
        rows.append((sha, str(stored), len(data), width, height, dhash(pixels)))
        held.add(sha)
    return rows


def _place(staging: Path, rows: list[tuple]) -> list[Path]:
    """Move the staged images into the store; returns the files this call created."""
    placed = []
    for sha, stored, *_ in rows:
        target = Path(stored)
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = target.exists()
        os.replace(staging / f"{sha}.png", target)
        if not existed:
            placed.append(target)
    return placed


def _check_key(conn: Connection, manifest: dict[str, Any]) -> None:
    held = conn.one(
        "SELECT public_key, first_export_id FROM training_keys WHERE device_id = ?",
        (manifest["device_id"],),
    )
    if held and held["public_key"] != manifest["public_key"]:
        raise TrainingExportError(
            f"manifest.sig: signed by another key than device {manifest['device_id']}'s "
            f"(first seen with export {held['first_export_id']}): refused"
        )


def _already(conn: Connection, export: VerifiedExport) -> bool:
    held = conn.one(
        "SELECT manifest_sha256 FROM training_exports WHERE export_id = ?", (export.export_id,)
    )
    if held and held["manifest_sha256"] != export.manifest_sha256:
        raise TrainingExportError(
            f"manifest.json: export {export.export_id} was already imported with other content"
        )
    return held is not None


def _write_rows(conn: Connection, export: VerifiedExport, images: list[tuple]) -> None:
    manifest, stamp = export.manifest, now()
    conn.execute(
        "INSERT INTO training_keys (device_id, public_key, site, first_export_id, trusted_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING",
        (manifest["device_id"], manifest["public_key"], manifest["site"], export.export_id, stamp),
    )
    _check_key(conn, manifest)  # again, inside the transaction: another import may have won
    conn.execute(
        "INSERT INTO training_exports (export_id, device_id, site, created_at, model,"
        " consent_policy, manifest_sha256, images, labels, warnings, imported_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            export.export_id, manifest["device_id"], manifest["site"], manifest["created_at"],
            manifest["model"], manifest["consent_policy"], export.manifest_sha256,
            len(export.images), len(export.rows), json.dumps(manifest["warnings"]), stamp,
        ),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO training_images (sha256, stored_path, size_bytes, width, height, dhash,"
        " first_export_id, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sha256) DO NOTHING",
        [(*row, export.export_id, stamp) for row in images],
    )
    conn.executemany(
        "INSERT INTO training_labels (export_id, image_sha256, model, label, label_source,"
        " outcome_test, population, laterality, score, model_version, patient_key, site,"
        " device, taken_on) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                export.export_id, export.images[r["file"]], r["model"], int(r["label"]),
                r["label_source"], r["outcome_test"], r["population"], r["laterality"],
                r["score"], r["model_version"], r["patient_key"], r["site"], r["device"],
                r["taken_on"],
            )
            for r in export.rows
        ],
    )  # fmt: skip
    record_splits(conn, [(r["site"], r["patient_key"]) for r in export.rows])


def held_images(conn: Connection, shas: list[str]) -> set[str]:
    """Which of ``shas`` the hub holds (asked 500 at a time: a query's parameters are few)."""
    held: set[str] = set()
    for start in range(0, len(shas), 500):
        part = shas[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = conn.execute(f"SELECT sha256 FROM training_images WHERE sha256 IN ({marks})", part)
        held.update(r["sha256"] for r in rows)
    return held


def import_export(conn: Connection, data_dir: Path, folder: Path) -> dict[str, Any]:
    """Verify and keep one export; ``{"export", "images", "labels", "already"}``."""
    if folder.name.startswith(".partial-"):
        raise TrainingExportError("an unfinished export (the box stopped while writing it)")
    export = verify_export(folder)
    report = {"export": export.export_id, "images": 0, "labels": 0, "already": False}
    _check_key(conn, export.manifest)
    if _already(conn, export):
        return {**report, "already": True}
    held = held_images(conn, sorted(set(export.images.values())))
    staging = training_dir(data_dir) / f".staging-{uuid.uuid4().hex}"
    placed: list[Path] = []
    try:
        images = _stage_images(data_dir, export, held, staging)
        placed = _place(staging, images)
        with conn.transaction():
            if _already(conn, export):  # another import of it finished meanwhile
                return {**report, "already": True}
            _write_rows(conn, export, images)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**report, "images": len(images), "labels": len(export.rows)}


def import_exports(database: HubDatabase, folder: Path) -> dict[str, Any]:
    """Import every export in ``folder`` (one refused does not stop the others)."""
    exports = find_exports(folder)
    if not exports:
        raise TrainingExportError(f"{folder}: no training export here")
    report: dict[str, Any] = {
        "exports": 0, "images": 0, "labels": 0, "already_imported": [], "refused": [],
    }  # fmt: skip
    conn = database.connect()
    try:
        for path in exports:
            try:
                done = import_export(conn, database.data_dir, path)
            except TrainingExportError as exc:
                report["refused"].append({"export": path.name, "why": str(exc)})
                continue
            if done["already"]:
                report["already_imported"].append(done["export"])
                continue
            report["exports"] += 1
            report["images"] += done["images"]
            report["labels"] += done["labels"]
    finally:
        conn.close()
    return report
