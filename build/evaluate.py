"""Operating points that are chosen on one set of images and reported on another.

Every binary bundle's threshold is chosen by a *rule* (e.g. "the most specific threshold
that keeps sensitivity >= 0.95") applied to out-of-fold scores of the cross-fitting pool;
its sensitivity and specificity are then reported on images that played no part in the
choice (the report split, and other sources). The bootstrap intervals resample both the
images the threshold was chosen on and the images it is reported on, re-applying the
rule each time, so the threshold's own uncertainty is inside the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from build.metrics import roc_auc

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class ThresholdRule:
    """How a bundle's shipped threshold is chosen from scores with known labels."""

    min_sensitivity: float | None = None   # most specific threshold reaching this
    min_specificity: float | None = None   # most sensitive threshold reaching this

    def describe(self) -> str:
        if self.min_sensitivity is not None:
            return f"the most specific threshold with sensitivity >= {self.min_sensitivity}"
        return f"the most sensitive threshold with specificity >= {self.min_specificity}"

    def choose(self, y: np.ndarray, prob: np.ndarray) -> float:
        y = np.asarray(y).astype(bool)
        pos, neg = prob[y], prob[~y]
        # sensitivity and specificity at every grid threshold, vectorised
        sens = (pos[None, :] >= GRID[:, None]).mean(axis=1)
        spec = (neg[None, :] < GRID[:, None]).mean(axis=1)
        if self.min_sensitivity is not None:
            ok = np.flatnonzero(sens >= self.min_sensitivity)
            return float(GRID[ok.max()]) if ok.size else float(GRID[0])
        ok = np.flatnonzero(spec >= self.min_specificity)
        return float(GRID[ok.min()]) if ok.size else float(GRID[-1])


def sens_spec(y: np.ndarray, prob: np.ndarray, threshold: float) -> tuple[float, float]:
    y = np.asarray(y).astype(bool)
    pred = prob >= threshold
    sens = float(pred[y].mean()) if y.any() else float("nan")
    spec = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return sens, spec


def _stratified(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    parts = [rng.choice(ix, size=len(ix), replace=True)
             for ix in (np.flatnonzero(y == k) for k in np.unique(y))]
    return np.concatenate(parts)


def transfer_ci(rule: ThresholdRule, choose_y: np.ndarray, choose_p: np.ndarray,
                report_y: np.ndarray, report_p: np.ndarray, *, n: int = 1000,
                seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of (threshold, sensitivity, specificity on the report set) when the
    threshold is re-chosen on each resample of the choosing set."""
    rng = np.random.default_rng(seed)
    thr, sens, spec = [], [], []
    for _ in range(n):
        ci = _stratified(rng, choose_y)
        t = rule.choose(choose_y[ci], choose_p[ci])
        ri = _stratified(rng, report_y)
        s, p = sens_spec(report_y[ri], report_p[ri], t)
        thr.append(t)
        sens.append(s)
        spec.append(p)

    def band(v: list[float]) -> list[float]:
        v = [x for x in v if not np.isnan(x)]
        return [round(float(q), 4) for q in np.quantile(v, [0.025, 0.975])] if v else []

    return {"threshold": band(thr), "sensitivity": band(sens), "specificity": band(spec)}


def auc_ci(y: np.ndarray, score: np.ndarray, *, n: int = 1000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    values = [roc_auc(y[i], score[i]) for i in (_stratified(rng, y) for _ in range(n))]
    return [round(float(q), 4) for q in np.quantile(values, [0.025, 0.975])]


def binary_report(name: str, y: np.ndarray, prob: np.ndarray, threshold: float, *,
                  rule: ThresholdRule | None = None, choose: tuple[np.ndarray, np.ndarray]
                  | None = None, note: str = "") -> dict[str, Any]:
    """One row of a model card's evaluation table: AUC (if both classes), sensitivity and
    specificity at the shipped threshold, with intervals that include the threshold's
    choice when the choosing set is given."""
    y = np.asarray(y).astype(int)
    sens, spec = sens_spec(y, prob, threshold)
    row: dict[str, Any] = {"set": name, "n": int(len(y)), "positives": int(y.sum()),
                           "sensitivity": _r(sens), "specificity": _r(spec),
                           "flagged": _r(float((prob >= threshold).mean()))}
    if note:
        row["note"] = note
    if 0 < y.sum() < len(y):
        row["auc"] = round(roc_auc(y, prob), 4)
        row["auc_ci95"] = auc_ci(y, prob)
    if rule is not None and choose is not None and len(np.unique(y)) == 2:
        row["ci95_with_threshold_choice"] = transfer_ci(rule, *choose, y, prob)
    return row


def cross_validated_threshold(rule: ThresholdRule, y: np.ndarray, prob: np.ndarray,
                              folds: np.ndarray) -> dict[str, Any]:
    """Nested check on the pool itself: choose on every fold but one, count on that one."""
    y = np.asarray(y).astype(bool)
    hits = {"tp": 0, "pos": 0, "tn": 0, "neg": 0}
    for k in np.unique(folds):
        inside = folds == k
        t = rule.choose(y[~inside], prob[~inside])
        pred = prob[inside] >= t
        hits["tp"] += int((pred & y[inside]).sum())
        hits["pos"] += int(y[inside].sum())
        hits["tn"] += int((~pred & ~y[inside]).sum())
        hits["neg"] += int((~y[inside]).sum())
    return {"sensitivity": _r(hits["tp"] / max(hits["pos"], 1)),
            "specificity": _r(hits["tn"] / max(hits["neg"], 1)),
            "how": "threshold chosen on the other folds' out-of-fold scores"}


def _r(v: float) -> float | None:
    return None if v != v else round(float(v), 4)

