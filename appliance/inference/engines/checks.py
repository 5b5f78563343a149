"""Does an engine give the same results as ONNX Runtime? The check images through both.

An engine may serve only once the calibrated probabilities it gives on the check images
(``check_images/``, real images on both sides of each threshold) are within two score
points of ONNX Runtime's, and its logits and heat maps are close too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.inference.bundle import Bundle
from appliance.inference.postprocess import calibrated_probabilities
from appliance.inference.preprocess import preprocess
from appliance.inference.runner import Runner

CHECK_IMAGES = Path(__file__).parent / "check_images"
# A score is round(100 * probability): two points is the most an engine may move it.
PROBABILITY_TOLERANCE = 0.02
# Logits and heat maps (logit units): 10% of the reference's largest value, plus 0.1.
RAW_RELATIVE_TOLERANCE = 0.10
RAW_ABSOLUTE_TOLERANCE = 0.10


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    images: int
    max_probability_diff: float
    max_raw_diff: float  # logits or heat map, whichever differs most
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "images": self.images,
            "max_probability_diff": round(self.max_probability_diff, 6),
            "max_raw_diff": round(self.max_raw_diff, 6),
            "probability_tolerance": PROBABILITY_TOLERANCE,
            "reason": self.reason,
        }


def check_batch(bundle: Bundle, folder: Path = CHECK_IMAGES) -> np.ndarray:
    """The check images through the bundle's own preprocessing, as one batch."""
    from appliance.ingest.decode import decode_bytes

    inputs = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")):
        pixels = decode_bytes(path.read_bytes()).pixels
        inputs.append(preprocess(bundle.manifest["preprocessing"], pixels))
    if not inputs:
        raise FileNotFoundError(f"no check images in {folder}")
    return np.stack(inputs).astype(np.float32)


def _raw_diff(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Largest difference of a raw output (logits, heat map: logit units) and its limit,
    relative to the reference's range since that differs per model."""
    reference = np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(reference - candidate)))
    return diff, RAW_RELATIVE_TOLERANCE * float(np.max(np.abs(reference))) + RAW_ABSOLUTE_TOLERANCE


def compare_outputs(
    bundle: Bundle, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> CheckResult:
    """Same result as the reference within tolerance? (pure: arrays in, verdict out)

    Calibrated probabilities are what a score is made of; raw logits and heat maps are
    compared too, because saturated probabilities hide a shifted logit.
    """
    images = int(len(reference["logits"]))
    if set(candidate) != set(reference) or any(
        np.shape(candidate[k]) != np.shape(reference[k]) for k in reference
    ):
        return CheckResult(False, images, float("inf"), float("inf"), "outputs differ in shape")
    for name, value in candidate.items():
        if not np.all(np.isfinite(value)):
            return CheckResult(False, images, float("inf"), float("inf"), f"{name} has NaN/inf")
    calibration = bundle.manifest["calibration"]
    p_ref = calibrated_probabilities(reference["logits"], calibration)
    p_diff = float(
        np.max(np.abs(p_ref - calibrated_probabilities(candidate["logits"], calibration)))
    )
    problems = []
    if p_diff > PROBABILITY_TOLERANCE:
        problems.append(f"probabilities differ by {p_diff:.4f} (> {PROBABILITY_TOLERANCE})")
    worst = 0.0
    for name, label in (("logits", "logits"), ("cam", "heat maps")):
        if name in reference:
            diff, limit = _raw_diff(reference[name], candidate[name])
            worst = max(worst, diff)
            if diff > limit:
                problems.append(f"{label} differ by {diff:.3f} (> {limit:.3f})")
    reason = "; ".join(problems) or f"matches ONNX Runtime on {images} check images"
    return CheckResult(not problems, images, p_diff, worst, reason)


def check_engine(bundle: Bundle, candidate: Runner, reference: Runner) -> CheckResult:
    """Run the check images through both (active) runners and compare."""
    batch = check_batch(bundle)
    feed = {candidate.input_name: batch}
    return compare_outputs(bundle, reference.infer(feed), candidate.infer(feed))
