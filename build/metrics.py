"""Validation metrics and calibration fitting (numpy only, no scikit-learn needed)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from appliance.inference.postprocess import sigmoid, softmax


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC via the rank-sum (Mann-Whitney U) with tie correction."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUC over classes present in ``y``."""
    return float(np.mean([roc_auc(y == k, probs[:, k]) for k in np.unique(y)]))


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray,
                 score: np.ndarray, *, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval, resampling images stratified by class (so every
    resample has both classes)."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == k) for k in np.unique(y)]
    values = []
    for _ in range(n):
        idx = np.concatenate([rng.choice(ix, size=len(ix), replace=True) for ix in by_class])
        values.append(metric(y[idx], score[idx]))
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def fit_platt(logits: np.ndarray, y: np.ndarray, iters: int = 100) -> dict[str, float]:
    """Platt scaling ``sigmoid(a*z + b)`` by Newton's method on the log-loss, with
    Platt's smoothed targets so a separable validation set cannot blow ``a`` up."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    a, b = 1.0, 0.0
    for _ in range(iters):
        p = sigmoid(a * z + b)
        g = np.array([np.sum((p - t) * z), np.sum(p - t)])
        w = p * (1 - p) + 1e-12
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]])
        step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return {"method": "platt", "a": float(a), "b": float(b)}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Temperature scaling: the T minimising validation NLL (golden-section on log T)."""
    logits = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        p = softmax(logits / np.exp(log_t), axis=1)
        return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))

    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(m1) < nll(m2):
            hi = m2
        else:
            lo = m1
    return {"method": "temperature", "temperature": float(np.exp((lo + hi) / 2))}


def operating_points(y: np.ndarray, prob: np.ndarray,
                     thresholds: np.ndarray | None = None) -> list[dict[str, float]]:
    """threshold -> sensitivity, specificity (positive when prob >= threshold)."""
    y = np.asarray(y).astype(bool)
    if thresholds is None:
        thresholds = np.round(np.arange(0.02, 0.99, 0.02), 2)
    rows = []
    for t in thresholds:
        pred = prob >= t
        rows.append({"threshold": float(t),
                     "sensitivity": round(float((pred & y).sum() / max(y.sum(), 1)), 4),
                     "specificity": round(float((~pred & ~y).sum() / max((~y).sum(), 1)), 4)})
    return rows




def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Binary ECE over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(prob[sel].mean() - y[sel].mean())
    return float(ece)
