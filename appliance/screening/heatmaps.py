"""Where the model saw evidence, on the image's own pixels: one code path for the page's
overlay and ``appliance screen --heatmap-dir``'s grey map (pure: arrays in, arrays out).

A map is shown to staff only where the bundle's manifest says its maps passed their
checks (``manifest["heatmap"]["validated"]``, written by ``build/heatmap_checks.py``);
a manifest without that entry is "not validated". Issue 16: a heatmap at chance level
is worse than none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from appliance.inference.postprocess import (
    heat_to_grey,
    heatmap,
    map_shifts,
    shift_averaged_evidence,
    shifted_inputs,
)
from appliance.inference.preprocess import FundusFrame, find_fundus_disc

# Shown (and stored as a hint) instead of the map of a model whose maps are not validated.
HEATMAP_NOT_SHOWN = (
    "Heatmap not shown: this model's maps have not passed their checks (decision support)."
)
# Without a measured scale (an old manifest), a negative result's map is scaled by this
# many logit units, not by its own peak, so faint evidence stays faint.
NEGATIVE_HEAT_SCALE = 4.0
# Overlay opacity where the map is strongest (of 255): the image stays readable.
OVERLAY_MAX_ALPHA = 180
# The page's opacity slider starts here (0..1). With the overlay's own alpha rising as the
# square root of the map, half-strength evidence shows on an orange retina (issue 24: at
# 0.6 and a linear alpha it barely did).
HEATMAP_OPACITY = 0.85


def maps_validated(manifest: Mapping[str, Any]) -> bool:
    """Whether this bundle's heatmaps passed their checks (absent = not validated)."""
    entry = manifest.get("heatmap")
    return isinstance(entry, Mapping) and entry.get("validated") is True


@dataclass(frozen=True)
class HeatSource:
    """What a map is drawn from: the CAM, how to scale it, and where it lies."""

    cam: np.ndarray  # h x w, logit units, of the scored class (or its shift average)
    scale: float | None  # logits shown as 255; None: the map's own peak
    disc: tuple[float, float, float] | None  # fundus: (cx, cy, radius) in image pixels
    validated: bool
    # chest: the exposed film the model saw (top, bottom, left, right), None = the frame
    box: tuple[int, int, int, int] | None = None


def heat_source(
    cam: np.ndarray,
    pixels: np.ndarray,
    manifest: Mapping[str, Any],
    *,
    positive: bool,
    fundus: bool,
    frame: FundusFrame | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> HeatSource:
    cam = np.asarray(cam, np.float32)
    measured = (manifest.get("heatmap") or {}).get("scale_logits")
    if measured:  # 255 = the strongest evidence the model showed on held-out images
        scale: float | None = float(measured)
    else:
        scale = None if positive else max(float(cam.max()), NEGATIVE_HEAT_SCALE)
    disc = None
    if fundus:
        threshold = manifest["preprocessing"]["params"].get("threshold", 0.15)
        found = frame if frame is not None and frame.threshold == threshold else None
        disc = found.disc if found is not None else find_fundus_disc(pixels, threshold)
    return HeatSource(cam, scale, disc, maps_validated(manifest), box)


def heat_on_image(
    source: HeatSource, image_hw: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The map in [0, 1] at ``size`` (width, height), aligned with an image of
    ``image_hw`` (height, width) shown at that size."""
    width, height = size
    if source.disc is None and source.box is None:  # the whole radiograph, squashed
        return heatmap(source.cam, height, width, scale=source.scale)
    if source.disc is None:  # the exposed film only: the map goes back over it
        top, bottom, left, right = source.box
        ky, kx = height / image_hw[0], width / image_hw[1]
        y0, x0 = int(round(top * ky)), int(round(left * kx))
        y1, x1 = max(y0 + 1, int(round(bottom * ky))), max(x0 + 1, int(round(right * kx)))
        heat = np.zeros((height, width), np.float32)
        heat[y0:y1, x0:x1] = heatmap(source.cam, y1 - y0, x1 - x0, scale=source.scale)
        return heat
    # the fundus model saw the disc crop: put its map back where the disc is
    cx, cy, radius = source.disc
    k = width / image_hw[1]
    side = max(1, int(round(2 * radius * k)))
    crop_heat = heatmap(source.cam, side, side, scale=source.scale)
    heat = np.zeros((height, width), np.float32)
    x0, y0 = int(round((cx - radius) * k)), int(round((cy - radius) * k))
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    w = min(width - dx0, side - sx0)
    h = min(height - dy0, side - sy0)
    if w > 0 and h > 0:
        heat[dy0 : dy0 + h, dx0 : dx0 + w] = crop_heat[sy0 : sy0 + h, sx0 : sx0 + w]
    return heat


def grey_map(source: HeatSource, image_hw: tuple[int, int]) -> np.ndarray:
    """8-bit grey map at the image's own height and width (0 none, 255 strongest)."""
    return heat_to_grey(heat_on_image(source, image_hw, (image_hw[1], image_hw[0])))


def overlay(grey: np.ndarray) -> np.ndarray:
    """RGBA overlay coloured from a grey map: warm where the evidence is, transparent
    where there is none."""
    colour = cv2.applyColorMap(grey, cv2.COLORMAP_JET)
    alpha = np.round(np.sqrt(grey.astype(np.float32) / 255.0) * OVERLAY_MAX_ALPHA)
    alpha = alpha.astype(np.uint8)
    return np.dstack([cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), alpha])


def render_overlay(
    source: HeatSource, image_hw: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The page's overlay at ``size`` (width, height): the grey map of that size,
    coloured. The same :func:`heat_on_image` draws ``--heatmap-dir``'s file."""
    return overlay(heat_to_grey(heat_on_image(source, image_hw, size)))


@dataclass(frozen=True)
class MapInput:
    """What a shift-averaged map still needs once the score is known: the model's input
    (C x H x W), the shifts (:func:`map_shifts`) and a call that runs a batch through the
    same model (under its lock) and returns its CAMs (N x h x w)."""

    x: np.ndarray
    shifts: tuple[tuple[int, int], ...]
    cams: Callable[[np.ndarray], np.ndarray]


def map_input(model: Any, x: np.ndarray, manifest: Mapping[str, Any]) -> MapInput | None:
    """The copies a bundle's shown map is averaged over (``manifest["heatmap"]
    ["shift_average_px"]``), or None: a plain map, or one never shown, costs no extra."""
    step = (manifest.get("heatmap") or {}).get("shift_average_px")
    if not step or not maps_validated(manifest):
        return None

    def cams(batch: np.ndarray) -> np.ndarray:
        with model.lock:  # the backend may be swapped (TensorRT ready) between calls
            return model.infer(batch)["cam"][:, 0]

    return MapInput(x, map_shifts(step), cams)


def shift_averaged_source(plain_cam: np.ndarray, pending: MapInput) -> np.ndarray:
    """The shift average at the input's size, from the image's own CAM and its copies'
    (one model call for the copies)."""
    copies = pending.cams(shifted_inputs(pending.x, pending.shifts[1:]))
    return shift_averaged_evidence(np.concatenate([plain_cam[None], copies]),
                                   pending.shifts, *pending.x.shape[1:])


def finish(heat: HeatSource | None, pending: MapInput | None) -> HeatSource | None:
    """The map a result shows: its plain CAM, or its shift average where one is pending."""
    if heat is None or pending is None:
        return heat
    return replace(heat, cam=shift_averaged_source(heat.cam, pending))
