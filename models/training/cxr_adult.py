"""Chest X-ray, adults: TB-consistent findings (refer for a sputum test) vs not.

Positives: TBX11K's 600 TB films (China) with radiologists' boxes. Negatives: NIH's adult
normals (USA). No hospital gives both, so the recipe takes the hospital away as an
answer (see ``models/training/tb.py`` and the card's "Choices and why"):

1. every film reaches the model at NIH's 64 px with its intensities replaced by their
   rank (``cxr_equalised_preprocess``): no source is sharper or differently exposed;
2. lesion mixing: TB films with their lesions removed are negatives, NIH normals with a
   TB lesion pasted in are positives, NIH normals with lesion-free TB tissue pasted in
   are negatives, so both hospitals' films carry both labels;
3. the map is taught to sit in the boxes (``attention_weight``): the score must come
   from where the radiologists drew (a variant, ``cell_weight``, teaches it cell by
   cell instead: measured, not shipped);
4. a second head learns NIH's "any finding" (abnormal vs normal) from the same body;
   only the TB head is served.

``build/tb_shortcuts.py`` trains each variant (``cxr_adult_choices.VARIANTS``) on four
folds and measures what a shortcut would give away on the fifth.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from appliance.inference.preprocess import cxr_equalised_preprocess, cxr_preprocess, squash
from build.evaluate import ThresholdRule
from models.training.augment import augment_radiograph_with_mask, vendor_processing
from models.training.cxr import KERMANY, NIH
from models.training.cxr_adult_card import CARD
from models.training.cxr_adult_choices import SHIPPED, VARIANTS, Choice
from models.training.data import group_folds, split_by_group
from models.training.nets import CamNet
from models.training.recipe import EvalSet, Prepared
from models.training.tb import (
    CHILD_PNEUMONIA,
    NIH_ABNORMAL,
    NIH_NORMAL,
    NIH_OTHER_DISEASE,
    OTHER_NORMAL,
    SIZE,
    TB,
    TB_HEAD,
    TBX11K,
    MixedBatches,
    Sources,
    box_mask,
    films_at,
    load_sources,
    other_disease,
    paste,
    remove_lesions,
    soften,
    to_working,
)
from models.training.train import TrainConfig

FOLDS = 5
NIH_REPORT_SALT = "nih-v1"     # the NIH patients held out since 1.0.0
TB_REPORT_FRACTION = 0.15      # TBX11K films held out from everything (pointing game)
TB_REPORT_SALT = "tbx11k-report-v1"
CAM_SIZE = 8                   # 64 px in, three 2x poolings


class CxrAdultRecipe:
    name = "cxr-adult-abnormal"
    version = "2.3.0"
    task = ("binary classification: chest radiograph findings consistent with tuberculosis "
            "(refer for a sputum test) vs not, adults")
    modality = "chest-xray"
    loso = "cxr-adult"  # build/tb_shortcuts.py
    labels = ["no TB-consistent findings", "TB-consistent findings"]
    num_outputs = 1
    serving_heads = [TB_HEAD]
    input_shape = (1, 64, 64)
    preprocessing = {"function": "cxr_equalised_preprocess", "params": {"size": 64}}
    train_config = TrainConfig(epochs=14, batch_size=64, lr=3e-3, samples_per_epoch=2560,
                               attention_weight=0.5)
    # why: WHO's target product profile for TB triage asks sensitivity >= 0.90 with
    # specificity >= 0.70; out-of-fold sensitivity is chosen higher (0.95) because a new
    # hospital's films cost sensitivity, and the out-of-fold set includes the mixed films
    # (lesions on the other hospital's films, TB films with lesions removed), which the
    # hospital cannot answer.
    threshold_rule = ThresholdRule(min_sensitivity=0.95)
    provenance = {"training_data": [TBX11K, NIH, {
                      **KERMANY, "dataset": KERMANY["dataset"] + " (normal films only, as "
                                                                 "negatives)"}],
                  "validation": "TBX11K report split: 15 % of the TB films (salted hash of "
                                "the TBX11K id); NIH report split: one seventh of adult "
                                "patients (since 1.0.0); Kermany: the children's model's "
                                "report split; the rest in 5 folds (TB films each its own "
                                "group, NIH by patient)"}
    population = ("adults aged 16 and over in TB screening or triage; the box sends a chest "
                  "film here when the DICOM age is 16 or more, or when the site or operator "
                  "says adult")
    never_shown = [
        "A TB-negative film from the hospitals the TB films came from: TBX11K's healthy "
        "and sick-but-not-TB films could not be had. Every TB film is from one source "
        "(TBX11K, China); every adult negative from another (NIH Clinical Center, USA).",
        "HIV-positive patients as such, children with TB (paediatric TB), "
        "bacteriologically confirmed labels (TBX11K's labels are radiologists' reading "
        "with clinical confirmation; no Xpert or culture per film was given).",
        "Any TB country but one; any African or South Asian hospital.",
        "Films at more than 64x64 pixels; lateral views; portable ICU films with TB.",
        "Other diseases that look like TB (lung cancer, fibrosis, silicosis, old "
        "pneumonia) labelled as not-TB: NIH's abnormal films teach a second head only.",
    ]
    limitations = [
        "Decision support for triage, not a TB test: a flag means 'refer for a sputum test "
        "(e.g. Xpert MTB/RIF)', no flag does not rule TB out.",
        "At 64x64 pixels small lesions (miliary TB, small nodules, early infiltrates) are "
        "invisible; the model sees upper-zone opacities, cavities and fibrosis at best.",
        "The in-source figures are optimistic: they pair one hospital's TB films with "
        "another's normals. The shortcut checks below say how much of the score is the "
        "lesion; a site must calibrate on its own Xpert results (`appliance calibrate`).",
    ]
    targets = {"auc": 0.85, "sensitivity": 0.90, "specificity": 0.70, "tb_flagged": 0.90}
    card = CARD  # models/training/cxr_adult_card.py

    def __init__(self, choice: Choice | None = None) -> None:
        self.choice = choice or VARIANTS[SHIPPED]
        if not self.choice.equalise:
            self.preprocessing = {"function": "cxr_preprocess", "params": {"size": 64}}
        self.train_config = replace(self.train_config,
                                    attention_weight=self.choice.attention_weight,
                                    adversarial_weight=self.choice.adversarial_weight,
                                    cell_weight=self.choice.cell_weight,
                                    epochs=self.choice.epochs, domains=3)
        size, detail = self.choice.size, self.choice.detail
        if size != SIZE:
            self.input_shape = (1, size, size)
            params = {"size": size, **({"detail": detail} if detail else {})}
            self.preprocessing = {**self.preprocessing, "params": params}

    def describe_variant(self) -> dict[str, Any]:
        return {"note": self.choice.note}

    def build_model(self) -> nn.Module:
        grid = CAM_SIZE * self.choice.size // SIZE
        heads = 3 if self.choice.pneumonia_share else 2
        return CamNet(1, widths=self.choice.widths, num_outputs=heads,
                      peak=grid if self.choice.peak else 0)

    def _prep(self, film: np.ndarray) -> np.ndarray:
        if self.choice.equalise:
            return cxr_equalised_preprocess(film, size=self.choice.size,
                                            detail=self.choice.detail)
        return cxr_preprocess(film, size=self.choice.size)

    def _films(self, s: Sources) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TB films, NIH films and children's films as mixing works on them."""
        if self.choice.size != SIZE and self.choice.detail == SIZE:
            up = lambda a: np.stack([squash(f, self.choice.size) for f in a])  # noqa: E731
            return up(s.tb.images), up(self._equalised(s.nih_raw)), \
                up(self._equalised(s.kid_raw))
        if self.choice.size != SIZE:  # a variant only: measured, never shipped
            return films_at(s, self.choice.size)
        if self.choice.equalise:
            return s.tb.images, self._equalised(s.nih_raw), self._equalised(s.kid_raw)
        return s.tb_raw, s.nih_raw, s.kid_raw

    @staticmethod
    def _equalised(films: np.ndarray) -> np.ndarray:
        return np.stack([to_working(im) for im in films])

    def splits(self, s: Sources) -> dict[str, np.ndarray]:
        tb_report = split_by_group(s.tb.ids, TB_REPORT_FRACTION, TB_REPORT_SALT)
        nih_report = group_folds(s.nih_groups, 7, NIH_REPORT_SALT) == 0
        return {"tb_report": tb_report, "nih_report": nih_report,
                "tb_folds": group_folds(s.tb.ids, FOLDS, "tb-folds"),
                "nih_folds": group_folds(s.nih_groups, FOLDS, "nih-folds")}

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        return self.prepare_from(load_sources(data_root, log), seed, log)

    def prepare_from(self, s: Sources, seed: int, log: Any) -> Prepared:
        sp = self.splits(s)
        tb_films, nih_films, kid_films = self._films(s)
        tp, npool = np.flatnonzero(~sp["tb_report"]), np.flatnonzero(~sp["nih_report"])
        kids = (np.flatnonzero(~s.kid_report & (s.kid_y == 0))
                if self.choice.children_negatives else np.array([], int))
        sick_kids = (np.flatnonzero(~s.kid_report & (s.kid_y == 1))
                     if self.choice.pneumonia_share else np.array([], int))
        kid_kind = np.r_[np.full(len(kids), OTHER_NORMAL), np.full(len(sick_kids),
                                                                   CHILD_PNEUMONIA)]
        kids = np.r_[kids, sick_kids].astype(int)
        films = np.concatenate([tb_films[tp], nih_films[npool], kid_films[kids]])
        nih_kind = np.where(s.nih_y == 1, NIH_ABNORMAL, NIH_NORMAL)
        if self.choice.other_disease_share:
            nih_kind[_other_disease(s)] = NIH_OTHER_DISEASE
        kind = np.concatenate([np.full(len(tp), TB), nih_kind[npool],
                               kid_kind])
        size = self.choice.size
        tb_masks = (s.tb_masks if size == SIZE
                    else np.stack([box_mask(b, size) for b in s.tb.boxes]))
        masks = np.concatenate([tb_masks[tp], np.zeros((len(npool) + len(kids), size, size),
                                                       np.float32)])
        folds = np.concatenate([sp["tb_folds"][tp], sp["nih_folds"][npool],
                                np.arange(len(kids)) % FOLDS])
        share = dict(zip((TB, NIH_NORMAL, NIH_ABNORMAL, OTHER_NORMAL), self.choice.shares,
                         strict=True))
        share[NIH_OTHER_DISEASE] = self.choice.other_disease_share
        share[CHILD_PNEUMONIA] = self.choice.pneumonia_share
        weights = np.array([share[k] / (kind == k).sum() for k in kind])
        augment = partial(augment_radiograph_with_mask, zoom=self.choice.zoom,
                          isotropic=self.choice.zoom_isotropic, shift=self.choice.shift,
                          processing=self.choice.processing,
                          processing_strength=self.choice.processing_strength)
        make_batch = MixedBatches(films, kind, masks, self._prep,
                                  augment, self.choice.mixing,
                                  CAM_SIZE * size // SIZE, cells=self.choice.cell_weight > 0)
        oof = self._oof_set(films, kind, masks, folds, seed)
        rng = np.random.default_rng(seed)
        calib = rng.choice(len(films), 256, replace=False)
        report = self._report_set(s, sp, tb_films, nih_films)
        counts = {"tb_pool_films": len(tp), "tb_report_films": int(sp["tb_report"].sum()),
                  "nih_pool_images": len(npool),
                  "nih_pool_per_class": np.bincount(s.nih_y[npool], minlength=2).tolist(),
                  "nih_report_images": int(sp["nih_report"].sum()),
                  "nih_report_per_class": np.bincount(s.nih_y[sp["nih_report"]],
                                                      minlength=2).tolist(),
                  "children_negatives": int((kid_kind == OTHER_NORMAL).sum()),
                  "oof_set": {str(name): int((oof["source"] == name).sum())
                              for name in np.unique(oof["source"])}}
        log(f"  cxr-adult: {counts}")
        return Prepared(
            n_train=len(films), make_batch=make_batch, folds=folds,
            oof_index=oof["index"], oof_x=oof["x"], oof_y=oof["y"], report=report,
            calibration_x=np.stack([self._prep(films[i]) for i in calib]), counts=counts,
            sample_weights=weights, external=self._external_sets(s, sp, nih_films, kid_films),
            oof_sources=list(oof["source"]),
            oof_reference=np.isin(oof["source"], ["TBX11K TB film", "NIH normal"]),
        )

    def _oof_set(self, films, kind, masks, folds, seed) -> dict[str, np.ndarray]:
        """Out-of-fold films for calibration and the threshold: real TB films and NIH
        normals, plus, per fold, TB films with lesions removed and NIH normals with a TB
        lesion pasted in (donors from the same fold: the member that scores them never
        saw any of the films mixed). ``index`` is the pool film each derives from."""
        rng = np.random.default_rng(seed + 101)
        xs, ys, idx, src = [], [], [], []
        tb_all, nn_all = np.flatnonzero(kind == TB), np.flatnonzero(kind == NIH_NORMAL)
        for i in np.concatenate([tb_all, nn_all]):
            xs.append(self._prep(films[i]))
            ys.append(int(kind[i] == TB))
            idx.append(i)
            src.append("TBX11K TB film" if kind[i] == TB else "NIH normal")
        if self.choice.mixing.remove_lesions > 0:
            for k in range(FOLDS):
                tb_k = tb_all[folds[tb_all] == k]
                removed, which = remove_lesions(films[tb_k], masks[tb_k], 0.02, rng)
                for im, w in zip(removed, which, strict=True):
                    xs.append(self._prep(im))
                    ys.append(0)
                    idx.append(tb_k[w])
                    src.append("TB film, lesions removed")
                for i in nn_all[folds[nn_all] == k]:
                    donor = int(rng.choice(tb_k))
                    if masks[donor].any():
                        xs.append(self._prep(paste(films[i], films[donor], masks[donor])))
                        ys.append(1)
                        idx.append(i)
                        src.append("NIH normal, TB lesion pasted")
        return {"x": np.stack(xs), "y": np.array(ys), "index": np.array(idx),
                "source": np.array(src)}

    def _report_set(self, s, sp, tb_films, nih_films) -> EvalSet:
        rep_tb = np.flatnonzero(sp["tb_report"])
        rep_nn = np.flatnonzero(sp["nih_report"] & (s.nih_y == 0))
        x = np.stack([self._prep(f) for f in np.concatenate([tb_films[rep_tb],
                                                              nih_films[rep_nn]])])
        return EvalSet("Report split: TBX11K TB films and NIH normal patients never trained on",
                       x, np.r_[np.ones(len(rep_tb)), np.zeros(len(rep_nn))].astype(int),
                       "two hospitals: optimistic (the hospital alone could answer)",
                       sources=["TBX11K"] * len(rep_tb) + ["NIH"] * len(rep_nn))

    def _external_sets(self, s, sp, nih_films, kid_films) -> list[EvalSet]:
        rep = sp["nih_report"]
        views = np.array([r["view"] for r in s.nih_rows])
        nih_x = np.stack([self._prep(f) for f in nih_films[rep]])
        kid = np.flatnonzero(s.kid_report)
        out = [
            EvalSet("NIH report split, abnormal vs normal (any finding, not TB)", nih_x,
                    s.nih_y[rep], "the TB score on NIH's text-mined findings: what other "
                    "disease does to it"),
            EvalSet("NIH report split, PA views: abnormal vs normal", nih_x[views[rep] == "PA"],
                    s.nih_y[rep][views[rep] == "PA"], "standing films"),
            EvalSet("Kermany children (report split): pneumonia vs normal",
                    np.stack([self._prep(f) for f in kid_films[kid]]), s.kid_y[kid],
                    "children never trained on; their hospital's other children's normal "
                    "films were negatives in training (where the recipe says so): how "
                    "TB-like children's normals and pneumonias score"),
        ]
        return out

    def shortcut_sets(self, s: Sources, fold: int | None, seed: int) -> dict[str, np.ndarray]:
        """Held-out films of pool fold ``fold`` and their mixed forms (build/tb_shortcuts.py);
        ``fold=None``: the report split's films instead, which no member trained on."""
        sp = self.splits(s)
        tb_films, nih_films, kid_films = self._films(s)
        rng = np.random.default_rng(seed + 7)
        size = self.choice.size
        masks = (s.tb_masks if size == SIZE
                 else np.stack([box_mask(b, size) for b in s.tb.boxes]))
        if fold is None:
            tb_i, pool_nih = np.flatnonzero(sp["tb_report"]), sp["nih_report"]
        else:
            tb_i = np.flatnonzero(~sp["tb_report"] & (sp["tb_folds"] == fold))
            pool_nih = ~sp["nih_report"] & (sp["nih_folds"] == fold)
        nn_i = np.flatnonzero(pool_nih & (s.nih_y == 0))
        na_i = np.flatnonzero(pool_nih & (s.nih_y == 1))
        other = _other_disease(s)
        od_i = np.flatnonzero(pool_nih & other)
        tl_i = np.flatnonzero(pool_nih & (s.nih_y == 1) & ~other)
        removed, _ = remove_lesions(tb_films[tb_i], masks[tb_i], 0.02, rng)
        boxed = tb_i[masks[tb_i].reshape(len(tb_i), -1).any(1)]
        lesion, tissue = [], []
        for i in nn_i:
            src = int(rng.choice(boxed))
            lesion.append(paste(nih_films[i], tb_films[src], masks[src]))
            free = [j for j in boxed if not (masks[j] * masks[src]).any()]
            if free:
                tissue.append(paste(nih_films[i], tb_films[int(rng.choice(free))],
                                    masks[src]))
        kid = np.flatnonzero(s.kid_report)
        kn, kp = kid[s.kid_y[kid] == 0][:300], kid[s.kid_y[kid] == 1][:300]
        prep = lambda a: np.stack([self._prep(f) for f in a])  # noqa: E731
        soft = lambda a: [soften(f) for f in a]  # noqa: E731
        sharp = sharp_third_hospital_film()
        tight = lambda a: [squash(f[f.shape[0] // 10:-(f.shape[0] // 10),  # noqa: E731
                                   f.shape[1] // 10:-(f.shape[1] // 10)], f.shape[0])
                           for f in a]
        processed = lambda a: [vendor_processing(f, 0.5, 0.5) for f in a]  # noqa: E731
        return {"tb": prep(tb_films[tb_i]), "tb_masks": masks[tb_i],
                "tb_tight": prep(tight(tb_films[tb_i])),
                "nih_normal_tight": prep(tight(nih_films[nn_i])),
                "tb_processed": prep(processed(tb_films[tb_i])),
                "nih_normal_processed": prep(processed(nih_films[nn_i])),
                "tb_soft": prep(soft(tb_films[tb_i])),
                "nih_other_disease": prep(nih_films[od_i]), "nih_tb_like": prep(nih_films[tl_i]),
                "sharp_film": prep([sharp]), "sharp_film_soft": prep(soft([sharp])),
                "nih_normal": prep(nih_films[nn_i]), "nih_abnormal": prep(nih_films[na_i]),
                "lesions_removed": prep(removed), "lesion_pasted": prep(lesion),
                "tissue_pasted": prep(tissue), "children_normal": prep(kid_films[kn]),
                "children_pneumonia": prep(kid_films[kp])}


def _other_disease(s: Sources) -> np.ndarray:
    return np.array([other_disease(r["finding_labels"]) for r in s.nih_rows])


def sharp_third_hospital_film() -> np.ndarray:
    """NEMA's RG1 (pydicom-data): a sharp adult PA CR from a hospital never trained on,
    decoded as the box decodes it. Every adult negative in training is NIH's soft 64 px,
    so a model that learned "sharp = TB" flags it (session 8's 128-px variant did)."""
    from pydicom.data import get_testdata_file

    from appliance.ingest.decode import decode_file

    return decode_file(get_testdata_file("RG1_UNCR.dcm", download=False)).pixels


def variant(name: str) -> CxrAdultRecipe:
    return CxrAdultRecipe(VARIANTS[name])


RECIPE = CxrAdultRecipe()
