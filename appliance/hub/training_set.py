"""The programme's training set for one model (issue 27): ``appliance hub training-set``.

From every imported export's label rows for the model:

1. **One label per image.** Where exports disagree about an image, a confirmatory
   test's outcome beats a clinician's review, and among those of the same kind the
   newest export wins (it knows the latest outcome); each image whose rows disagreed is
   counted in ``label_conflicts``.
2. **Each patient in one split.** The split recorded for the patient (site + salted
   patient key; ``training_split``) — never recomputed, so new data joins the split its
   patient already has, and a patient in the locked test stays there.
3. **Near-duplicates removed.** Two images whose perceptual hashes (dHash, 256 bits,
   taken at import) differ in at most ``MAX_HAMMING`` bits are one picture saved twice
   (re-encoded, rescaled, re-exported by another box): one is kept. Locked-test images
   are kept first, so no near-copy of a test image is ever trained on; then confirmed
   outcomes before reviews.

Writes ``OUT/train`` and ``OUT/locked_test`` (each ``images/`` and ``labels.csv``: the
export's columns and ``split``) and ``OUT/manifest.json`` (sites, exports, counts,
dates, the rules), built beside OUT and renamed into place when complete.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ApplianceError
from appliance.hub.db import Connection
from appliance.hub.records import now
from appliance.hub.training import HASH_SIZE
from appliance.hub.training_split import (
    LOCKED_TEST,
    RULE,
    RULE_ID,
    TRAIN,
    record_splits,
    recorded_splits,
)
from appliance.wire.csv_safe import safe_row
from appliance.wire.training_verify import LABEL_COLUMNS, MODEL

FORMAT = "appliance-training-set"
VERSION = 1
# Bits of 256 two images may differ in and still be one picture. On the 265 64-pixel test
# X-rays (tests/data; docs/learning.md): two different pictures differ in >= 23 bits; a
# JPEG re-save in <= 9, a rescaled and brightened copy in <= 13 (95 % in <= 8). Full-size
# photos re-saved or rescaled differ in <= 2. Better to keep a rare copy than drop a patient.
MAX_HAMMING = 12
SPLITS = (TRAIN, LOCKED_TEST)


class TrainingSetError(ApplianceError):
    """The training set cannot be written as asked (no data, an unknown model, OUT in use)."""


def _chosen_labels(conn: Connection, model: str) -> tuple[dict[str, dict], int]:
    """Each image's winning label row for ``model``, and how many images had rows that
    disagreed (outcome over review; then the newest export)."""
    rows = conn.execute(
        "SELECT l.*, e.created_at AS export_created, i.dhash, i.stored_path"
        " FROM training_labels l JOIN training_exports e ON e.export_id = l.export_id"
        " JOIN training_images i ON i.sha256 = l.image_sha256 WHERE l.model = ?",
        (model,),
    )
    by_image: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_image[row["image_sha256"]].append(row)
    chosen, conflicts = {}, 0
    for sha, candidates in by_image.items():
        if len({int(r["label"]) for r in candidates}) > 1:
            conflicts += 1
        chosen[sha] = max(
            candidates,
            key=lambda r: (
                r["label_source"] == "outcome", r["export_created"], r["taken_on"],
                r["export_id"],
            ),
        )  # fmt: skip
    return chosen, conflicts


def _without_near_duplicates(images: list[dict]) -> tuple[list[dict], int]:
    """``images`` (in order of preference) less any within MAX_HAMMING bits of one
    kept before it; and how many were removed. Compares each image with the kept ones
    at once (numpy): ~10,000 images take seconds."""
    kept: list[dict] = []
    hashes = np.zeros((len(images), HASH_SIZE * HASH_SIZE // 8), np.uint8)
    for image in images:
        mine = np.frombuffer(bytes.fromhex(image["dhash"]), np.uint8)
        if kept:
            distance = np.bitwise_count(hashes[: len(kept)] ^ mine).sum(axis=1)
            if distance.min() <= MAX_HAMMING:
                continue
        hashes[len(kept)] = mine
        kept.append(image)
    return kept, len(images) - len(kept)


def _write_split(folder: Path, images: list[dict], split: str) -> None:
    (folder / "images").mkdir(parents=True)
    with open(folder / "labels.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow([*LABEL_COLUMNS, "split"])
        for image in images:
            shutil.copyfile(image["stored_path"], folder / "images" / f"{image['sha']}.png")
            row = {**image, "file": f"images/{image['sha']}.png", "label": int(image["label"])}
            writer.writerow(safe_row([*(row[c] for c in LABEL_COLUMNS), split]))
        fh.flush()
        os.fsync(fh.fileno())


def _figures(images: list[dict]) -> dict[str, Any]:
    labels = [int(i["label"]) for i in images]
    return {
        "images": len(images),
        "positives": sum(labels),
        "negatives": len(labels) - sum(labels),
        "outcome_labels": sum(i["label_source"] == "outcome" for i in images),
        "review_labels": sum(i["label_source"] == "review" for i in images),
        "patients": len({(i["site"], i["patient_key"]) for i in images}),
    }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingSetError(f"{out}: already exists and is not empty: name a new folder")


def assemble(conn: Connection, model: str, out: Path) -> dict[str, Any]:
    """Write the programme's set for ``model`` into ``out`` (see the module docstring)."""
    if not MODEL.match(model):
        raise TrainingSetError(f"{model!r} is not a model name")
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen, conflicts = _chosen_labels(conn, model)
    if not chosen:
        raise TrainingSetError(f"no imported training images for {model}")
    splits = recorded_splits(conn)
    unseen = {(r["site"], r["patient_key"]) for r in chosen.values()} - set(splits)
    if unseen:  # imported before the split was recorded: impossible unless edited by hand
        with conn.transaction():
            record_splits(conn, unseen)
        splits = recorded_splits(conn)
    images = [
        {**row, "sha": sha, "split": splits[(row["site"], row["patient_key"])]}
        for sha, row in chosen.items()
    ]
    # Which of two near-duplicates stays: the locked test's, a confirmed outcome's, the
    # newest export's (as for a label conflict), then by sha256 (the same set every run).
    images.sort(key=lambda i: i["sha"])
    images.sort(key=lambda i: i["export_created"], reverse=True)
    images.sort(key=lambda i: (i["split"] != LOCKED_TEST, i["label_source"] != "outcome"))
    kept, removed = _without_near_duplicates(images)
    by_split = {
        s: sorted((i for i in kept if i["split"] == s), key=lambda i: i["sha"]) for s in SPLITS
    }
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "created_at": now(),
        "sites": sorted({i["site"] for i in kept}),
        "exports": sorted({i["export_id"] for i in kept}),
        "dates": {
            "first": min(i["taken_on"] for i in kept),
            "last": max(i["taken_on"] for i in kept),
        },
        "splits": {s: _figures(by_split[s]) for s in SPLITS},
        "duplicates_removed": removed,
        "label_conflicts": conflicts,
        "rules": {
            "locked_test": {"id": RULE_ID, "rule": RULE, "recorded": "per patient, once"},
            "near_duplicates": f"dHash {HASH_SIZE}x{HASH_SIZE} of the grey pixels, "
            f"Hamming distance <= {MAX_HAMMING} bits: one kept (locked test first)",
            "label_conflicts": "outcome over review; then the newest export",
        },
    }
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for split in SPLITS:
            _write_split(partial / split, by_split[split], split)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (partial / "manifest.json").write_text(text, encoding="utf-8")
        _check_out(out)
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {
        "model": model,
        "train": {k: manifest["splits"][TRAIN][k] for k in ("images", "positives")},
        "locked_test": {k: manifest["splits"][LOCKED_TEST][k] for k in ("images", "positives")},
        "duplicates_removed": removed,
        "label_conflicts": conflicts,
        "out": str(out),
    }
