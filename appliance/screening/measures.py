"""What drift monitoring compares from one image to the next: a few plain measures of
the decoded pixels, kept with each result (``results.image_stats``).

Pure function on the decoded array (float32 in [0, 1], grey HxW or RGB HxWx3). Taken
on a small copy, so a 4000 px photo costs what a 64 px one does; the copy's size is
fixed, so measures compare across cameras and machines.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from appliance.inference.preprocess import Resized, area_resize

SMALL_PX = 128  # longest side of the copy the measures are taken on
# Below this contrast (grey standard deviation, about 2.5 of 255 levels) a frame holds
# nothing to screen: a lens cap, an empty exposure, a flat patch. Every 7th retina photo
# of the shared data at 0.3 of its brightness keeps at least 0.036; the three nearly black
# picture patches router 1.2.0 sent to the fundus model have 0.0001-0.0064 (issue 26).
BLANK_CONTRAST = 0.01
LAYOUT = 3  # the image's brightness in a 3 x 3 grid: where light and dark fall


def small_copy(pixels: np.ndarray, resized: Resized | None = None) -> np.ndarray:
    """The image at most ``SMALL_PX`` long (aspect kept), made once per image where
    ``resized`` is its shared downscales: the drift measures, the thumbnail and the film
    border check (film_border.py) all look at this copy."""
    height, width = pixels.shape[:2]
    scale = min(1.0, SMALL_PX / max(height, width))
    small = pixels.astype(np.float32, copy=False)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = area_resize(small, size, resized)
    return small


def grey_of(small: np.ndarray) -> np.ndarray:
    """H x W luminance of a small copy, colour or not."""
    if small.ndim == 3 and small.shape[2] >= 3:
        return cv2.cvtColor(small[..., :3], cv2.COLOR_RGB2GRAY)
    return small[..., 0] if small.ndim == 3 else small  # one channel with a channel axis


def image_measures(pixels: np.ndarray, resized: Resized | None = None) -> dict[str, Any]:
    """Brightness (mean), contrast (standard deviation), the 3 x 3 brightness layout,
    and for a colour photo the mean of each colour (``resized``: the image's shared
    downscales; the thumbnail is the same 128-px copy)."""
    small = small_copy(pixels, resized)
    colour = small.ndim == 3 and small.shape[2] >= 3
    grey = grey_of(small)
    layout = cv2.resize(grey, (LAYOUT, LAYOUT), interpolation=cv2.INTER_AREA)
    measures: dict[str, Any] = {
        "mean": round(float(grey.mean()), 4),
        "contrast": round(float(grey.std()), 4),
        "layout": [round(float(v), 4) for v in layout.ravel()],
    }
    if colour:
        measures["rgb"] = [round(float(small[..., c].mean()), 4) for c in range(3)]
    return measures


def is_blank(measures: dict[str, Any]) -> bool:
    """A frame with (nearly) nothing in it, from :func:`image_measures`."""
    return measures["contrast"] < BLANK_CONTRAST
