"""Pre-processing: pure, deterministic, and doing what training assumed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.inference.preprocess import (
    PREPROCESSORS,
    brightest_channel,
    centred_circle,
    cxr_equalised_preprocess,
    cxr_preprocess,
    equalise,
    find_fundus_disc,
    fundus_preprocess,
    preprocess,
    router_preprocess,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def rgb01(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


@pytest.fixture(scope="module")
def hrf() -> np.ndarray:
    return rgb01(DATA / "fundus" / "hrf_07_h.jpg")


def test_cxr_squashes_whole_radiograph_ignoring_aspect() -> None:
    rng = np.random.default_rng(0)
    big = rng.random((640, 1280)).astype(np.float32)  # 2:1 radiograph
    out = cxr_preprocess(big)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    # INTER_AREA at an integer factor is the block mean: the whole frame, squashed
    block = big.reshape(64, 10, 64, 20).mean(axis=(1, 3))
    expected = (block - block.mean()) / (block.std() + 1e-6)
    np.testing.assert_allclose(out[0], expected, atol=1e-4)


def test_cxr_on_the_datasets_own_64px_images_only_standardises() -> None:
    png = next((DATA / "cxr64").glob("*.png"))
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    out = cxr_preprocess(img)[0]
    np.testing.assert_allclose(out, (img - img.mean()) / (img.std() + 1e-6), atol=1e-5)
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3


def test_cxr_is_exposure_invariant_and_accepts_rgb() -> None:
    img = np.random.default_rng(1).random((300, 250)).astype(np.float32) * 0.5
    np.testing.assert_allclose(cxr_preprocess(img), cxr_preprocess(img * 1.8 + 0.05), atol=1e-4)
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    np.testing.assert_allclose(cxr_preprocess(rgb), cxr_preprocess(img), atol=1e-4)


def test_equalised_cxr_is_the_same_under_any_monotone_intensity_change() -> None:
    """The adult model's input cannot tell a hospital's processing curve (issue 23): exact
    on a 64-px film (on a larger one the averaging before ranking makes it close)."""
    img = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    base = cxr_equalised_preprocess(img)
    assert base.shape == (1, 64, 64) and base.dtype == np.float32
    for curve in (lambda v: v**0.5, lambda v: v**2.2, lambda v: 0.1 + 0.3 * v,
                  lambda v: 1 / (1 + np.exp(-8 * (v - 0.5)))):
        # (float32 rounding can tie two neighbours: one rank step at most)
        np.testing.assert_allclose(cxr_equalised_preprocess(curve(img)), base, atol=2e-3)
    # a plain standardisation is not: it keeps the curve's shape
    assert np.abs(cxr_preprocess(img**2.2) - cxr_preprocess(img)).max() > 0.1


def test_equalised_cxr_at_a_smaller_detail_is_as_soft_as_that_detail() -> None:
    """``detail``: a 128-px input that carries no more than 64 px of detail, whatever the
    film's own sharpness (issue 23: every adult negative exists at 64 px only)."""
    rng = np.random.default_rng(3)
    sharp = rng.random((512, 512)).astype(np.float32)
    out = cxr_equalised_preprocess(sharp, size=128, detail=64)
    assert out.shape == (1, 128, 128)
    # nothing finer than 64 px survives: taking the input down to 64 px and back up loses
    # little of it, while the film at its own detail loses most of its texture
    def fine(x: np.ndarray) -> float:
        back = cv2.resize(cv2.resize(x, (64, 64), interpolation=cv2.INTER_AREA), (128, 128))
        return float(np.abs(x - back).mean() / np.abs(x).mean())

    assert fine(out[0]) < 0.5 < 0.7 < fine(cxr_equalised_preprocess(sharp, size=128)[0])


def test_equalise_gives_ranks_in_0_1() -> None:
    img = np.array([[0.9, 0.1], [0.5, 0.3]], np.float32)
    np.testing.assert_allclose(equalise(img), [[1.0, 0.0], [2 / 3, 1 / 3]], atol=1e-6)


def test_functions_are_pure(hrf: np.ndarray) -> None:
    before = hrf.copy()
    a = fundus_preprocess(hrf, size=128)
    b = fundus_preprocess(hrf, size=128)
    np.testing.assert_array_equal(hrf, before)  # input untouched
    np.testing.assert_array_equal(a, b)  # deterministic


@pytest.mark.parametrize(
    ("name", "radius"), [("hrf_07_h.jpg", 490), ("hrf_12_h.jpg", 490), ("IDRiD_003.jpg", 570)]
)
def test_fundus_disc_found_on_real_cameras(name: str, radius: float) -> None:
    img = rgb01(DATA / "fundus" / name)
    h, w = img.shape[:2]
    cx, cy, r = find_fundus_disc(img)
    assert abs(cx - w / 2) < 0.08 * w and abs(cy - h / 2) < 0.08 * h
    assert abs(r - radius) < 0.05 * radius  # width-based: the circle is clipped top/bottom


