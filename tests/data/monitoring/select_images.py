"""How the monitoring test images were chosen (run once, off the box, by a developer
with the project's shared training data; the tests never read that data).

    python tests/data/monitoring/select_images.py --data-root ../shared/data

- ``tests/data/cxr64/site/``: Kermany patients of the report split that no model trains
  on (``split_by_group(..., 0.15, "cxr-v1")``), drawn at random (seed 13) beside the 60
  already in ``tests/data/cxr64``, pixel-identical duplicates left out: 400 in all, at
  the report split's own share of pneumonia (a random draw, not balanced, so they look
  like the reference the model was validated on).
- ``tests/data/nih64/``: every NIH adult film of fold 0 of ``group_folds(patients, 7,
  "nih-v1")`` (the NIH report split), copied unchanged.
- ``tests/data/fundus/cameras/``: 30 IDRiD photographs (Kowa VX-10α) drawn at random
  (seed 13) and every HRF photograph (Canon CR-1), each downscaled to 512 px on its
  longest side (JPEG quality 85).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import shutil
from pathlib import Path

import cv2
import numpy as np

from models.training.data import (
    cxr_files,
    fundus_files,
    fundus_other_files,
    group_folds,
    nih_files,
    split_by_group,
)

TESTS_DATA = Path(__file__).resolve().parents[1]
CXR_TOTAL = 400
IDRID = 30
FUNDUS_PX = 512


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def children(root: Path) -> None:
    files = cxr_files(root)
    report = split_by_group(files.groups, 0.15, "cxr-v1")
    base = TESTS_DATA / "cxr64"
    have = {sha(p) for p in base.glob("*.png")}
    already = len(have)
    candidates = [
        (p, int(y), g)
        for p, y, g, r in zip(files.paths, files.labels, files.groups, report, strict=True)
        if r and not (base / p.name).exists()
    ]
    random.Random(13).shuffle(candidates)
    out = base / "site"
    out.mkdir(exist_ok=True)
    rows = []
    for path, label, group in candidates:
        if already + len(rows) >= CXR_TOTAL:
            break
        digest = sha(path)
        if digest in have:
            continue
        have.add(digest)
        shutil.copyfile(path, out / path.name)
        rows.append([path.name, label, group])
    write_csv(out / "labels.csv", ["file", "pneumonia", "patient_key"], sorted(rows))


def adults(root: Path) -> None:
    files, meta = nih_files(root)
    folds = group_folds(files.groups, 7, "nih-v1")
    out = TESTS_DATA / "nih64"
    out.mkdir(exist_ok=True)
    rows = []
    for path, row, fold in zip(files.paths, meta, folds, strict=True):
        if fold == 0:
            shutil.copyfile(path, out / path.name)
            rows.append(
                [
                    path.name,
                    row["abnormal"],
                    row["finding_labels"],
                    row["patient_id"],
                    row["age"],
                    row["sex"],
                    row["view"],
                ]
            )
    write_csv(
        out / "labels.csv",
        ["file", "abnormal", "finding_labels", "patient_id", "age", "sex", "view"],
        sorted(rows),
    )


def shrink(src: Path, dest: Path) -> None:
    image = cv2.imread(str(src))
    scale = FUNDUS_PX / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dest), small, [cv2.IMWRITE_JPEG_QUALITY, 85])


def cameras(root: Path) -> None:
    out = TESTS_DATA / "fundus" / "cameras"
    rows = []
    idrid = fundus_files(root)
    picks = sorted(random.Random(13).sample(range(len(idrid.paths)), IDRID))
    for index in picks:
        path = idrid.paths[index]
        (out / "idrid").mkdir(parents=True, exist_ok=True)
        shrink(path, out / "idrid" / path.name)
        rows.append([f"idrid/{path.name}", "Kowa VX-10alpha", int(idrid.labels[index])])
    for family, path, diagnosis in fundus_other_files(root):
        if family != "hrf":
            continue
        (out / "hrf").mkdir(parents=True, exist_ok=True)
        shrink(path, out / "hrf" / path.name)
        rows.append([f"hrf/{path.name}", "Canon CR-1", int(diagnosis == "diabetic_retinopathy")])
    write_csv(out / "labels.csv", ["file", "camera", "referable_dr"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", type=Path, required=True)
    root = parser.parse_args().data_root
    np.random.seed(0)
    children(root)
    adults(root)
    cameras(root)
