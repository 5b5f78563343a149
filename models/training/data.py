"""Reading the real training images (off-box only; the appliance never reads these).

Every reader returns what the appliance's decoder hands to pre-processing: float32 in
[0, 1], greyscale HxW (MONOCHROME1 inverted) or RGB HxWx3, so the recipes can call
``appliance.inference.preprocess`` exactly as serving does.
"""

from __future__ import annotations

import copy
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
    """DICOM -> up to ``max_frames`` float32 [0,1] frames, decoded by the appliance's own
    decoder (``appliance.ingest.decode``: Modality LUT, VOI LUT/window, MONOCHROME1 and
    Presentation LUT Shape), so training sees exactly what the box will see.

    The box screens the first frame of a multi-frame object; for the router's "other"
    class more frames add variety, so frames beyond the first are decoded by slicing
    the dataset the same way (one frame at a time through the same code).
    """
    import pydicom

    from appliance.ingest.decode import decode_bytes, decode_dataset

    raw = Path(path).read_bytes()
    first = decode_bytes(raw)
    out = [first.pixels] if _informative(first.pixels) else []
    frames = first.frames_total
    if frames > 1 and max_frames > 1:
        ds = pydicom.dcmread(str(path))
        picks = sorted(set(np.linspace(0, frames - 1, min(frames, max_frames)).round()
                           .astype(int).tolist()) - {0})
        for i in picks:
            frame = _single_frame(ds, i)
            if frame is not None:
                pixels = decode_dataset(frame).pixels
                if _informative(pixels):
                    out.append(pixels)
    return out


def _informative(pixels: np.ndarray) -> bool:
    return float(pixels.max()) > float(pixels.min())  # a blank frame teaches nothing


def _single_frame(ds, index: int):
    """A copy of ``ds`` holding only frame ``index`` (native pixel data only)."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    frames = int(ds.NumberOfFrames)
    per_frame = len(ds.PixelData) // frames
    one = copy.deepcopy(ds)
    one.NumberOfFrames = 1
    one.PixelData = bytes(ds.PixelData[index * per_frame:(index + 1) * per_frame])
    return one


def split_by_group(groups: list[str], val_fraction: float, salt: str) -> np.ndarray:
    """Boolean validation mask: a group (patient) is wholly train or wholly validation.

    Hash-based, so a patient's side never depends on the order or content of the rest.
    """
    def side(g: str) -> bool:
        h = int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < val_fraction

    return np.array([side(g) for g in groups], dtype=bool)


def group_folds(groups: list[str], k: int, salt: str) -> np.ndarray:
    """Fold 0..k-1 per item, a group (patient, source) wholly in one fold. Largest groups
    first, each into the fold with the fewest items so far (ties by a salted hash), so
    folds hold similar numbers of images however many each patient has."""
    uniq, counts = np.unique(np.asarray(groups), return_counts=True)
    key = [hashlib.sha256(f"{salt}:{g}".encode()).hexdigest() for g in uniq]
    sizes = np.zeros(k, dtype=int)
    fold_of: dict[str, int] = {}
    for i in sorted(range(len(uniq)), key=lambda i: (-counts[i], key[i])):
        fold = int(np.argmin(sizes))
        fold_of[uniq[i]] = fold
        sizes[fold] += counts[i]
    return np.array([fold_of[g] for g in groups], dtype=int)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sampling weights that give each class half of every batch (binary)."""
    y = np.asarray(y)
    return np.where(y == 1, 0.5 / max((y == 1).sum(), 1), 0.5 / max((y == 0).sum(), 1))


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


def nih_files(data_root: Path) -> tuple[LabelledFiles, list[dict[str, str]]]:
    """NIH ChestX-ray14 adult subset: label 1 = one or more findings; grouped by patient.
    Also returns each row (view, age, sex, finding labels) for breakdowns."""
    base = Path(data_root) / "cxr" / "nih-adult64"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (LabelledFiles([base / r["file"] for r in rows],
                          np.array([int(r["abnormal"]) for r in rows]),
                          [r["patient_id"] for r in rows]), rows)


def fundus_other_files(data_root: Path) -> list[tuple[str, Path, str]]:
    """Fundus photos from cameras IDRiD does not have: (source family, path, diagnosis).

    Families: ``hrf`` (Canon CR-1), ``chase`` (Nidek hand-held, children),
    ``wikimedia`` (scikit-image's retina and its fellow eye: one person, one family).
    Diagnosis is healthy, glaucoma or diabetic_retinopathy (HRF's own groups).
    """
    base = Path(data_root) / "fundus" / "other"
    out: list[tuple[str, Path, str]] = []
    for path in sorted(base.glob("hrf_*.jpg")):
        out.append(("hrf", path, "healthy"))
    out.append(("wikimedia", base / "skimage_retina.jpg", "healthy"))
    for manifest in sorted((base / "extra").glob("*/manifest.csv")):
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                path = manifest.parent / Path(row["file"]).name
                family = {"HRF": "hrf", "CHASE_DB1": "chase"}.get(row["source_dataset"],
                                                                  "wikimedia")
                out.append((family, path, row.get("diagnosis_group") or "healthy"))
    return out


def fundus_files(data_root: Path) -> LabelledFiles:
    """IDRiD grading set: label 1 = referable DR (grade >= 2); one image per eye,
    grouped by image (the set does not say which images share a patient)."""
    base = Path(data_root) / "fundus" / "idrid"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return LabelledFiles([base / r["file"] for r in rows],
                         np.array([int(r["referable_dr"]) for r in rows]),
                         [Path(r["file"]).stem for r in rows])
