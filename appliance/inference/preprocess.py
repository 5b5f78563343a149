"""Pure pre-processing shared by training and serving (no I/O, no globals that change).

Every function takes the decoder's output, a float32 array in [0, 1] — greyscale ``HxW``
(MONOCHROME1 already inverted, so lungs are dark) or RGB ``HxWx3`` — and returns the
model's input for ONE image as a float32 ``CxHxW`` array. The training scripts in
``models/training`` call these very functions on the training images, so what a model
sees at serve time is what it saw while learning (train/serve skew is a bug).

A bundle's ``manifest.json`` names its function in ``preprocessing.function`` (a key
of :data:`PREPROCESSORS`) with the exact keyword arguments in ``preprocessing.params``;
:func:`preprocess` applies such a spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

_EPS = 1e-6


def _as_float01(image: np.ndarray) -> np.ndarray:
    """Validate the decoder contract and return a contiguous float32 view/copy."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected a HxW or HxWx3 image, got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"image too small: {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_grey(image: np.ndarray) -> np.ndarray:
    """HxW float32 luminance (ITU-R BT.601 weights, as OpenCV and PIL use)."""
    arr = _as_float01(image)
    if arr.ndim == 2:
        return arr
    return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 float32; greyscale is replicated into the three channels."""
    arr = _as_float01(image)
    if arr.ndim == 3:
        return arr
    return np.repeat(arr[:, :, None], 3, axis=2)


def brightest_channel(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's largest colour value (H x W from H x W x 3). Equal to
    ``rgb.max(axis=2)``, which numpy runs ~25x slower over a 3-long last axis (~20 ms
    on a 512-px photo here, issue 28)."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


@lru_cache(maxsize=8)
def centred_circle(size: int, fraction: float) -> np.ndarray:
    """size x size bool, True within ``fraction`` of the half-side from the centre: the
    same for every photo, so made once (read-only)."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2.0
    circle = (xx - centre) ** 2 + (yy - centre) ** 2 <= (fraction * size / 2.0) ** 2
    circle.flags.writeable = False
    return circle


Resized = dict  # (id, size) -> (array, its read-only resized copy): see area_resize


def area_resize(
    image: np.ndarray, size: tuple[int, int], resized: Resized | None = None
) -> np.ndarray:
    """``image`` averaged down to ``size`` (width, height) with INTER_AREA. ``resized``,
    a dict the caller keeps for one image (``DecodedImage.resized``), makes the same
    array at the same size cost once: the router and the adult chest model both squash
    a film to 64 x 64, the thumbnail and the drift measures both take it to 128 px, ~2 ms
    each for a 1000-px film (issue 28). A remembered copy is read-only."""
    if resized is None:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    key = (id(image), size)
    seen = resized.get(key)
    if seen is not None and seen[0] is image:  # the array is held: its id is not reused
        return seen[1]
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small.flags.writeable = False
    resized[key] = (image, small)
    return small


def squash(image: np.ndarray, size: int, resized: Resized | None = None) -> np.ndarray:
    """Resize the whole frame to ``size x size`` ignoring aspect ratio.

    INTER_AREA (pixel averaging) is what a good downscaler does and what reproduces the
    Kermany 64x64 set from full-size radiographs; upscaling (tiny images) uses linear.
    """
    h, w = image.shape[:2]
    if h >= size and w >= size:
        return area_resize(image, (size, size), resized)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def standardise(image: np.ndarray) -> np.ndarray:
    """Per-image zero mean / unit variance: removes exposure and windowing differences
    between the training JPEGs and a DICOM whose VOI the decoder chose."""
    return ((image - image.mean()) / (image.std() + _EPS)).astype(np.float32)


def cxr_preprocess(
    image: np.ndarray, size: int = 64, resized: Resized | None = None
) -> np.ndarray:
    """Chest radiograph -> 1 x size x size: whole radiograph squashed, standardised."""
    grey = squash(to_grey(image), size, resized)
    return standardise(grey)[None]


def equalise(image: np.ndarray) -> np.ndarray:
    """Each pixel replaced by its rank in the image, scaled to [0, 1].

    The output is the same for any monotone change of intensity (exposure, window,
    gamma, a vendor's processing curve), so films from different hospitals reach the
    model on one intensity scale and a model cannot tell sources apart by it.
    """
    flat = image.ravel()
    ranks = np.empty(flat.size, dtype=np.float32)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size, dtype=np.float32)
    return (ranks / max(flat.size - 1, 1)).reshape(image.shape)


