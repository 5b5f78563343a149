"""Augmentations for what changes between sites (off-box, training only).

Each function takes a decoded image as the box's decoder gives it (float32 in [0, 1],
grey HxW or RGB HxWx3) and returns one of the same kind, so pre-processing after it is
exactly the serving code. Chest films differ between hospitals in exposure and the
film processing curve, in collimation and crop, in patient position (rotation, AP vs
PA), in sharpness and noise, and in what is burned into or lies on the film (letters,
tubes, wires, ECG electrodes). Fundus photos differ between cameras in colour balance,
illumination and vignetting, focus, resolution and compression.
"""

from __future__ import annotations

import cv2
import numpy as np


def _affine(img: np.ndarray, rng: np.random.Generator, max_angle: float,
            scale: tuple[float, float], shift: float,
            mask: np.ndarray | None = None,
            isotropic: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Rotation with independent x/y scale (films squashed from other aspect ratios);
    ``mask`` (a lesion's box, say) moves with the image. ``isotropic``: one scale for
    both axes, within 5 % of each other, so the range's ends (a film collimated tight
    on every side) are drawn as often as its middle."""
    h, w = img.shape[:2]
    centre = np.array([w / 2, h / 2])
    m = cv2.getRotationMatrix2D(tuple(centre), rng.uniform(-max_angle, max_angle), 1.0)
    if isotropic:
        common = rng.uniform(*scale)
        m[0, :2] *= common * rng.uniform(0.975, 1.025)
        m[1, :2] *= common * rng.uniform(0.975, 1.025)
    else:
        m[0, :2] *= rng.uniform(*scale)
        m[1, :2] *= rng.uniform(*scale)
    m[:, 2] = centre - m[:, :2] @ centre + rng.uniform(-shift, shift, size=2) * (w, h)
    moved = None if mask is None else cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR,
                                                     borderMode=cv2.BORDER_CONSTANT)
    if rng.random() < 0.7:
        return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE), moved
    fill = float(rng.choice([0.0, 1.0]))  # collimator black, or a bright unexposed edge
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill), moved


def _tubes_and_wires(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    out = img.copy()
    step = max(h, w) / 10
    for _ in range(int(rng.integers(1, 4))):
        pts = np.cumsum(rng.normal(0, step, size=(5, 2)), axis=0) + rng.uniform(0, 1, 2) * (w, h)
        cv2.polylines(out, [pts.astype(np.int32).reshape(-1, 1, 2)], False,
                      float(rng.uniform(0.7, 1.0)), thickness=max(1, round(w / 64)),
                      lineType=cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # ECG electrodes
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h * 0.7)))
        cv2.circle(out, centre, max(1, round(w * rng.uniform(0.01, 0.03))),
                   float(rng.uniform(0.8, 1.0)), -1)
    return out


def _burned_in_text(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)  # why: OpenCV draws text on 8-bit images only
    text = "".join(rng.choice(list("LRAPDXPORTABLE0123456789"))
                   for _ in range(int(rng.integers(1, 5))))
    size = w / 110 * rng.uniform(0.6, 1.2)
    x = int(rng.uniform(0.01, 0.1) * w) if rng.random() < 0.5 else int(rng.uniform(0.6, 0.85) * w)
    y = int(rng.uniform(0.08, 0.18) * h) if rng.random() < 0.5 else int(rng.uniform(0.9, 0.99) * h)
    cv2.putText(mask, text, (x, y), cv2.FONT_HERSHEY_PLAIN, size, 255, max(1, round(size)))
    out = img.copy()
    out[mask > 0] = float(rng.uniform(0.8, 1.0))
    return out


def augment_radiograph(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chest film as another hospital might have taken and processed it (no flips:
    the heart's side is anatomy)."""
    return augment_radiograph_with_mask(img, rng)[0]


def augment_radiograph_with_mask(img: np.ndarray, rng: np.random.Generator,
                                 mask: np.ndarray | None = None,
                                 zoom: tuple[float, float] = (0.85, 1.15),
                                 processing: float = 0.0,
                                 processing_strength: tuple[float, float] = (0.6, 1.2),
                                 isotropic: bool = False, shift: float = 0.06,
                                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`augment_radiograph`, and ``mask`` moved with the film's geometry
    (``zoom``: the range of scales, each axis on its own; above 1 the film is framed
    tighter, below 1 looser with a border; ``processing``: the share of films given a
    vendor's multiscale processing as well, :func:`vendor_processing`, its flattening
    and enhancement drawn up to ``processing_strength``; ``isotropic`` and ``shift``: see
    :func:`_affine`, shift as a share of the film)."""
    out, mask = _affine(img, rng, 10, zoom, shift, mask, isotropic)
    out = np.clip(out, 0, 1)
    out = out ** rng.uniform(0.6, 1.6)  # processing curve
    lo, hi = rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)
    if rng.random() < 0.5:  # harder window
        out = np.clip((out - lo) / (hi - lo), 0, 1)
    else:  # flatter film
        out = lo + out * (hi - lo)
    if rng.random() < 0.3:  # edge enhancement of some CR/DR processing
        blurred = cv2.GaussianBlur(out, (0, 0), out.shape[1] / 32)
        out = np.clip(out + rng.uniform(0.2, 1.0) * (out - blurred), 0, 1)
    if processing and rng.random() < processing:
        flatten, enhance = processing_strength
        out = vendor_processing(out, rng.uniform(0, flatten), rng.uniform(0, enhance))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.9) * out.shape[1] / 64)
    if rng.random() < 0.3:
        out = np.clip(out + rng.normal(0, rng.uniform(0.005, 0.03), out.shape), 0, 1)
    if rng.random() < 0.3:
        out = _tubes_and_wires(out, rng)
    if rng.random() < 0.3:
        out = _burned_in_text(out, rng)
    return np.ascontiguousarray(out, dtype=np.float32), mask


def vendor_processing(film: np.ndarray, flatten: float, enhance: float) -> np.ndarray:
    """A DR/CR vendor's multiscale processing, roughly: the large-scale shading flattened
    (lungs against mediastinum, over 1/8 of the film) by ``flatten`` and the fine
    structure over 1/32 of it enhanced by ``enhance``. Hospitals differ in it more than
    in anything a monotone curve does (which rank equalisation already takes out)."""
    large = cv2.GaussianBlur(film, (0, 0), film.shape[1] / 8)
    out = film - flatten * (large - float(large.mean()))
    fine = cv2.GaussianBlur(out, (0, 0), film.shape[1] / 32)
    return np.clip(out + enhance * (out - fine), 0, 1).astype(np.float32)


def augment_camera(img: np.ndarray, rng: np.random.Generator,
                   strength: float = 1.0) -> np.ndarray:
    """A fundus photo (or its disc crop) as another camera might have taken it."""
    h, w = img.shape[:2]
    out = img * rng.uniform(1 - 0.25 * strength, 1 + 0.25 * strength, size=3)  # white balance
    out = np.clip(out, 0, 1) ** rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength, size=3)
    out = out * rng.uniform(1 - 0.5 * strength, 1 + 0.3 * strength)           # exposure
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    field = 1 + strength * (rng.uniform(-0.4, 0.4) * xx + rng.uniform(-0.4, 0.4) * yy)
    field *= 1 - strength * rng.uniform(0, 0.8) * (xx ** 2 + yy ** 2) / 0.25     # vignetting
    out = out * np.clip(field, 0.2, 2)[..., None]
    if rng.random() < 0.4:  # focus
        out = cv2.GaussianBlur(out.astype(np.float32), (0, 0),
                               rng.uniform(0.3, 1.5 * strength) * w / 512)
    if rng.random() < 0.4:  # a lower-resolution sensor
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(out.astype(np.float32), (max(8, int(w * f)), max(8, int(h * f))),
                           interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(0.003, 0.02), out.shape)
    out = np.clip(out, 0, 1).astype(np.float32)
    if rng.random() < 0.3:
        ok, encoded = cv2.imencode(".jpg", (out * 255).astype(np.uint8),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 90))])
        out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
    return np.ascontiguousarray(out, dtype=np.float32)


# Fixed "other cameras" for the out-of-source check: each turns an IDRiD photo into what
# a differently built camera might have produced. They are applied to the whole frame,
# before the box's own disc finding, and are never used in training.
CAMERA_PROFILES = {
    "red cast, strong vignetting (Canon-like)": dict(gain=(1.25, 0.8, 0.75), gamma=1.0,
                                                     exposure=1.0, vignette=0.7),
    "dark and soft focus": dict(gain=(1, 1, 1), gamma=1.2, exposure=0.45, vignette=0.3,
                                blur=1.2),
    "low resolution, heavy JPEG": dict(gain=(1, 1, 1), gamma=1.0, exposure=1.0, vignette=0.0,
                                       downscale=0.4, jpeg=50),
    "green cast, uneven light": dict(gain=(0.85, 1.15, 1.1), gamma=0.8, exposure=1.1,
                                     vignette=0.0, gradient=0.35),
}


def as_camera(img: np.ndarray, profile: dict) -> np.ndarray:
    """Deterministic camera change (see :data:`CAMERA_PROFILES`)."""
    h, w = img.shape[:2]
    out = np.clip(img * np.array(profile["gain"]), 0, 1) ** profile["gamma"]
    out = out * profile["exposure"]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    field = (1 + profile.get("gradient", 0.0) * (xx + yy))
    field *= 1 - profile["vignette"] * (xx ** 2 + yy ** 2) / 0.25
    out = (out * np.clip(field, 0.2, 2)[..., None]).astype(np.float32)
    if profile.get("blur"):
        out = cv2.GaussianBlur(out, (0, 0), profile["blur"] * w / 512)
    if profile.get("downscale"):
        f = profile["downscale"]
        small = cv2.resize(out, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.clip(out, 0, 1).astype(np.float32)
    if profile.get("jpeg"):
        ok, encoded = cv2.imencode(".jpg", (out * 255).astype(np.uint8),
                                   [cv2.IMWRITE_JPEG_QUALITY, profile["jpeg"]])
        out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
    return np.ascontiguousarray(out, dtype=np.float32)
