"""Calibration, operating points and heatmaps as the manifest describes them."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.postprocess import (
    calibrated_probabilities,
    heatmap,
    map_shifts,
    operating_point,
    shift_averaged_evidence,
    shift_input,
    shifted_inputs,
)

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


def _strided_cam(x: np.ndarray, stride: int = 8) -> np.ndarray:
    """A network's 8 x 8 map, as a stride-8 grid sees a 64-px input: the mean of each
    cell (where a finding sits relative to the grid changes the map)."""
    h, w = x.shape[1:]
    return x[0].reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3))


def _blob(cx: float, cy: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0 ** 2))[None].astype(np.float32)


def test_map_shifts_are_the_image_and_three_copies() -> None:
    assert map_shifts(None) == map_shifts(0) == ((0, 0),)
    assert map_shifts(4) == ((0, 0), (4, 0), (0, 4), (4, 4))
    x = _blob(20, 30)
    batch = shifted_inputs(x, map_shifts(4))
    assert batch.shape == (4, 1, 64, 64) and np.array_equal(batch[0], x)  # the scored one
    assert np.unravel_index(batch[3, 0].argmax(), (64, 64)) == (34, 24)  # moved 4 down, 4 right
    assert np.array_equal(shift_input(x, 0, 4)[0, 4:], x[0, :-4])


def test_shift_averaged_map_follows_a_finding_the_plain_grid_map_loses() -> None:
    """A finding moved by half a grid cell: the plain map (one 8 x 8 grid) changes shape;
    the map averaged over the grid's positions moves with the finding."""
    shifts = map_shifts(4)

    def averaged(x: np.ndarray) -> np.ndarray:
        cams = np.stack([_strided_cam(c) for c in shifted_inputs(x, shifts)])
        return shift_averaged_evidence(cams, shifts, 64, 64)

    def plain(x: np.ndarray) -> np.ndarray:
        return shift_averaged_evidence(_strided_cam(x)[None], ((0, 0),), 64, 64)

    def r_after_moving_back(make, dx: int) -> float:
        a, b = make(_blob(27, 27)), make(_blob(27 + dx, 27 + dx))
        b = np.roll(b, (-dx, -dx), axis=(0, 1))
        return float(np.corrcoef(a[8:-8, 8:-8].ravel(), b[8:-8, 8:-8].ravel())[0, 1])

    for dx in (4, 3):
        assert r_after_moving_back(averaged, dx) > r_after_moving_back(plain, dx) + 0.05
        assert r_after_moving_back(averaged, dx) > 0.97
    peak = np.unravel_index(averaged(_blob(27, 27)).argmax(), (64, 64))
    assert abs(peak[0] - 27) <= 3 and abs(peak[1] - 27) <= 3
    assert averaged(_blob(27, 27)).min() >= 0  # positive evidence only, in logit units
