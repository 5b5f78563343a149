"""Fundus: referable diabetic retinopathy (ICDR grade >= 2) on IDRiD's 413 photographs.

413 images and no pretrained weights: a small CNN on Graham-enhanced disc crops (see
``fundus_preprocess``), with the augmentations a fundus allows (any rotation, flips,
scale, exposure). Honest uncertainty is reported: the validation set is ~80 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from appliance.inference.preprocess import fundus_preprocess
from models.training.data import fundus_files, read_image01, split_by_group
from models.training.nets import CamNet
from models.training.recipe import Prepared
from models.training.train import TrainConfig

FUNDUS_SALT = "fundus-v1"
FUNDUS_VAL_FRACTION = 0.25
IDRID = {
    "dataset": "IDRiD Disease Grading, train split (Kowa VX-10alpha, 50 deg, India)",
    "citation": "Porwal P. et al. (2018), Indian Diabetic Retinopathy Image Dataset "
                "(IDRiD), IEEE Dataport, doi:10.21227/H25W98",
    "licence": "CC BY 4.0",
}


def augment_fundus(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x: preprocessed 3xSxS. A fundus has no canonical orientation at this task, and
    the circular mask is rotation invariant, so any rotation/flip is a real image."""
    img = x.transpose(1, 2, 0)
    s = img.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), rng.uniform(0, 360), rng.uniform(0.95, 1.1))
    m[:, 2] += rng.uniform(-0.03 * s, 0.03 * s, size=2)
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, size=3)  # contrast / tint
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


class FundusRecipe:
    name = "fundus-referable-dr"
    version = "1.0.0"
    task = "binary classification: referable diabetic retinopathy (ICDR grade >= 2) vs not"
    modality = "fundus-photo"
    labels = ["not_referable", "referable_dr"]
    num_outputs = 1
    input_shape = (3, 256, 256)
    preprocessing = {"function": "fundus_preprocess",
                     "params": {"size": 256, "threshold": 0.15, "blur_fraction": 1 / 30,
                                "gain": 4.0, "mask_fraction": 0.92}}
    train_config = TrainConfig(epochs=40, batch_size=32, lr=2e-3, weight_decay=5e-4)
    provenance = {"training_data": [IDRID],
                  "validation": f"{int(FUNDUS_VAL_FRACTION * 100)}% of images (hash split by "
                                "image; IDRiD does not say which eyes share a patient)"}
    limitations = [
        "Trained on 413 images from one camera (Kowa VX-10alpha) in one Indian population; "
        "other cameras are handled by the disc crop and local-contrast normalisation but "
        "are NOT validated.",
        "Validation has about 100 images: the confidence intervals are wide.",
        "No pretrained weights were available offline; a small network trained from "
        "scratch at 256 px cannot see microaneurysms reliably.",
        "Diabetic macular oedema is not assessed. Ungradable images are not detected.",
        "IDRiD may contain both eyes of a patient; the split is by image, so validation "
        "may be optimistic.",
    ]
    targets = {"auc": 0.85, "sensitivity": 0.80, "specificity": 0.60}

    def build_model(self) -> nn.Module:
        return CamNet(3, widths=(16, 32, 64, 96, 128), num_outputs=1, stem_stride=2,
                      dropout=0.3)

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        files = fundus_files(data_root)
        params = self.preprocessing["params"]
        x = np.stack([fundus_preprocess(read_image01(p), **params) for p in files.paths])
        val = split_by_group(files.groups, FUNDUS_VAL_FRACTION, FUNDUS_SALT)
        tr_x, tr_y = x[~val], files.labels[~val]

        def make_batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
            return (np.stack([augment_fundus(tr_x[i], rng) for i in idx]),
                    tr_y[idx].astype(np.float32))

        counts = {
            "train_images": int((~val).sum()), "val_images": int(val.sum()),
            "train_per_class": np.bincount(tr_y, minlength=2).tolist(),
            "val_per_class": np.bincount(files.labels[val], minlength=2).tolist(),
        }
        log(f"  fundus: {counts}")
        return Prepared(n_train=len(tr_x), make_batch=make_batch, val_x=x[val],
                        val_y=files.labels[val], calibration_x=tr_x[:128], counts=counts)


RECIPE = FundusRecipe()
