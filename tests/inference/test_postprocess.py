"""Calibration, operating points and heatmaps as the manifest describes them."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.postprocess import calibrated_probabilities, heatmap, operating_point

TABLE = [
    {"threshold": 0.2, "sensitivity": 0.99, "specificity": 0.70},
    {"threshold": 0.4, "sensitivity": 0.95, "specificity": 0.85},
    {"threshold": 0.6, "sensitivity": 0.90, "specificity": 0.93},
]


def test_platt_and_temperature() -> None:
    p = calibrated_probabilities(np.array([[0.0], [2.0]]), {"method": "platt", "a": 1.0, "b": 0.0})
    np.testing.assert_allclose(p, [0.5, 1 / (1 + np.exp(-2))])
    logits = np.array([[1.0, 0.0, -1.0]])
    sharp = calibrated_probabilities(logits, {"method": "temperature", "temperature": 0.5})
    soft = calibrated_probabilities(logits, {"method": "temperature", "temperature": 2.0})
    assert sharp[0, 0] > soft[0, 0] and np.allclose(sharp.sum(1), 1)
    with pytest.raises(ValueError):
        calibrated_probabilities(logits, {"method": "isotonic"})


def test_operating_point_choice() -> None:
    assert operating_point(TABLE, min_sensitivity=0.95)["threshold"] == 0.4
    assert operating_point(TABLE, min_specificity=0.80)["threshold"] == 0.4
    with pytest.raises(ValueError):
        operating_point(TABLE, min_sensitivity=0.999)


def test_heatmap_is_positive_evidence_scaled_to_image() -> None:
    cam = np.array([[-3.0, 0.0], [1.0, 2.0]], np.float32)
    hm = heatmap(cam, 40, 60)
    assert hm.shape == (40, 60) and hm.min() >= 0 and hm.max() == pytest.approx(1.0)
    assert heatmap(np.full((2, 2), -1.0), 4, 4).max() == 0
    assert heatmap(cam, 4, 4, scale=8.0).max() == pytest.approx(0.25)  # weak stays faint