def cxr_equalised_preprocess(image: np.ndarray, size: int = 64, detail: int | None = None,
                             resized: Resized | None = None) -> np.ndarray:
    """Adult chest radiograph -> 1 x size x size: whole film squashed to ``size``,
    intensities replaced by their rank (:func:`equalise`), then standardised. With
    ``detail`` below ``size`` the film is squashed to ``detail`` first and brought up to
    ``size``: a larger map, but no film sharper than the softest source trained on."""
    grey = to_grey(image)
    if detail and detail < size:
        grey = squash(grey, detail, resized)
    grey = squash(grey, size, resized)
    return standardise(equalise(grey))[None]


@dataclass(frozen=True)
class FundusFrame:
    """A camera frame looked at once, on a copy of at most 512 px: the lit field (mask,
    opened) and the circular fundus field found in it. Found once per photo and handed
    to the quality check, the model's preprocessing and the heatmap (issue 28)."""

    lit: np.ndarray  # uint8 mask of the lit field on the small copy
    scale: float  # small copy / frame
    disc: tuple[float, float, float]  # (cx, cy, radius) in the frame's pixels
    threshold: float
    light: np.ndarray  # each pixel's brightest colour on the small copy (the lit mask's)


def fundus_frame(image: np.ndarray, threshold: float = 0.15) -> FundusFrame:
    """Locate the circular fundus field in a camera frame (see :func:`find_fundus_disc`)."""
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, 512.0 / max(h, w))  # why: a 512 px copy is plenty to find a disc
    small = cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    value = brightest_channel(small)
    level = threshold * max(float(np.percentile(value, 99)), _EPS)
    mask = (value > level).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:  # nothing bright: fall back to the whole frame
        return FundusFrame(mask, scale, (w / 2.0, h / 2.0, max(h, w) / 2.0), threshold, value)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[best, :4])
    cx, cy = (x + bw / 2.0) / scale, (y + bh / 2.0) / scale
    radius = max(bw, bh) / 2.0 / scale
    return FundusFrame(mask, scale, (cx, cy, radius), threshold, value)


def find_fundus_disc(image: np.ndarray, threshold: float = 0.15) -> tuple[float, float, float]:
    """Locate the circular fundus field in a camera frame: ``(cx, cy, radius)`` in pixels.

    The field is the largest bright blob against the black surround. Many cameras clip
    the circle at the top and bottom of the frame, so the radius is taken from the
    blob's *width* (and its height if that is larger), and the centre from its box.
    ``threshold`` is a fraction of the frame's 99th brightness percentile.
    """
    return fundus_frame(image, threshold).disc


def crop_disc(image: np.ndarray, cx: float, cy: float, radius: float, size: int) -> np.ndarray:
    """Square crop of side 2*radius centred on the disc (black outside the frame),
    resized to ``size`` with pixel averaging.

    Crop-then-``resize(INTER_AREA)`` rather than one affine warp: a warp samples
    (aliases) when shrinking, so a camera's full-resolution frame and its 1/3 copy
    would give different inputs; averaging gives the same one.
    """
    h, w = image.shape[:2]
    side = max(1, int(round(2.0 * radius)))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    crop = image[max(0, y0) : min(h, y0 + side), max(0, x0) : min(w, x0 + side)]
    crop = cv2.copyMakeBorder(
        crop,
        max(0, -y0),
        max(0, y0 + side - h),
        max(0, -x0),
        max(0, x0 + side - w),
        cv2.BORDER_CONSTANT,
        value=(0, 0, 0),
    )
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def fundus_disc(image: np.ndarray, size: int, threshold: float = 0.15,
                frame: FundusFrame | None = None) -> np.ndarray:
    """The camera's circular field, found (or as ``frame`` found it), cropped and
    resized to ``size x size`` RGB."""
    rgb = to_rgb(image)
    if frame is None or frame.threshold != threshold:
        frame = fundus_frame(rgb, threshold)
    cx, cy, radius = frame.disc
    return crop_disc(rgb, cx, cy, radius, size)


