"""The router's retina augmentation (models/training/router.py): a retina that fills the
frame with no black at all (issue 26), on real photos from tests/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.inference.preprocess import find_fundus_disc
from models.training.data import read_image01
from models.training.router import (
    FRAME_FILLING,
    _field_of_view,
    _shrink,
    add_lesions,
    augment_retina,
    inside_field,
)

DATA = Path(__file__).resolve().parents[1] / "data"

PHOTOS = ["IDRiD_001.jpg", "hrf_07_h.jpg"]  # a clipped circle (Kowa), a full one (Canon)


def _black_share(img: np.ndarray) -> float:
    return float((img.max(axis=2) < 0.06).mean())


@pytest.mark.parametrize("name", PHOTOS)
def test_a_retina_filling_the_frame_has_no_black_and_keeps_its_shape(name: str) -> None:
    photo = read_image01(DATA / "fundus" / name)
    assert _black_share(photo) > 0.15  # the camera's black surround is there to remove
    for aspect in (1.0, 4 / 3, 16 / 9, 0.75):  # a portrait one is clipped by the frame
        crop = inside_field(photo, 0.95, aspect)
        h, w = crop.shape[:2]
        assert aspect < 1 or abs(w / h - aspect) < 0.03, (aspect, crop.shape)
        assert _black_share(crop) < 0.005, (name, aspect)
    cx, cy, radius = find_fundus_disc(photo)
    half_diagonal = np.hypot(*inside_field(photo, 0.95).shape[:2]) / 2
    assert half_diagonal == pytest.approx(0.95 * radius, rel=0.02)


def test_the_field_of_view_augmentation_makes_frame_filling_retinas() -> None:
    photo = _shrink(read_image01(DATA / "fundus" / "IDRiD_001.jpg"))  # as training keeps it
    rng = np.random.default_rng(0)
    crops = [_field_of_view(photo, rng) for _ in range(200)]
    filling = np.mean([_black_share(c) < 0.005 for c in crops])
    # about FRAME_FILLING of them, and the other fields still keep black around them
    assert FRAME_FILLING - 0.08 < filling < FRAME_FILLING + 0.08, filling
    assert augment_retina(photo, rng).shape[2] == 3


def test_lesions_add_exudates_and_haemorrhages_inside_the_picture() -> None:
    photo = _shrink(read_image01(DATA / "fundus" / "hrf_07_h.jpg"))
    rng = np.random.default_rng(5)
    brighter, darker = [], []
    for _ in range(20):
        sick = add_lesions(photo, rng)
        assert sick.shape == photo.shape and sick.dtype == np.float32
        assert 0.0 <= sick.min() and sick.max() <= 1.0
        change = sick - photo
        assert 0.0005 < (np.abs(change).max(axis=2) > 0.05).mean() < 0.5  # spots, plaques
        brighter.append(change[change.mean(axis=2) > 0.1])
        darker.append(change[change.mean(axis=2) < -0.05])
    # exudates yellow-white (more green than blue added); haemorrhages dark
    exudates, blots = np.concatenate(brighter), np.concatenate(darker)
    assert len(exudates) > 100 and exudates[:, 1].mean() > exudates[:, 2].mean()
    assert len(blots) > 100
