"""Fundus gradability on real photographs and deliberately degraded copies of them."""

import cv2
import numpy as np
import pytest
from helpers import FUNDUS_DIR

from appliance.inference.preprocess import find_fundus_disc
from appliance.screening.quality import assess_fundus, default_thresholds


def real(name: str) -> np.ndarray:
    bgr = cv2.imread(str(FUNDUS_DIR / name))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255


PHOTOS = ["IDRiD_003.jpg", "hrf_07_h.jpg", "hrf_12_h.jpg"]


@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_from_two_cameras_are_gradable(name):
    quality = assess_fundus(real(name))
    assert quality.gradable, quality.as_dict()


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize(
    "degrade, failed, words",
    [
        (lambda rgb, r: cv2.GaussianBlur(rgb, (0, 0), r / 25), "focus", "blurred"),
        (lambda rgb, r: rgb * 0.15, "too_dark", "too dark"),
        (lambda rgb, r: np.clip(rgb * 4.0, 0, 1), "too_bright", "over-exposed"),
        (
            lambda rgb, r: cv2.warpAffine(
                rgb, np.float32([[1, 0, 0.9 * r], [0, 1, 0]]), (rgb.shape[1], rgb.shape[0])
            ),
            "coverage",
            "centre the eye",
        ),
    ],
)
def test_degraded_copies_are_refused_with_a_retake_hint(name, degrade, failed, words):
    rgb = real(name)
    _, _, radius = find_fundus_disc(rgb)
    quality = assess_fundus(degrade(rgb, radius))
    assert failed in quality.failed, quality.as_dict()
    assert any(words in message for message in quality.messages)
    assert all("retake" in message for message in quality.messages)


def test_thresholds_come_from_the_calibration_file():
    thresholds = default_thresholds()
    assert set(thresholds) == {
        "min_focus",
        "min_brightness",
        "max_dark_fraction",
        "max_brightness",
        "max_bright_fraction",
        "min_coverage",
    }
