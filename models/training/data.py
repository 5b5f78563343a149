"""Reading the real training images (off-box only; the appliance never reads these).

Every reader returns what the appliance's decoder hands to pre-processing: float32 in
[0, 1], greyscale HxW (MONOCHROME1 inverted) or RGB HxWx3, so the recipes can call
``appliance.inference.preprocess`` exactly as serving does.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
# why: the issue places the shared data beside the checkout; --data-root overrides it.
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"


def read_image01(path: Path) -> np.ndarray:
    """PNG/JPEG -> float32 [0,1], grey HxW or RGB HxWx3."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise OSError(f"cannot decode {path}")
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 3 and raw.shape[2] == 4:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    return raw.astype(np.float32) / scale


def dicom_frames01(path: Path, max_frames: int = 4) -> list[np.ndarray]:
    """DICOM -> up to ``max_frames`` float32 [0,1] frames (modality + VOI LUT applied,
    MONOCHROME1 inverted), the way the appliance's decoder presents them."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        return []
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(getattr(ds, "SamplesPerPixel", 1))
    if frames == 1:
        arr = arr[None]
    picks = np.linspace(0, frames - 1, min(frames, max_frames)).round().astype(int)
    out = []
    for i in sorted(set(picks.tolist())):
        frame = arr[i]
        if spp == 1:
            frame = apply_voi_lut(apply_modality_lut(frame, ds), ds, prefer_lut=True)
        frame = frame.astype(np.float64)
        lo, hi = float(frame.min()), float(frame.max())
        if hi <= lo:
            continue  # blank frame: nothing to learn from
        frame = (frame - lo) / (hi - lo)
        if spp == 1 and getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            frame = 1.0 - frame
        out.append(frame.astype(np.float32))
    return out


def split_by_group(groups: list[str], val_fraction: float, salt: str) -> np.ndarray:
    """Boolean validation mask: a group (patient) is wholly train or wholly validation.

    Hash-based, so a patient's side never depends on the order or content of the rest.
    """
    def side(g: str) -> bool:
        h = int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < val_fraction

    return np.array([side(g) for g in groups], dtype=bool)


@dataclass
class LabelledFiles:
    """Paths, labels and grouping keys read from a ``labels.csv``."""

    paths: list[Path]
    labels: np.ndarray
    groups: list[str]


def cxr_files(data_root: Path) -> LabelledFiles:
    """Kermany 64x64 set: label 1 = pneumonia; grouped by patient_key."""
    base = Path(data_root) / "cxr" / "kermany64"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return LabelledFiles([base / r["file"] for r in rows],
                         np.array([int(r["pneumonia"]) for r in rows]),
                         [r["patient_key"] for r in rows])


def fundus_files(data_root: Path) -> LabelledFiles:
    """IDRiD grading set: label 1 = referable DR (grade >= 2); one image per eye,
    grouped by image (the set does not say which images share a patient)."""
    base = Path(data_root) / "fundus" / "idrid"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return LabelledFiles([base / r["file"] for r in rows],
                         np.array([int(r["referable_dr"]) for r in rows]),
                         [Path(r["file"]).stem for r in rows])
