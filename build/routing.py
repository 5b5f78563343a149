"""The router's refusal threshold, derived from images of sources it never trained on.

The router's cross-fitting folds hold out whole *sources* (a hospital's films, a camera,
a DICOM family), so every out-of-fold score is the score of an image from a source its
member never saw. The shipped threshold (the minimum top-class probability to accept
an image) is the highest one that costs no held-out chest or fundus source more than
``max_threshold_loss`` of the images its argmax already routes correctly; the card then
reports, per source, what that threshold accepts, refuses and misroutes, and the same
with the threshold re-chosen without that source's fold (nested: no source grades its
own threshold).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.inference.postprocess import calibrated_probabilities
from build import metrics

GRID = np.round(np.arange(0.40, 0.991, 0.01), 2)


def accepted(prob: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """Routed to its own class with at least ``threshold`` confidence."""
    return (prob.argmax(1) == y) & (prob.max(1) >= threshold)


def choose_threshold(prob: np.ndarray, y: np.ndarray, sources: np.ndarray,
                     screened: list[int], max_loss: float) -> float:
    """Highest grid threshold that refuses, in no source of a screened class, more than
    ``max_loss`` of its images beyond what the lowest threshold accepts (sources are
    weighed alike, however large; a source the argmax already misroutes is the model's
    failure, shown in the table, not the threshold's)."""
    kinds = np.unique(sources[np.isin(y, screened)])
    floor = {s: accepted(prob[sources == s], y[sources == s], float(GRID[0])).mean()
             for s in kinds}
    best = float(GRID[0])
    for t in GRID:
        if all(accepted(prob[sources == s], y[sources == s], float(t)).mean()
               >= floor[s] - max_loss for s in kinds):
            best = float(t)
    return best


def per_source(prob: np.ndarray, y: np.ndarray, sources: np.ndarray, threshold: float,
               labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for s in sorted(set(sources.tolist())):
        sel = sources == s
        ok = accepted(prob[sel], y[sel], threshold)
        unsure = prob[sel].max(1) < threshold
        rows.append({"source": s, "label": labels[int(y[sel][0])], "n": int(sel.sum()),
                     "correct": round(float(ok.mean()), 4),
                     "refused_unsure": round(float(unsure.mean()), 4),
                     "misrouted": round(float((~ok & ~unsure).mean()), 4)})
    return rows


def router_evaluation(recipe: Any, prepared: Any, oof_logits: np.ndarray,
                      score: Any) -> dict[str, Any]:
    y = prepared.oof_y
    sources = np.array(prepared.oof_sources)
    folds = prepared.folds[prepared.oof_index]
    calibration = metrics.fit_temperature(oof_logits, y)
    prob = calibrated_probabilities(oof_logits, calibration)
    screened = [recipe.labels.index(k) for k in recipe.screened_labels]
    threshold = choose_threshold(prob, y, sources, screened, recipe.max_threshold_loss)

    nested = np.zeros(len(y), bool)  # accepted-as-correct with the fold's own threshold
    unsure = np.zeros(len(y), bool)
    fold_thresholds = {}
    for k in np.unique(folds):
        inside = folds == k
        t = choose_threshold(prob[~inside], y[~inside], sources[~inside], screened,
                             recipe.max_threshold_loss)
        fold_thresholds[int(k)] = t
        nested[inside] = accepted(prob[inside], y[inside], t)
        unsure[inside] = prob[inside].max(1) < t
    nested_rows = []
    for s in sorted(set(sources.tolist())):
        sel = sources == s
        nested_rows.append({"source": s, "label": recipe.labels[int(y[sel][0])],
                            "n": int(sel.sum()), "correct": round(float(nested[sel].mean()), 4),
                            "refused_unsure": round(float(unsure[sel].mean()), 4)})
    rows = [{"set": "held-out sources (out-of-fold), shipped threshold",
             "threshold": threshold,
             "per_source": per_source(prob, y, sources, threshold, recipe.labels)},
            {"set": "held-out sources, threshold re-chosen without the source's fold",
             "fold_thresholds": fold_thresholds, "per_source": nested_rows}]
    for eval_set in prepared.external:
        p = calibrated_probabilities(score(eval_set.x), calibration)
        src = np.array(eval_set.sources or [eval_set.name] * len(eval_set.y))
        rows.append({"set": eval_set.name, "note": eval_set.note, "threshold": threshold,
                     "per_source": per_source(p, eval_set.y, src, threshold, recipe.labels)})
    calibration["fitted_on"] = "out-of-fold scores (sources held out by fold)"
    ops = {"kind": "router", "score": "calibrated top-class probability",
           "description": "Route an image to its top class when that class's calibrated "
                          "probability >= threshold, otherwise refuse it as unsure.",
           "table": _coverage_table(prob, y),
           "suggested": {"threshold": threshold,
                         "why": "highest threshold that refuses at most "
                                f"{recipe.max_threshold_loss} more of any held-out chest "
                                "or fundus source than the lowest one"}}
    top = prob.max(1)
    return {"calibration": calibration, "operating_points": ops, "evaluation": rows,
            "reference": {"refused": round(float((~accepted(prob, y, threshold)).mean()), 4),
                          "top_probability_median": round(float(np.median(top)), 4)}}


def _coverage_table(prob: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    table = []
    for t in np.round(np.arange(0.4, 0.99, 0.05), 2):
        keep = prob.max(axis=1) >= t
        acc = float((prob[keep].argmax(1) == y[keep]).mean()) if keep.any() else 1.0
        table.append({"threshold": float(t), "coverage": round(float(keep.mean()), 4),
                      "accuracy_of_accepted": round(acc, 4)})
    return table
