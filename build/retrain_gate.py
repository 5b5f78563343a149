"""The gate a retrained version cannot skip (issue 27; docs/learning.md, section 3).

Pure arithmetic on figures measured by ``build/retrain.py``: each failed rule is one
sentence in ``reasons``; a version passes only when there are none.

1. Locked test (the programme's own images, never trained on): the new version's AUC is
   at least the active version's minus ``LOCKED_AUC_MARGIN``, and its sensitivity at the
   shipped threshold reaches the model's target (``targets.sensitivity`` in the bundle's
   manifest). The threshold is never re-chosen on the locked test: that would make it
   a training set. Where the manifest sets a specificity target, the specificity at
   that threshold must reach it too: labels that teach nothing (shuffled) leave the AUC
   of a strong start almost intact but push every score toward the middle, past the
   threshold, and a version that flags the healthy is no better for passing on AUC.
2. The project's own report splits, where present: no AUC drop above
   ``REPORT_AUC_MARGIN`` against the active version on the same images. A set with fewer
   than ``MIN_PER_CLASS`` images of a class is shown, not gated (one positive moves an
   AUC by 1/negatives).
3. INT8 within ``build/gate.py``'s tolerance of FP32 on the locked test, and the INT8
   file within TensorRT 10's documented ONNX support (biases in float, only INT8 into
   DequantizeLinear).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from build.evaluate import sens_spec
from build.metrics import roc_auc

LOCKED_AUC_MARGIN = 0.01
REPORT_AUC_MARGIN = 0.02
MIN_PER_CLASS = 10


def figures(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC, and sensitivity/specificity at ``threshold``, of calibrated probabilities."""
    y = np.asarray(y).astype(int)
    sens, spec = sens_spec(y, prob, threshold)
    auc = roc_auc(y, prob) if 0 < y.sum() < len(y) else None
    return {"n": int(len(y)), "positives": int(y.sum()),
            "auc": None if auc is None else round(float(auc), 4),
            "sensitivity": _rounded(sens), "specificity": _rounded(spec)}


def _rounded(value: float) -> float | None:
    """None where a class is absent (NaN is not JSON)."""
    return None if value != value else round(float(value), 4)


def locked_test_reasons(active: Mapping[str, Any], new: Mapping[str, Any], *,
                        threshold: float, target_sensitivity: float,
                        target_specificity: float | None = None) -> list[str]:
    reasons = []
    floor = active["auc"] - LOCKED_AUC_MARGIN
    if new["auc"] < floor - 1e-9:
        reasons.append(f"locked test: AUC {new['auc']:.4f} is below the active version's "
                       f"{active['auc']:.4f} minus {LOCKED_AUC_MARGIN} ({floor:.4f})")
    if new["sensitivity"] < target_sensitivity - 1e-9:
        reasons.append(f"locked test: sensitivity {new['sensitivity']:.4f} at the shipped "
                       f"threshold {threshold} is below the target {target_sensitivity} "
                       f"(active version: {active['sensitivity']:.4f}); the threshold "
                       "stays the shipped one: it is not re-chosen on the locked test")
    if target_specificity is not None and new["specificity"] < target_specificity - 1e-9:
        reasons.append(f"locked test: specificity {new['specificity']:.4f} at the shipped "
                       f"threshold {threshold} is below the target {target_specificity} "
                       f"(active version: {active['specificity']:.4f}): it would send too "
                       "many healthy patients on")
    return reasons


def report_split_rows(active: list[dict], new: list[dict]) -> tuple[list[dict], list[str]]:
    """Per report set: both AUCs, the drop and whether it is gated; and the reasons."""
    rows, reasons = [], []
    for a, b in zip(active, new, strict=True):
        gated = (a["auc"] is not None and min(a["positives"], a["n"] - a["positives"])
                 >= MIN_PER_CLASS)
        drop = None if a["auc"] is None else round(a["auc"] - b["auc"], 4)
        rows.append({"set": a["set"], "n": a["n"], "positives": a["positives"],
                     "active_auc": a["auc"], "new_auc": b["auc"], "drop": drop,
                     "gated": gated, "new_sensitivity": b["sensitivity"],
                     "new_specificity": b["specificity"]})
        if gated and drop > REPORT_AUC_MARGIN + 1e-9:
            reasons.append(f"report split '{a['set']}': AUC {b['auc']:.4f} dropped "
                           f"{drop:.4f} from the active version's {a['auc']:.4f} "
                           f"(at most {REPORT_AUC_MARGIN} allowed)")
    return rows, reasons


def quantized_biases(model: Any) -> list[str]:
    """Convolutions whose bias reaches them through a DequantizeLinear (TensorRT 10's
    parser takes only INT8 into DequantizeLinear, and int32 biases are not)."""
    made_by = {out: node for node in model.graph.node for out in node.output}
    bad = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            source = made_by.get(node.input[2])
            if source is not None and source.op_type == "DequantizeLinear":
                bad.append(f"{node.name}: bias quantized")
    return bad
