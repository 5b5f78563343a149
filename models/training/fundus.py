"""Fundus: referable diabetic retinopathy (ICDR grade >= 2) on IDRiD's 413 photographs.

One camera only (Kowa VX-10alpha), so the recipe's whole effort is to make a new camera
look like a seen one: the box crops the camera's circular field and subtracts the local
average colour (``enhance_fundus``), and training inserts camera changes (white balance,
gamma, exposure, illumination gradient, vignetting, focus, sensor resolution, noise,
JPEG) between the crop and that normalisation, then any rotation and flip. Checked on
photos from other cameras and on IDRiD photos passed through fixed "other camera"
profiles that training never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from appliance.inference.preprocess import enhance_fundus, fundus_disc, fundus_preprocess
from build.evaluate import ThresholdRule
from models.training.augment import CAMERA_PROFILES, as_camera, augment_camera
from models.training.data import (
    fundus_files,
    fundus_other_files,
    group_folds,
    read_image01,
    split_by_group,
)
from models.training.nets import CamNet
from models.training.recipe import EvalSet, Prepared
from models.training.train import TrainConfig

REPORT_SALT = "fundus-v1"  # the 1.0.0 validation images
REPORT_FRACTION = 0.2
FOLDS = 5
IDRID = {
    "dataset": "IDRiD Disease Grading, train split (Kowa VX-10alpha, 50 deg, India)",
    "citation": "Porwal P. et al. (2018), Indian Diabetic Retinopathy Image Dataset "
                "(IDRiD), IEEE Dataport, doi:10.21227/H25W98",
    "licence": "CC BY 4.0",
}
OTHER_CAMERAS = {
    "dataset": "HRF (Canon CR-1), CHASE_DB1 (Nidek hand-held), Wikimedia/scikit-image "
               "retina: 15 photos, used only to check, never to train",
    "citation": "Budai A. et al. (2013) Int J Biomed Imaging; Owen C.G. et al. (2009) "
                "IOVS; Haggstrom M. (2014) WikiJournal of Medicine",
    "licence": "CC BY 4.0 / CC0 / public domain",
}


def augment_rotation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x: enhanced 3xSxS. A fundus has no canonical orientation at this task, and the
    circular mask is rotation invariant, so any rotation/flip is a real image."""
    import cv2

    img = x.transpose(1, 2, 0)
    s = img.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), rng.uniform(0, 360), rng.uniform(0.92, 1.08))
    m[:, 2] += rng.uniform(-0.03 * s, 0.03 * s, size=2)
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


