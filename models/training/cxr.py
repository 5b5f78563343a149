"""Chest X-ray: pneumonia pattern vs normal, on the Kermany 64x64 paediatric set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from appliance.inference.preprocess import cxr_preprocess
from models.training.data import cxr_files, read_image01, split_by_group
from models.training.nets import CamNet
from models.training.recipe import Prepared
from models.training.train import TrainConfig

KERMANY = {
    "dataset": "Kermany chest X-ray (paediatric), 64x64 derivative, train split",
    "citation": "Kermany D., Zhang K., Goldbaum M. (2018), Labeled Optical Coherence "
                "Tomography (OCT) and Chest X-Ray Images for Classification, Mendeley Data "
                "V2, doi:10.17632/rscbjbr9sj.2",
    "licence": "CC BY 4.0",
}


def augment_radiograph(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small pose and exposure changes a real radiograph shows (no flips: anatomy)."""
    h, w = img.shape
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.92, 1.08)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(-3, 3, size=2)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0, 1) ** rng.uniform(0.75, 1.33)


class CxrRecipe:
    name = "cxr-pneumonia"
    version = "1.0.0"
    task = "binary classification: pneumonia pattern vs normal chest radiograph"
    modality = "chest-xray"
    labels = ["normal", "pneumonia"]
    num_outputs = 1
    input_shape = (1, 64, 64)
    preprocessing = {"function": "cxr_preprocess", "params": {"size": 64}}
    train_config = TrainConfig(epochs=14, batch_size=64, lr=3e-3)
    provenance = {"training_data": [KERMANY],
                  "validation": "15% of patients (patient_key), hash split, never trained on"}
    limitations = [
        "Trained on children aged 1-5 from one hospital (Guangzhou); adults and other "
        "sites are outside the validated population.",
        "Screens for a pneumonia pattern only. No tuberculosis data could be obtained: "
        "this model does NOT screen for TB.",
        "Trained at 64x64 on whole radiographs squashed to a square; small findings are "
        "invisible at that resolution.",
        "Validation is from the same hospital as training; external performance will be "
        "lower. 30 groups of pixel-identical images exist in the source set.",
    ]
    targets = {"auc": 0.97, "sensitivity": 0.90, "specificity": 0.80}

    def build_model(self) -> nn.Module:
        return CamNet(1, widths=(16, 32, 64, 128), num_outputs=1)

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        files = cxr_files(data_root)
        raw = np.stack([read_image01(p) for p in files.paths])  # N x 64 x 64 in [0,1]
        val = split_by_group(files.groups, 0.15, salt="cxr-v1")
        tr_raw, tr_y = raw[~val], files.labels[~val]
        val_x = np.stack([cxr_preprocess(im, **self.preprocessing["params"])
                          for im in raw[val]])

        def make_batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
            x = np.stack([cxr_preprocess(augment_radiograph(tr_raw[i], rng),
                                         **self.preprocessing["params"]) for i in idx])
            return x, tr_y[idx].astype(np.float32)

        calib_rng = np.random.default_rng(seed)
        calib = calib_rng.choice(len(tr_raw), size=256, replace=False)
        groups = np.array(files.groups)
        counts = {
            "train_images": int((~val).sum()), "val_images": int(val.sum()),
            "train_patients": len(set(groups[~val])), "val_patients": len(set(groups[val])),
            "train_per_class": np.bincount(tr_y, minlength=2).tolist(),
            "val_per_class": np.bincount(files.labels[val], minlength=2).tolist(),
        }
        log(f"  cxr: {counts}")
        return Prepared(
            n_train=len(tr_raw), make_batch=make_batch, val_x=val_x,
            val_y=files.labels[val], counts=counts,
            calibration_x=np.stack([cxr_preprocess(tr_raw[i], **self.preprocessing["params"])
                                    for i in calib]),
        )


RECIPE = CxrRecipe()
