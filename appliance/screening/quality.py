"""Fundus photo gradability: what a grader needs, not how bright the photo is.

- **vessels visible**: the depth of the vessels in the green channel (a black top-hat,
  95th percentile over the field), in 8-bit grey levels. A dark, heavily pigmented
  fundus whose vessels still stand out passes; only a photo whose field is nearly black,
  or dim with vessels under about a grey level deep, is "too dark".
- **focus**: fine detail over contrast, a ratio, so dark or grey photos score as bright
  colour ones. The contrast is the retina's own, with the light's slow fall-off taken
  out (the green channel less its blur over 16 px of 512): a small pupil darkens the
  field's edge, and counting that gradient as contrast made a sharp, vignetted photo
  read as blurred. The detail is taken after a 1.5-px blur, below which a JPEG's 8-px
  blocks, not the retina, make the edges: a blurred photo saved as a JPEG no longer
  passes for sharp. (A local version, window by window, was tried so that a sheet of
  lesion would not pass for blur: JPEG blocks in a blurred photo's flat windows then
  passed for detail. A grade-4 eye with a pre-retinal haemorrhage over most of the
  field and hazy media is still refused as blurred: see the quality card.)
- **field**: the retina's circle in the picture (coverage). A circle the picture clips
  evenly on every side (a 30-35 degree camera, a phone adapter) is that camera's
  framing, not an eye off the field: it passes where it is lit.
- **over-exposure**: the share of the field burned out (two channels at their maximum).

Disease never lowers a measure that can refuse: haemorrhages are dark structures and
only deepen the top-hat; exudates are bright and touch no dark measure; the field's
light is its 90th percentile, not its mean. Pure functions on the decoded RGB array
(float32 in [0, 1]); no I/O. The thresholds are measured, not guessed:
``models/quality/calibrate_fundus.py`` computes these measures on real photos from
several cameras and on degraded copies of them (blurred, nearly black, over-exposed,
off the frame) and on copies that must still pass (dark x0.45, gamma, grey, colour
casts, narrow fields), and writes the thresholds, with what they pass and refuse by
copy, DR grade and camera, to ``fundus_quality.json`` beside this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.preprocess import (
    FundusFrame,
    brightest_channel,
    centred_circle,
    crop_disc,
    fundus_frame,
    to_rgb,
)

THRESHOLDS_FILE = Path(__file__).with_name("fundus_quality.json")
FIELD_THRESHOLD = 0.15  # the lit field: this fraction of the 99th percentile
DISC_PX = 512  # measures are taken on the disc resized to this, so any camera compares
# why 15 px: the widest vessels near the optic disc are ~10 px across at 512 px
VESSEL_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
FOCUS_BLUR_PX = 1.5  # below this, JPEG blocks make the edges (see the docstring)
FOCUS_LIGHT_PX = 16.0  # the light's fall-off across the field, taken out of the contrast
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# A shadow's straight edge pulls the fitted circle off the centre too: a lid over 30-40 %
# of the field's height measured 0.20-0.36 radii here, an eye pushed off a square frame
# (whose circle the fit also gets wrong) 0.46-0.52. Further off, "centre the eye".
SHADOW_MAX_OFF_CENTRE = 0.4

# What the nurse reads, per failed check.
MESSAGES = {
    "focus": "Image blurred: clean the lens, focus and retake.",
    "too_dark": "Image too dark: dilate the pupil or increase the flash, and retake.",
    "too_bright": "Image over-exposed: reduce the flash and retake.",
    "coverage": "Retina not fully in the picture: centre the eye and retake.",
    "shadow": "Part of the retina in shadow (eyelid, lashes or a small pupil): ask the "
    "patient to open wide, lift the lid or dilate, and retake.",
}


@dataclass
class FundusQuality:
    measures: dict[str, float]
    failed: list[str] = field(default_factory=list)

    @property
    def gradable(self) -> bool:
        return not self.failed

    @property
    def messages(self) -> list[str]:
        return [MESSAGES[name] for name in self.failed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "gradable": self.gradable,
            "failed": self.failed,
            "messages": self.messages,
            "measures": {k: round(v, 4) for k, v in self.measures.items()},
        }


def measure_fundus(image: np.ndarray, frame: FundusFrame | None = None) -> dict[str, float]:
    """Scale-free quality measures of a fundus photograph (``frame``: its field, found
    once for the photo, preprocess.fundus_frame at the default threshold)."""
    rgb = to_rgb(image)
    if frame is None or frame.threshold != FIELD_THRESHOLD:
        frame = fundus_frame(rgb, FIELD_THRESHOLD)
    cx, cy, radius = frame.disc
    disc = crop_disc(rgb, cx, cy, radius, DISC_PX)

    inner = centred_circle(DISC_PX, 0.85)
    # Where the disc leaves the camera frame (black after the crop) there is no retina
    # to judge: keep only the lit part.
    value = brightest_channel(disc)
    lit = value > 0.15 * max(float(np.percentile(value, 99)), 1e-6)
    coverage, off_centre, filled, held = _field_measures(frame)
    region = inner & lit
    # Erode so the field's own edge (a strong, always-sharp contour) is not counted.
    core = cv2.erode(region.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    if core.sum() < 1000:
        return {
            "coverage": coverage,
            "off_centre": off_centre,
            "field_filled": filled,
            "circle_held": held,
            "focus": 0.0,
            "vessel_contrast": 0.0,
            "field_light": 0.0,
            "brightness": 0.0,
            "burned_out": 0.0,
        }
    luminance = disc @ LUMINANCE
    values = luminance[region]
    green = cv2.GaussianBlur(disc[:, :, 1], (0, 0), FOCUS_BLUR_PX)
    laplacian = cv2.Laplacian(green, cv2.CV_32F, ksize=3)
    retina = green - cv2.GaussianBlur(green, (0, 0), FOCUS_LIGHT_PX)  # the fall-off out
    focus = float(laplacian[core].std()) / (float(retina[core].std()) + 1e-3)
    vessels = cv2.morphologyEx(disc[:, :, 1], cv2.MORPH_BLACKHAT, VESSEL_KERNEL)
    return {
        "coverage": coverage,
        "off_centre": off_centre,
        "field_filled": filled,
        "circle_held": held,
        "focus": focus,
        "vessel_contrast": float(np.percentile(vessels[core], 95)) * 255.0,
        "field_light": float(np.percentile(values, 90)),
        "brightness": float(np.median(values)),  # reported, never judged
        # two channels clipped: white or yellow, burned out (red alone is clipped in
        # many a normal orange fundus)
        "burned_out": float(_two_channels_clipped(disc)[region].mean()),
    }


def _two_channels_clipped(rgb: np.ndarray) -> np.ndarray:
    """H x W: at least two of the three colours at 0.98 or above (channel by channel:
    a sum over a 3-long last axis is many times slower in numpy)."""
    clipped = rgb >= 0.98
    count = clipped[..., 0].astype(np.uint8) + clipped[..., 1] + clipped[..., 2]
    return count >= 2


def _field_measures(frame: FundusFrame) -> tuple[float, float, float, float]:
    """(coverage, off_centre, field_filled, circle_held) of the lit field.

    coverage: lit area over the area of the whole fundus circle. The circle is fitted
    (least squares) to the lit field's outline where it does not touch the picture's
    edge, so it is found even when the camera clips the circle top and bottom and the
    eye is off-centre as well. A clipping camera gives about 0.9; an eye off-centre,
    with retina outside the picture, much less -- and so does a narrow-field (30-35
    degree) camera or a phone adapter whose circle the frame clips on every side.
    off_centre: the circle's centre from the picture's centre, in radii. The camera's
    field stop is centred in its frame: a circle clipped evenly on its sides is how the
    camera frames the retina, one pushed to a side is an eye or a crop off the field.
    field_filled: the lit share of the part of the circle the picture holds.
    circle_held: the share of the circle the picture holds. Where the circle is not all
    lit, its missing part lies outside the picture (1 - circle_held: an eye off the
    field) or inside it, dark (circle_held x (1 - field_filled): a lid or a shadow).
    """
    lit, scale, (cx, cy, radius) = frame.lit, frame.scale, frame.disc
    contours, _ = cv2.findContours(lit, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0, 1.0, 0.0, 0.0
    points = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    sh, sw = lit.shape
    away = (
        (points[:, 0] > 2) & (points[:, 0] < sw - 3) & (points[:, 1] > 2) & (points[:, 1] < sh - 3)
    )
    fit_x, fit_y, fit_radius = cx * scale, cy * scale, radius * scale
    if away.sum() >= 20:
        x, y = points[away, 0], points[away, 1]
        design = np.column_stack([x, y, np.ones_like(x)])
        (d, e, f), *_ = np.linalg.lstsq(design, -(x**2 + y**2), rcond=None)
        squared = (d / 2) ** 2 + (e / 2) ** 2 - f
        if squared > 0 and np.sqrt(squared) > fit_radius:
            fit_x, fit_y, fit_radius = -d / 2, -e / 2, float(np.sqrt(squared))
    fit_radius = max(fit_radius, 1.0)
    lit_area = float(np.count_nonzero(lit))
    coverage = min(1.0, lit_area / (np.pi * fit_radius**2))
    off_centre = float(np.hypot(fit_x - (sw - 1) / 2, fit_y - (sh - 1) / 2)) / fit_radius
    yy, xx = np.ogrid[:sh, :sw]
    circle = (xx - fit_x) ** 2 + (yy - fit_y) ** 2 <= fit_radius**2
    held = int(np.count_nonzero(circle))
    filled = float(np.count_nonzero(circle & (lit > 0))) / held if held else 0.0
    return float(coverage), off_centre, filled, min(1.0, held / (np.pi * fit_radius**2))


@lru_cache(maxsize=1)
def default_thresholds() -> dict[str, float]:
    return json.loads(THRESHOLDS_FILE.read_text())["thresholds"]


def assess(measures: dict[str, float], thresholds: dict[str, float] | None = None) -> FundusQuality:
    t = default_thresholds() if thresholds is None else thresholds
    failed = []
    if measures["coverage"] < t["min_coverage"] and not _framed_by_the_camera(measures, t):
        failed.append("shadow" if _in_shadow(measures) else "coverage")
    if measures["focus"] < t["min_focus"]:
        failed.append("focus")
    # too dark = vessels cannot be seen: a nearly black field, or a field dimmer than any
    # real photo whose vessels are under ~a grey level deep (a dark fundus whose vessels
    # stand out passes)
    light = measures["field_light"]
    if light < t["min_field_light"] or (
        light < t["dim_field_light"] and measures["vessel_contrast"] < t["min_vessel_contrast"]
    ):
        failed.append("too_dark")
    if measures["burned_out"] > t["max_burned_out"]:
        failed.append("too_bright")
    return FundusQuality(measures, failed)


def _framed_by_the_camera(measures: dict[str, float], t: dict[str, float]) -> bool:
    """The circle is clipped evenly by the picture (a narrow-field camera, a phone
    adapter) and lit wherever the picture holds it: the retina is all there to see."""
    return (measures.get("off_centre", 1.0) <= t.get("max_off_centre", 0.0)
            and measures.get("field_filled", 0.0) >= t.get("min_field_filled", 1.1))


def _in_shadow(measures: dict[str, float]) -> bool:
    """The retina missing from the circle lies mostly inside the picture, dark (an eyelid,
    lashes, a small pupil's shadow: open wide, lift the lid), not outside it (an eye off
    the field: centre it). Each retake advice is right for its own case only."""
    held, filled = measures.get("circle_held"), measures.get("field_filled")
    if held is None or filled is None:
        return False
    return (held * (1.0 - filled) > 1.0 - held
            and measures.get("off_centre", 1.0) <= SHADOW_MAX_OFF_CENTRE)


def assess_fundus(
    image: np.ndarray,
    thresholds: dict[str, float] | None = None,
    frame: FundusFrame | None = None,
) -> FundusQuality:
    return assess(measure_fundus(image, frame), thresholds)