def enhance_fundus(
    disc: np.ndarray,
    size: int = 256,
    threshold: float = 0.15,
    blur_fraction: float = 1 / 30,
    gain: float = 4.0,
    mask_fraction: float = 0.92,
) -> np.ndarray:
    """A disc crop (any side, resized here with pixel averaging) -> 3 x size x size.

    Subtract the local average colour (Graham's 2015 Kaggle method): lesions and vessels
    stay, the camera's illumination and colour cast go — the main difference between
    cameras. Outside ``mask_fraction`` of the radius (the bright rim artefact), and
    outside the lit field, the output is the neutral 0. Training inserts camera
    augmentations between :func:`fundus_disc` and this step.
    """
    if disc.shape[0] != size or disc.shape[1] != size:
        interp = cv2.INTER_AREA if disc.shape[0] > size else cv2.INTER_LINEAR
        disc = cv2.resize(disc, (size, size), interpolation=interp)
    blurred = cv2.GaussianBlur(disc, (0, 0), sigmaX=size * blur_fraction)
    enhanced = np.clip(gain * (disc - blurred), -1.0, 1.0)
    inside = centred_circle(size, mask_fraction)
    # why: where the camera clipped the circle, the frame edge is a second rim; keep
    # only the lit field, eroded by the same margin the circle mask leaves.
    value = brightest_channel(disc)
    lit = (value > threshold * max(float(np.percentile(value, 99)), _EPS)).astype(np.uint8)
    margin = max(1, int(round((1.0 - mask_fraction) * size / 2.0)))
    lit = cv2.erode(lit, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    enhanced[~(inside & (lit > 0))] = 0.0
    return np.ascontiguousarray(enhanced.transpose(2, 0, 1), dtype=np.float32)


def fundus_preprocess(
    image: np.ndarray,
    size: int = 256,
    threshold: float = 0.15,
    blur_fraction: float = 1 / 30,
    gain: float = 4.0,
    mask_fraction: float = 0.92,
    frame: FundusFrame | None = None,
) -> np.ndarray:
    """Fundus photograph (any camera) -> 3 x size x size: :func:`fundus_disc` then
    :func:`enhance_fundus`. ``frame``: the field already found (same result, less work)."""
    return enhance_fundus(fundus_disc(image, size, threshold, frame), size, threshold,
                          blur_fraction, gain, mask_fraction)


def router_preprocess(
    image: np.ndarray, size: int = 64, resized: Resized | None = None
) -> np.ndarray:
    """Any image -> 3 x size x size RGB squashed, centred on 0.5 (colour is a cue:
    fundus photos are orange-red, radiographs grey), no per-image normalisation."""
    # Squash first, then replicate grey into RGB: resizing works per channel, so the
    # result is identical, and a 2000x2000 radiograph is not copied three times.
    rgb = to_rgb(squash(_as_float01(image), size, resized))
    return np.ascontiguousarray(((rgb - 0.5) / 0.25).transpose(2, 0, 1), dtype=np.float32)


_SHARE_RESIZES = {"cxr_preprocess", "cxr_equalised_preprocess", "router_preprocess"}
PREPROCESSORS: Mapping[str, Callable[..., np.ndarray]] = {
    "cxr_preprocess": cxr_preprocess,
    "cxr_equalised_preprocess": cxr_equalised_preprocess,
    "fundus_preprocess": fundus_preprocess,
    "router_preprocess": router_preprocess,
}


def preprocess(
    spec: Mapping[str, Any],
    image: np.ndarray,
    frame: FundusFrame | None = None,
    resized: Resized | None = None,
) -> np.ndarray:
    """Apply a manifest's ``preprocessing`` spec to one decoded image (``frame``: a
    retina photo's field, found once for the photo; other preprocessing ignores it;
    ``resized``: the image's shared downscales, see :func:`area_resize`)."""
    name = spec["function"]
    if name not in PREPROCESSORS:
        raise KeyError(f"unknown preprocessing function {name!r}; known: {sorted(PREPROCESSORS)}")
    params = dict(spec.get("params", {}))
    if frame is not None and name == "fundus_preprocess":
        params["frame"] = frame
    if resized is not None and name in _SHARE_RESIZES:
        params["resized"] = resized
    return PREPROCESSORS[name](image, **params)


def preprocess_batch(spec: Mapping[str, Any], images: list[np.ndarray]) -> np.ndarray:
    """Stack several images into an ``N x C x H x W`` batch."""
    return np.stack([preprocess(spec, im) for im in images]).astype(np.float32)
