"""Modality / fitness router: chest radiograph, fundus photograph, or something else.

All real images: the Kermany radiographs and IDRiD photographs (with the same patient /
image splits as their screening models), fundus photos from other cameras, and for
"other" every decodable non-chest object in pydicom-data and pydicom's own test files
(extremity CR, CT, MR, ultrasound, secondary captures, RT dose...) plus scikit-image's
sample photographs (people, animals, a printed page, text, textures, microscopy, space).
Validation holds out whole *sources* (a DICOM family, a photograph), never crops of a
training image, and includes the full-size adult chest CR RG1 that no model trained on.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from appliance.inference.preprocess import router_preprocess
from models.training.cxr import KERMANY, augment_radiograph
from models.training.data import (
    cxr_files,
    dicom_frames01,
    fundus_files,
    read_image01,
    split_by_group,
)
from models.training.fundus import FUNDUS_SALT, FUNDUS_VAL_FRACTION, IDRID
from models.training.nets import CamNet
from models.training.recipe import Prepared
from models.training.train import TrainConfig

CHEST, FUNDUS, OTHER = 0, 1, 2
# Fundus photos from other cameras: two train the router, the rest are held out.
FUNDUS_OTHER_TRAIN = {"skimage_retina.jpg", "hrf_01_h.jpg"}
# Never "other": fundus crops among scikit-image's samples.
SKIMAGE_SKIP = {"retina.jpg", "microaneurysms.png", "lbpcascade_frontalface_opencv.xml"}
# "other" sources held out for validation (whole families / photographs).
OTHER_VAL_SOURCES = {"dicom:MR2", "dicom:US1", "dicom:CT", "dicom:liver", "dicom:OBXXXX1A",
                     "dicom:SC", "skimage:coffee", "skimage:horse", "skimage:text",
                     "skimage:brick", "skimage:moon", "skimage:ihc", "skimage:lfw-b"}
# Always trained on: the only non-chest radiograph there is.
OTHER_TRAIN_ALWAYS = {"dicom:RG3"}
STORE_SIDE = 256  # why: sources are kept at <=256 px; the router only looks at 64 px


def _shrink(img: np.ndarray, side: int = STORE_SIDE) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return img.astype(np.float32)
    return cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


def _dicom_family(stem: str) -> str:
    return re.match(r"[A-Za-z0-9-]+", stem).group(0)  # "RG3_UNCR" -> "RG3"


def other_sources(log: Any) -> list[tuple[str, np.ndarray]]:
    """(source, image) for every real non-chest, non-fundus image installed locally."""
    import pydicom.data
    import skimage

    dicom_dirs = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        dicom_dirs.append(Path(pydicom.data.get_testdata_file("RG3_UNCR.dcm")).parent)
    except Exception:  # pydicom-data absent: train on what there is  # noqa: BLE001
        log("  router: pydicom-data not installed; fewer 'other' radiographs")
    seen: set[str] = set()
    out: list[tuple[str, np.ndarray]] = []
    for folder in dicom_dirs:
        for path in sorted(folder.glob("*.dcm")):
            if path.name.startswith("RG1"):  # the chest CR: held out as a chest case
                continue
            try:
                frames = dicom_frames01(path)
            except Exception:  # noqa: BLE001 — broken/undecodable test objects are expected
                continue
            for f in frames:
                key = hashlib.sha1(np.round(_shrink(f, 32), 2).tobytes()).hexdigest()
                if key not in seen:  # why: the same pixels in many transfer syntaxes
                    seen.add(key)
                    out.append((f"dicom:{_dicom_family(path.stem)}", _shrink(f)))
    sk_dir = Path(skimage.__file__).parent / "data"
    for path in sorted([*sk_dir.glob("*.png"), *sk_dir.glob("*.jpg")]):
        if path.name in SKIMAGE_SKIP:
            continue
        out.append((f"skimage:{path.stem.split('_')[0]}", _shrink(read_image01(path))))
    faces = np.load(sk_dir / "lfw_subset.npy")  # 200 greyscale faces, 25x25
    for i, face in enumerate(faces):
        out.append((f"skimage:lfw-{'a' if i % 2 == 0 else 'b'}", face.astype(np.float32)))
    return out


def augment_any(img: np.ndarray, rng: np.random.Generator, min_area: float,
                free_orientation: bool) -> np.ndarray:
    """Random crop (aspect jitter), flips, exposure; rotations for non-anatomical images."""
    h, w = img.shape[:2]
    area = rng.uniform(min_area, 1.0)
    aspect = np.exp(rng.uniform(-0.3, 0.3))
    ch = int(np.clip(round(h * np.sqrt(area / aspect)), 2, h))
    cw = int(np.clip(round(w * np.sqrt(area * aspect)), 2, w))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if free_orientation:
        out = np.rot90(out, int(rng.integers(0, 4)))
        if out.ndim == 2 and rng.random() < 0.3:
            out = 1.0 - out
    out = np.clip(out * rng.uniform(0.8, 1.2), 0, 1) ** rng.uniform(0.7, 1.4)
    return np.ascontiguousarray(out, dtype=np.float32)


class RouterRecipe:
    name = "modality-router"
    version = "1.0.0"
    task = "3-class routing: chest radiograph / fundus photograph / other (refuse)"
    modality = "any"
    labels = ["chest_xray", "fundus_photo", "other"]
    num_outputs = 3
    input_shape = (3, 64, 64)
    preprocessing = {"function": "router_preprocess", "params": {"size": 64}}
    train_config = TrainConfig(epochs=16, batch_size=64, lr=3e-3, samples_per_epoch=3072,
                               label_smoothing=0.05)
    provenance = {
        "training_data": [
            KERMANY, IDRID,
            {"dataset": "HRF fundus database (2 of 5 healthy images; 3 held out) and "
                        "scikit-image's retina sample", "licence": "CC BY 4.0 / CC0",
             "citation": "Budai A. et al. (2013), Int J Biomed Imaging"},
            {"dataset": "pydicom-data (NEMA WG04: RG3 extremity CR, MR, US...) and pydicom "
                        "test files; scikit-image sample images", "licence":
                        "MIT / BSD-3-Clause (package licences; see each package)"},
        ],
        "validation": "held-out sources: Kermany validation patients, the adult chest CR "
                      "RG1 (pydicom-data), IDRiD validation images, 3 HRF photos, and whole "
                      "held-out 'other' families: " + ", ".join(sorted(OTHER_VAL_SOURCES)),
    }
    limitations = [
        "'Other' is learned from a few dozen real sources only; an unusual image (e.g. a "
        "photo of an X-ray film on a light box) may be routed wrongly. The appliance "
        "should also use DICOM metadata (modality, body part) where it has it.",
        "Chest radiographs in training are paediatric; adult chests were seen only in "
        "validation (RG1).",
        "Fundus photographs come from two cameras in training (Kowa, plus 2 others).",
        "The only non-chest radiograph available (RG3, an extremity) is in training, so "
        "'wrong body part' radiographs are not validated on held-out data.",
    ]
    targets = {"accuracy": 0.99}

    def build_model(self) -> nn.Module:
        return CamNet(3, widths=(16, 32, 64, 128), num_outputs=3)

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        data_root = Path(data_root)
        images: list[np.ndarray] = []
        labels: list[int] = []
        sources: list[str] = []
        is_val: list[bool] = []

        def add(img: np.ndarray, label: int, source: str, val: bool) -> None:
            images.append(img)
            labels.append(label)
            sources.append(source)
            is_val.append(val)

        cxr = cxr_files(data_root)
        for path, val in zip(cxr.paths, split_by_group(cxr.groups, 0.15, "cxr-v1"),
                             strict=True):
            add(read_image01(path), CHEST, "kermany", bool(val))
        import pydicom.data
        try:
            rg1 = dicom_frames01(Path(pydicom.data.get_testdata_file("RG1_UNCR.dcm")))
            add(_shrink(rg1[0]), CHEST, "dicom:RG1 (adult chest CR)", True)
        except Exception:  # noqa: BLE001 — pydicom-data is optional for training
            log("  router: RG1 unavailable; no adult chest in validation")
        fun = fundus_files(data_root)
        for path, val in zip(fun.paths, split_by_group(fun.groups, FUNDUS_VAL_FRACTION,
                                                       FUNDUS_SALT), strict=True):
            add(_shrink(read_image01(path)), FUNDUS, "idrid", bool(val))
        for path in sorted((data_root / "fundus" / "other").glob("*.jpg")):
            add(_shrink(read_image01(path)), FUNDUS, f"fundus-other:{path.stem}",
                path.name not in FUNDUS_OTHER_TRAIN)
        for source, img in other_sources(log):
            add(img, OTHER, source, source in OTHER_VAL_SOURCES
                and source not in OTHER_TRAIN_ALWAYS)

        y = np.array(labels)
        val = np.array(is_val)
        tr = np.flatnonzero(~val)
        # why: balance classes, and within "other" balance sources, so 200 tiny faces
        # or 700 paediatric chests do not drown out one CT family
        src = np.array(sources)
        weights = np.zeros(len(tr))
        for k in (CHEST, FUNDUS, OTHER):
            cls = y[tr] == k
            groups = np.unique(src[tr][cls]) if k == OTHER else np.array(["*"])
            for g in groups:
                sel = cls & ((src[tr] == g) if k == OTHER else True)
                weights[sel] = 1.0 / len(groups) / sel.sum()

        def make_batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
            xs = []
            for i in tr[idx]:
                img = images[i]
                if y[i] == CHEST:
                    img = augment_radiograph(img, rng)
                img = augment_any(img, rng, min_area=0.2 if y[i] == OTHER else 0.6,
                                  free_orientation=y[i] == OTHER)
                xs.append(router_preprocess(img, **self.preprocessing["params"]))
            return np.stack(xs), y[tr[idx]]

        val_idx = np.flatnonzero(val)
        val_x = np.stack([router_preprocess(images[i], **self.preprocessing["params"])
                          for i in val_idx])
        rng = np.random.default_rng(seed)
        calib = rng.choice(len(tr), size=256, replace=False, p=weights / weights.sum())
        counts = {
            "train_images": len(tr), "val_images": len(val_idx),
            "train_per_class": np.bincount(y[tr], minlength=3).tolist(),
            "val_per_class": np.bincount(y[val_idx], minlength=3).tolist(),
            "other_train_sources": int(len(np.unique(src[tr][y[tr] == OTHER]))),
            "other_val_sources": int(len(np.unique(src[val_idx][y[val_idx] == OTHER]))),
        }
        log(f"  router: {counts}")
        return Prepared(
            n_train=len(tr), make_batch=make_batch, val_x=val_x, val_y=y[val_idx],
            calibration_x=np.stack([router_preprocess(images[i], **self.preprocessing["params"])
                                    for i in tr[calib]]),
            counts=counts, sample_weights=weights,
            val_sources=[sources[i] for i in val_idx],
        )


RECIPE = RouterRecipe()
