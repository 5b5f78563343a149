"""Pure post-processing: calibrated probabilities, operating points, heatmaps.

The build pipeline fits the calibration and the operating-point table on validation
and writes them into ``manifest.json``; these functions apply them at serve time and
are the ones the pipeline itself used to compute the table (no skew).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def calibrated_probabilities(logits: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """Map raw model logits to calibrated probabilities.

    ``platt`` (binary, logits ``N`` or ``Nx1``): ``sigmoid(a * logit + b)``.
    ``temperature`` (multi-class, logits ``NxK``): ``softmax(logits / T)``.
    """
    method = calibration["method"]
    logits = np.asarray(logits, dtype=np.float64)
    if method == "platt":
        return sigmoid(calibration["a"] * logits.reshape(len(logits)) + calibration["b"])
    if method == "temperature":
        return softmax(logits / calibration["temperature"], axis=1)
    raise ValueError(f"unknown calibration method {method!r}")


def operating_point(
    table: Sequence[Mapping[str, float]],
    *,
    min_sensitivity: float | None = None,
    min_specificity: float | None = None,
) -> Mapping[str, float]:
    """Pick a row of a manifest's operating-point table.

    With ``min_sensitivity``: the most specific row that still reaches it; with
    ``min_specificity``: the most sensitive row that reaches it.
    """
    if (min_sensitivity is None) == (min_specificity is None):
        raise ValueError("give exactly one of min_sensitivity / min_specificity")
    if min_sensitivity is not None:
        rows = [r for r in table if r["sensitivity"] >= min_sensitivity]
        key = "specificity"
    else:
        rows = [r for r in table if r["specificity"] >= min_specificity]
        key = "sensitivity"
    if not rows:
        raise ValueError("no operating point meets that requirement")
    return max(rows, key=lambda r: (r[key], r["threshold"]))


def evidence_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """One class activation map (h x w logits) -> ``height x width`` positive evidence
    in logit units: negative values clipped, then linear upsampling (the grid cells'
    centres land on the pixels they summarise). What the heatmap checks measure."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    return np.maximum(cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR), 0.0)


def heatmap(cam: np.ndarray, height: int, width: int, scale: float | None = None) -> np.ndarray:
    """One class activation map (h x w logits) -> ``height x width`` in [0, 1].

    Only positive evidence is shown (negative CAM values are clipped). With ``scale``
    (logit units: a model's strongest evidence, ``manifest.heatmap.scale_logits``) a
    weak map stays faint; without it the map is scaled by its own maximum, which makes
    faint evidence on a negative image look as strong as a real finding.
    """
    evidence = evidence_map(cam, height, width)
    peak = float(np.max(np.maximum(cam, 0.0))) if scale is None else float(scale)
    if peak > 0:
        evidence = evidence / peak
    return evidence.clip(0.0, 1.0)


def heat_to_grey(heat: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap as the 8-bit grey map ``--heatmap-dir`` writes (0 = no
    evidence, 255 = the model's strongest); the page's overlay is coloured from it."""
    return np.round(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)


def map_shifts(step: int | None) -> tuple[tuple[int, int], ...]:
    """The input shifts (dx, dy) a shift-averaged map is drawn from: the image itself
    and its copies moved by ``step`` pixels right, down and both. ``None`` or 0: the
    image alone (the plain map)."""
    if not step:
        return ((0, 0),)
    return ((0, 0), (step, 0), (0, step), (step, step))


def shift_input(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """A C x H x W model input moved by (dx, dy) pixels, edges replicated (no wrap)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = x.shape[1:]
    return np.stack([cv2.warpAffine(np.ascontiguousarray(c, np.float32), matrix, (w, h),
                                    borderMode=cv2.BORDER_REPLICATE) for c in x])


def shifted_inputs(x: np.ndarray, shifts: Sequence[tuple[int, int]]) -> np.ndarray:
    """One C x H x W input -> len(shifts) x C x H x W, one batch for one model call."""
    return np.stack([x if (dx, dy) == (0, 0) else shift_input(x, dx, dy)
                     for dx, dy in shifts])


def shift_averaged_evidence(cams: np.ndarray, shifts: Sequence[tuple[int, int]],
                            height: int, width: int) -> np.ndarray:
    """The CAMs of an input's shifted copies (N x h x w, in ``shifts`` order) ->
    ``height x width`` positive evidence in logit units, each map moved back over the
    image and averaged. Why: an 8 x 8 map's cells fall where the network's grid falls, so
    a half-cell shift of the film moved the plain map's peak; averaging the grid's
    positions makes the map follow the film instead (and samples it twice as finely)."""
    total = np.zeros((height, width), np.float32)
    for cam, (dx, dy) in zip(cams, shifts, strict=True):
        evidence = evidence_map(cam, height, width)
        if (dx, dy) != (0, 0):
            back = np.float32([[1, 0, -dx], [0, 1, -dy]])
            evidence = cv2.warpAffine(evidence, back, (width, height),
                                      borderMode=cv2.BORDER_REPLICATE)
        total += evidence
    return total / len(shifts)
