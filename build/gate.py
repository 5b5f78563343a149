"""The accuracy gate: an INT8 model ships only if it is as good as its FP32 source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.inference.onnx_runner import run_batched
from build.metrics import macro_auc, roc_auc

DEFAULT_TOLERANCE = 0.01


class AccuracyGateError(RuntimeError):
    """The INT8 model's validation metric is too far from the FP32 model's."""


def check_accuracy_gate(fp32: float, int8: float, *, tolerance: float = DEFAULT_TOLERANCE,
                        metric: str = "AUC") -> float:
    """Return ``int8 - fp32``; raise AccuracyGateError (saying by how much) if
    ``|int8 - fp32| > tolerance``."""
    delta = int8 - fp32
    if abs(delta) > tolerance:
        raise AccuracyGateError(
            f"accuracy gate failed: INT8 validation {metric} {int8:.4f} vs FP32 {fp32:.4f} "
            f"differs by {abs(delta):.4f}, {abs(delta) - tolerance:.4f} more than the "
            f"allowed {tolerance:.4f}")
    return delta


def onnx_auc(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Validation AUC of an ONNX model's ``logits`` (macro one-vs-rest if multi-class)."""
    logits = run_batched(model_path, x)["logits"]
    if logits.shape[1] == 1:
        return roc_auc(y, logits[:, 0])
    return macro_auc(y, logits)


def gate_models(fp32_path: Path, int8_path: Path, x: np.ndarray, y: np.ndarray, *,
                tolerance: float = DEFAULT_TOLERANCE) -> tuple[float, float, float]:
    """Run both models on validation and apply the gate: (fp32 AUC, int8 AUC, delta)."""
    fp32, int8 = onnx_auc(fp32_path, x, y), onnx_auc(int8_path, x, y)
    return fp32, int8, check_accuracy_gate(fp32, int8, tolerance=tolerance)