def test_fundus_crop_follows_the_disc_not_the_frame(hrf: np.ndarray) -> None:
    """The same eye placed elsewhere in a bigger black frame gives the same input."""
    moved = np.zeros((hrf.shape[0] + 300, hrf.shape[1] + 400, 3), np.float32)
    moved[200 : 200 + hrf.shape[0], 350 : 350 + hrf.shape[1]] = hrf
    cx0, cy0, r0 = find_fundus_disc(hrf)
    cx1, cy1, r1 = find_fundus_disc(moved)
    assert abs(cx1 - cx0 - 350) < 3 and abs(cy1 - cy0 - 200) < 3 and abs(r1 - r0) < 3
    a, b = fundus_preprocess(hrf, size=128), fundus_preprocess(moved, size=128)
    assert np.abs(a - b).mean() < 0.01


def test_fundus_output_masks_outside_the_disc(hrf: np.ndarray) -> None:
    out = fundus_preprocess(hrf, size=128)
    assert out.shape == (3, 128, 128) and out.dtype == np.float32
    assert np.all(out[:, :4, :4] == 0) and np.all(out[:, -4:, -4:] == 0)
    assert np.abs(out[:, 48:80, 48:80]).mean() > 0.005  # the retina itself is not blank
    assert out.min() >= -1 and out.max() <= 1


def test_router_replicates_grey_and_keeps_colour() -> None:
    grey = np.full((100, 80), 0.5, np.float32)
    out = router_preprocess(grey)
    assert out.shape == (3, 64, 64)
    np.testing.assert_array_equal(out[0], out[2])
    assert np.allclose(out, 0.0, atol=1e-5)  # grey 0.5 is the centre of the scale


def test_spec_dispatch_and_input_contract() -> None:
    img = np.random.default_rng(2).random((90, 70)).astype(np.float32)
    spec = {"function": "cxr_preprocess", "params": {"size": 32}}
    assert preprocess(spec, img).shape == (1, 32, 32)
    with pytest.raises(KeyError, match="unknown preprocessing"):
        preprocess({"function": "os.system", "params": {}}, img)
    with pytest.raises(ValueError, match="HxW"):
        cxr_preprocess(np.zeros((4, 4, 4), np.float32))
    assert set(PREPROCESSORS) == {"cxr_preprocess", "cxr_equalised_preprocess",
                                  "fundus_preprocess", "router_preprocess"}


def test_inference_package_never_imports_torch_or_tensorrt() -> None:
    code = (
        "import sys, appliance.inference.preprocess, appliance.inference.postprocess, "
        "appliance.inference.bundle, appliance.inference.onnx_runner, "
        "appliance.inference.tensorrt_build; "
        "bad = [m for m in ('torch', 'tensorrt') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_fundus_input_does_not_depend_on_camera_resolution() -> None:
    """A 3x larger frame of the same eye (as IDRiD's 4288 px originals are to the
    1429 px copies) gives nearly the same model input: the crop is area-averaged."""
    img = rgb01(DATA / "fundus" / "IDRiD_003.jpg")
    big = cv2.resize(img, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    a, b = fundus_preprocess(img), fundus_preprocess(big)
    assert np.abs(a - b).mean() < 0.25 * np.abs(a).mean()


@pytest.mark.parametrize("name", ["IDRiD_003.jpg", "hrf_07_h.jpg"])
def test_a_retina_photos_field_found_once_gives_the_same_quality_input_and_map(name):
    """Issue 28: the field is found once per photo (fundus_frame) and handed to the
    quality check, the model's preprocessing and the heatmap: each gives exactly what it
    gives when it finds the field itself."""
    from helpers import FUNDUS_DIR

    from appliance.inference.preprocess import find_fundus_disc, fundus_frame, fundus_preprocess
    from appliance.ingest.decode import decode_bytes
    from appliance.screening.quality import measure_fundus

    pixels = decode_bytes((FUNDUS_DIR / name).read_bytes()).pixels
    frame = fundus_frame(pixels)
    assert frame.disc == find_fundus_disc(pixels)
    assert measure_fundus(pixels, frame) == measure_fundus(pixels)
    assert np.array_equal(fundus_preprocess(pixels, 256, frame=frame),
                          fundus_preprocess(pixels, 256))
    # a frame found at another threshold is not used for this one
    other = fundus_frame(pixels, 0.3)
    assert np.array_equal(fundus_preprocess(pixels, 256, frame=other),
                          fundus_preprocess(pixels, 256))


def test_the_brightest_channel_is_numpys_max_over_colours():
    rgb = np.random.default_rng(5).random((37, 53, 3), dtype=np.float32)
    assert np.array_equal(brightest_channel(rgb), rgb.max(axis=2))


def test_the_centred_circle_is_made_once_and_cannot_be_changed():
    circle = centred_circle(64, 0.85)
    assert circle is centred_circle(64, 0.85)
    assert circle[32, 32] and not circle[0, 0]
    with pytest.raises(ValueError):
        circle[0, 0] = True