class FundusRecipe:
    name = "fundus-referable-dr"
    version = "1.2.0"
    task = "binary classification: referable diabetic retinopathy (ICDR grade >= 2) vs not"
    modality = "fundus-photo"
    loso = "fundus"  # build/loso.py --model fundus
    labels = ["not_referable", "referable_dr"]
    num_outputs = 1
    serving_heads = None
    input_shape = (3, 256, 256)
    preprocessing = {"function": "fundus_preprocess",
                     "params": {"size": 256, "threshold": 0.15, "blur_fraction": 1 / 30,
                                "gain": 4.0, "mask_fraction": 0.92}}
    train_config = TrainConfig(epochs=28, batch_size=32, lr=2e-3, weight_decay=5e-4)
    threshold_rule = ThresholdRule(min_sensitivity=0.85)
    provenance = {"training_data": [IDRID, OTHER_CAMERAS],
                  "validation": f"report split: {int(REPORT_FRACTION * 100)}% of IDRiD images "
                                "(hash by image; IDRiD does not say which eyes share a "
                                "patient); pool in 5 folds"}
    population = "adults with diabetes, macula-centred 45-50 degree colour fundus photographs"
    never_shown = [
        "Any camera but the Kowa VX-10alpha in training (other cameras only in the checks "
        "below, and as augmentation).",
        "Any population but IDRiD's Indian patients; darker or lighter fundus "
        "pigmentation than theirs.",
        "Diabetic macular oedema as a task; ungradable photos (the box's quality check "
        "refuses those before this model).",
        "Hand-held or non-mydriatic small-pupil photos except two CHASE_DB1 children's "
        "eyes in the checks.",
    ]
    limitations = [
        "Trained on 330 photos from one camera: the intervals are wide.",
        "A small network trained from scratch at 256 px cannot see single "
        "microaneurysms; it relies on haemorrhages, exudates and their spread.",
        "IDRiD may contain both eyes of a patient; the split is by image, so the report "
        "split may be optimistic.",
    ]
    targets = {"auc": 0.85, "sensitivity": 0.80, "specificity": 0.60}
    card = """## Choices and why

- **Camera augmentation between the crop and the normalisation** (white balance, gamma,
  exposure, gradient, vignetting, focus, resolution, noise, JPEG): the box's own
  normalisation removes much of a camera's look, and training shows the network what it
  does not remove.
- **Checked on fixed camera profiles applied to the report split** — never used in
  training — and on 15 photos from three other cameras.
- **Threshold for sensitivity 0.85 out-of-fold**: referable retinopathy missed is sight
  lost; a new camera usually costs sensitivity first.
"""

    def build_model(self) -> nn.Module:
        return CamNet(3, widths=(16, 32, 64, 96, 128), num_outputs=1, stem_stride=2,
                      dropout=0.3)

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        params = self.preprocessing["params"]
        size, threshold = params["size"], params["threshold"]
        files = fundus_files(data_root)
        report = split_by_group(files.groups, REPORT_FRACTION, REPORT_SALT)
        pool = np.flatnonzero(~report)
        # the disc crop at twice the input size: camera changes act on real detail
        crops = [fundus_disc(read_image01(files.paths[i]), 2 * size, threshold) for i in pool]
        y = files.labels[pool]
        folds = group_folds([files.groups[i] for i in pool], FOLDS, "fundus-folds")
        enhance = {k: v for k, v in params.items()}

        def make_batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
            x = np.stack([augment_rotation(enhance_fundus(augment_camera(crops[i], rng),
                                                          **enhance), rng) for i in idx])
            return x, y[idx].astype(np.float32)

        pool_x = np.stack([enhance_fundus(c, **enhance) for c in crops])
        report_images = [read_image01(files.paths[i]) for i in np.flatnonzero(report)]
        report_y = files.labels[report]
        external = [EvalSet(f"report split as another camera: {name}",
                            np.stack([fundus_preprocess(as_camera(im, prof), **params)
                                      for im in report_images]), report_y,
                            "the same photos through a fixed camera change never trained on")
                    for name, prof in CAMERA_PROFILES.items()]
        others = fundus_other_files(data_root)
        external.append(EvalSet(
            "other cameras (HRF Canon CR-1, CHASE_DB1 Nidek, Wikimedia)",
            np.stack([fundus_preprocess(read_image01(p), **params) for _, p, _ in others]),
            np.array([int(d == "diabetic_retinopathy") for _, _, d in others]),
            "15 photos, one with diabetic retinopathy (HRF 07_dr); healthy and glaucoma "
            "eyes should not be flagged",
            sources=[f"{fam}:{p.stem}" for fam, p, _ in others]))
        counts = {"pool_images": len(pool),
                  "pool_per_class": np.bincount(y, minlength=2).tolist(),
                  "report_images": int(report.sum()),
                  "report_per_class": np.bincount(report_y, minlength=2).tolist(),
                  "other_camera_photos": len(others)}
        log(f"  fundus: {counts}")
        return Prepared(
            n_train=len(pool), make_batch=make_batch, folds=folds,
            oof_index=np.arange(len(pool)), oof_x=pool_x, oof_y=y,
            report=EvalSet("report split (IDRiD photos never trained on)",
                           np.stack([fundus_preprocess(im, **params) for im in report_images]),
                           report_y, "same camera as training"),
            calibration_x=pool_x[:128], counts=counts, external=external,
        )


RECIPE = FundusRecipe()
