"""Real IDRiD photos laid out as ``appliance hub training-set`` writes a programme's set
(OUT/train and OUT/locked_test: images/<sha256>.png, labels.csv; manifest.json), for
build/retrain.py's tests. Labels from IDRiD's grades: referable = grade >= 2."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from appliance.wire.training_export import LABEL_COLUMNS
from models.training.data import DEFAULT_DATA_ROOT, split_by_group
from models.training.fundus import REPORT_FRACTION, REPORT_SALT

IDRID = DEFAULT_DATA_ROOT / "fundus" / "idrid"
MODEL = "fundus-referable-dr"
SITES = ("Clinic A", "Clinic B")


def idrid_pool() -> list[tuple[Path, int]]:
    """IDRiD photos outside the recipe's report split, with their referable label."""
    with open(IDRID / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    report = split_by_group([Path(r["file"]).stem for r in rows], REPORT_FRACTION, REPORT_SALT)
    return [(IDRID / r["file"], int(r["referable_dr"]))
            for r, held_out in zip(rows, report, strict=True) if not held_out]


def pick(per_class: int, skip: int = 0) -> list[tuple[Path, int]]:
    """``per_class`` photos of each label (after skipping ``skip`` of each), in file order."""
    pool = idrid_pool()
    chosen = []
    for label in (0, 1):
        chosen += [p for p in pool if p[1] == label][skip:skip + per_class]
    return sorted(chosen)


def write_split(folder: Path, photos: list[tuple[Path, int]], split: str,
                labels: list[int] | None = None) -> Path:
    """``folder``/images/<sha>.png and labels.csv (the hub's columns and ``split``);
    sites alternate, each photo its own patient."""
    (folder / "images").mkdir(parents=True)
    labels = [label for _, label in photos] if labels is None else labels
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow([*LABEL_COLUMNS, "split"])
        for n, ((path, _), label) in enumerate(zip(photos, labels, strict=True)):
            ok, data = cv2.imencode(".png", cv2.imread(str(path), cv2.IMREAD_COLOR))
            assert ok
            sha = hashlib.sha256(data.tobytes()).hexdigest()
            (folder / "images" / f"{sha}.png").write_bytes(data.tobytes())
            site = SITES[n % 2]
            writer.writerow([f"images/{sha}.png", int(label), "outcome", "grader", MODEL, "",
                             "R", 50.0, "1.2.0", f"{split}-{path.stem}", site,
                             f"box-{site[-1].lower()}", f"2025-0{1 + n % 3}-1{n % 10}", split])
    return folder


def training_set(root: Path, train: list[tuple[Path, int]], test: list[tuple[Path, int]],
                 *, shuffle_seed: int | None = None) -> Path:
    """A whole set as the hub writes it; ``shuffle_seed``: the training labels permuted."""
    labels = [label for _, label in train]
    if shuffle_seed is not None:
        labels = list(np.random.default_rng(shuffle_seed).permutation(labels))
    write_split(root / "train", train, "train", labels)
    write_split(root / "locked_test", test, "locked_test")
    (root / "manifest.json").write_text(json.dumps({
        "format": "appliance-training-set", "version": 1, "model": MODEL,
        "created_at": "2025-04-01T00:00:00Z", "sites": list(SITES),
        "exports": ["box-a-20250401T000000Z"],
        "dates": {"first": "2025-01-10", "last": "2025-03-19"}}), encoding="utf-8")
    return root
