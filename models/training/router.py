"""Modality / fitness router: chest radiograph, fundus photograph, or something else.

All real images, from every source there is: children's films (Kermany), adults' PA and
AP films (NIH) and a full-size adult CR (RG1); fundus photos from four cameras (IDRiD's
Kowa, HRF's Canon, CHASE_DB1's hand-held Nidek, the Wikimedia/scikit-image pair); and
for "other" every decodable non-chest object in pydicom-data and pydicom's test files
(extremity CR, CT, MR, ultrasound, secondary captures, ...) and scikit-image's sample
photographs (people, animals, printed pages, text, textures, microscopy, space), these
under the retina photos' colour modes (grey, casts, darkening). Scikit-image's 200 LFW
faces are held out of training: they check that no face reaches the fundus model.

Near-identical images across sources are dropped by perceptual hash before anything is
split. The cross-fitting folds hold out whole *sources*, so every out-of-fold score is
an image from a source its member never saw; the refusal threshold is derived from
those (``build/routing.py``).
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from appliance.inference.preprocess import find_fundus_disc, router_preprocess, to_rgb
from models.training.augment import augment_camera, augment_radiograph
from models.training.cxr import KERMANY, NIH, kermany, nih_adults
from models.training.data import dicom_frames01, fundus_files, fundus_other_files, read_image01
from models.training.fundus import IDRID, OTHER_CAMERAS
from models.training.nets import CamNet
from models.training.recipe import EvalSet, Prepared
from models.training.train import TrainConfig

CHEST, FUNDUS, OTHER = 0, 1, 2
# Never "other": fundus crops among scikit-image's samples (retina.jpg is the same photo
# as fundus/other/skimage_retina.jpg; the perceptual hash would catch it too).
SKIMAGE_SKIP = {"retina.jpg", "microaneurysms.png"}
# Faces filling the frame, cut from scikit-image's photos (fractions of height and width:
# y0, y1, x0, x1); kept under their photo's source, so they share its fold. The LFW
# faces are never trained on: they are the held-out check (held_out_faces).
FACE_CROPS = {"astronaut.png": (0.10, 0.36, 0.32, 0.58), "camera.png": (0.13, 0.34, 0.37, 0.58),
              "chelsea.png": (0.05, 0.75, 0.22, 0.75)}
# Sources per fold: whole sources are held out together. Each fold holds one big
# chest or fundus source and a share of the "other" families.
SCREENED_FOLDS = {"kermany": 0, "nih": 1, "idrid": 2, "dicom:RG1": 3, "hrf": 3,
                  "chase": 4, "wikimedia": 4}
FOLDS = 5
STORE_SIDE = 256  # why: sources are kept at <=256 px; the router only looks at 64 px


def _shrink(img: np.ndarray, side: int = STORE_SIDE) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return img.astype(np.float32)
    return cv2.resize(img, (max(2, round(w * s)), max(2, round(h * s))),
                      interpolation=cv2.INTER_AREA).astype(np.float32)


def _dicom_family(stem: str) -> str:
    return re.match(r"[A-Za-z0-9-]+", stem).group(0)  # "RG3_UNCR" -> "RG3"


def dhash_bits(img: np.ndarray, side: int = 16) -> np.ndarray:
    """Difference hash of the grey image (``side``² bits, as booleans): near-identical
    pictures (re-encoded, resized, recompressed) get hashes a few bits apart.

    256 bits rather than the usual 64: at 8x8 every chest film and every fundus photo
    looks alike (a dark frame around a bright field), and different photos from
    different cameras came out 0-6 bits apart; at 16x16 they are at least 14 apart.
    """
    grey = img if img.ndim == 2 else img.mean(axis=2)
    small = cv2.resize(grey.astype(np.float32), (side + 1, side), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def drop_cross_source_duplicates(items: list[tuple[str, int, np.ndarray]], log: Any,
                                 max_bits: int = 8) -> list[tuple[str, int, np.ndarray]]:
    """Keep the first of any two images from different sources whose hashes differ in at
    most ``max_bits`` bits (the same photo shipped by two packages must not sit on both
    sides of a held-out split)."""
    keep = unique_across_sources(items, log, max_bits)
    return [item for item, k in zip(items, keep, strict=True) if k]


def unique_across_sources(items: list[tuple[str, int, np.ndarray]], log: Any,
                          max_bits: int = 8) -> np.ndarray:
    """Which items :func:`drop_cross_source_duplicates` keeps (a boolean mask)."""
    bits = np.stack([dhash_bits(img) for _, _, img in items]).astype(np.float32)
    ones = bits.sum(axis=1)
    distance = ones[:, None] + ones[None, :] - 2 * bits @ bits.T  # Hamming, all pairs
    sources = np.array([s for s, _, _ in items])
    close = (distance <= max_bits) & (sources[:, None] != sources[None, :])
    keep = np.ones(len(items), bool)
    for j in np.flatnonzero(close.any(axis=0)):
        earlier = np.flatnonzero(close[:j, j] & keep[:j])
        if earlier.size:
            keep[j] = False
            log(f"  router: dropped a near-duplicate of {sources[earlier[0]]} from {sources[j]}")
    return keep


def other_sources(log: Any) -> list[tuple[str, np.ndarray]]:
    """(source, image) for every real non-chest, non-fundus image installed locally."""
    import pydicom.data
    import skimage

    dicom_dirs = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        dicom_dirs.append(Path(pydicom.data.get_testdata_file("RG3_UNCR.dcm")).parent)
    except Exception:  # pydicom-data absent: train on what there is  # noqa: BLE001
        log("  router: pydicom-data not installed; fewer 'other' radiographs")
    seen: set[str] = set()
    out: list[tuple[str, np.ndarray]] = []
    for folder in dicom_dirs:
        for path in sorted(folder.glob("*.dcm")):
            if path.name.startswith("RG1"):  # the adult chest CR: a chest source
                continue
            try:
                frames = dicom_frames01(path)
            except Exception:  # noqa: BLE001 — broken/undecodable test objects are expected
                continue
            for f in frames:
                key = hashlib.sha1(np.round(_shrink(f, 32), 2).tobytes()).hexdigest()
                if key not in seen:  # why: the same pixels in many transfer syntaxes
                    seen.add(key)
                    out.append((f"dicom:{_dicom_family(path.stem)}", _shrink(f)))
    sk_dir = Path(skimage.__file__).parent / "data"
    for path in sorted([*sk_dir.glob("*.png"), *sk_dir.glob("*.jpg")]):
        if path.name in SKIMAGE_SKIP:
            continue
        out.append((f"skimage:{path.stem.split('_')[0]}", _shrink(read_image01(path))))
    for name, (y0, y1, x0, x1) in FACE_CROPS.items():  # faces filling the frame
        img = read_image01(sk_dir / name)
        h, w = img.shape[:2]
        crop = img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
        out.append((f"skimage:{Path(name).stem.split('_')[0]}", _shrink(crop)))
    return out


def held_out_faces() -> list[tuple[str, np.ndarray]]:
    """scikit-image's 200 small grey faces (an LFW subset, 25x25): never trained on, so
    "a face never reaches the fundus model" is checked on faces the router never saw."""
    import skimage

    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    return [(f"skimage:lfw-{'a' if i % 2 == 0 else 'b'}", face.astype(np.float32))
            for i, face in enumerate(faces)]


def augment_any(img: np.ndarray, rng: np.random.Generator, min_area: float,
                free_orientation: bool, max_area: float = 1.0) -> np.ndarray:
    """Random crop (aspect jitter), flips, exposure; rotations for non-anatomical images."""
    h, w = img.shape[:2]
    area = rng.uniform(min_area, max_area)
    aspect = np.exp(rng.uniform(-0.3, 0.3))
    ch = int(np.clip(round(h * np.sqrt(area / aspect)), 2, h))
    cw = int(np.clip(round(w * np.sqrt(area * aspect)), 2, w))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if free_orientation:
        out = np.rot90(out, int(rng.integers(0, 4)))
        if out.ndim == 2 and rng.random() < 0.3:
            out = 1.0 - out
    out = np.clip(out * rng.uniform(0.8, 1.2), 0, 1) ** rng.uniform(0.7, 1.4)
    return np.ascontiguousarray(out, dtype=np.float32)


def augment_fundus_frame(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another camera's frame (1.1.0): the field a different size in the frame (black
    margins, or a circle clipped at top and bottom), darker or differently pigmented
    retinas, another colour balance, vignetting, focus."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:  # more black around the field
        pad = int(rng.uniform(0, 0.25) * max(h, w))
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    else:  # field clipped by the frame
        cut = int(rng.uniform(0, 0.12) * h)
        img = img[cut:h - cut] if h - 2 * cut > 8 else img
    out = augment_camera(img, rng, strength=1.5)
    if rng.random() < 0.5:
        out = out * rng.uniform(0.35, 1.0)  # dark, heavily pigmented or small-pupil photos
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32)


def inside_field(img: np.ndarray, fill: float = 0.95, aspect: float = 4 / 3,
                 shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The retina filling the whole frame, no black at all (a camera that crops to a
    rectangle, a smartphone adapter, a narrow field): a rectangle of width/height
    ``aspect`` whose half-diagonal is ``fill`` times the field's radius, its centre
    moved by ``shift`` (fractions of the radius)."""
    cx, cy, radius = find_fundus_disc(img)
    half_h = fill * radius / np.sqrt(1.0 + aspect ** 2)
    half_w = half_h * aspect
    cx, cy = cx + shift[0] * radius, cy + shift[1] * radius
    h, w = img.shape[:2]
    y0, y1 = int(max(0, cy - half_h)), int(min(h, cy + half_h))
    x0, x1 = int(max(0, cx - half_w)), int(min(w, cx + half_w))
    if y1 - y0 < 8 or x1 - x0 < 8:  # no field found: the frame as it is
        return img
    return img[y0:y1, x0:x1]


# Share of retina photos trained filling the frame (1.3.0). 1.2.0's narrow-field zoom
# seldom removed all the black (3 in 100 of IDRiD's crops), and a held-out camera's photo
# with none was refused as "not a retina" (0 of 413 IDRiD photos routed).
FRAME_FILLING = 0.2


def _field_of_view(img: np.ndarray, rng: np.random.Generator,
                   frame_filling: float = FRAME_FILLING) -> np.ndarray:
    """A 35-50 degree camera: the same retina with the circle filling more of the frame
    (a centred crop of the field, clipped by the frame, or filling it with no black),
    or more black around it."""
    h, w = img.shape[:2]
    # why the guard: with none, 1.2.0's random stream (and its LOSO rows) is unchanged
    if frame_filling and rng.random() < frame_filling:  # the field fills the frame
        aspect = rng.uniform(1.0, 1.8)
        return inside_field(img, rng.uniform(0.7, 1.05),
                            aspect if rng.random() < 0.8 else 1 / aspect,
                            (rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)))
    roll = rng.random()
    if roll < 0.35:  # narrower field: zoom into the circle
        side = rng.uniform(0.6, 0.95)
        ch, cw = max(8, int(h * side)), max(8, int(w * side))
        y0 = int((h - ch) / 2 + rng.uniform(-0.05, 0.05) * h)
        x0 = int((w - cw) / 2 + rng.uniform(-0.05, 0.05) * w)
        y0, x0 = int(np.clip(y0, 0, h - ch)), int(np.clip(x0, 0, w - cw))
        return img[y0:y0 + ch, x0:x0 + cw]
    if roll < 0.65:  # more black around the field
        pad = int(rng.uniform(0, 0.3) * max(h, w))
        return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    cut = int(rng.uniform(0, 0.15) * h)  # circle clipped top and bottom
    return img[cut:h - cut] if h - 2 * cut > 8 else img


# Colour casts of real cameras and fundi: (R, G, B) gain ranges. Orange and red are
# heavily pigmented or tungsten-lit fundi, green a cyan-cast sensor; grey (a red-free or
# monochrome capture) is drawn separately.
CASTS = {
    "orange": ((1.0, 1.3), (0.55, 0.85), (0.25, 0.6)),
    "red": ((1.0, 1.4), (0.3, 0.6), (0.15, 0.45)),
    "green": ((0.45, 0.85), (0.95, 1.25), (0.5, 0.95)),
    "blue-grey": ((0.7, 0.95), (0.85, 1.1), (0.85, 1.2)),
}


def _cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    roll = rng.random()
    if img.ndim == 2 or roll < 0.2:  # grey: luminance, or the green channel (red-free)
        grey = img if img.ndim == 2 else (
            img[..., 1] if rng.random() < 0.4 else img @ np.float32([0.299, 0.587, 0.114]))
        return np.repeat(grey[..., None], 3, axis=2) if rng.random() < 0.7 else grey
    if roll < 0.6:
        ranges = CASTS[str(rng.choice(list(CASTS)))]
        return img * np.array([rng.uniform(*r) for r in ranges], np.float32)
    return img


def _pupil(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small pupil and vignetting: light falling off towards the edge of the field, the
    centre of the fall-off off-axis."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2 * (1 + rng.uniform(-0.2, 0.2)), w / 2 * (1 + rng.uniform(-0.2, 0.2))
    radius = np.sqrt(((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2)
    edge = rng.uniform(0.9, 1.5)
    gain = np.clip(edge - rng.uniform(0.5, 1.2) * radius, 0.05, 1).astype(np.float32)
    return img * (gain if img.ndim == 2 else gain[..., None])


def add_lesions(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """More disease on a retina: clusters of hard exudates (yellow-white spots, now and
    then a plaque) and blot haemorrhages (dark red spots), soft-edged. Measured and not
    shipped (build/loso.py's "lesions" choice): the IDRiD photos filling the frame that
    1.3.0 refuses are all macular oedema with large exudate plaques, but trained with
    these spots on 30 % of retina photos the router refused 33.7 % of them, not 3.8 %."""
    rgb = to_rgb(img)
    h, w = rgb.shape[:2]
    side = min(h, w)
    bright, dark = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        spread = rng.uniform(0.03, 0.15) * side
        layer = bright if rng.random() < 0.75 else dark
        for _ in range(int(rng.integers(3, 30))):
            big = rng.random() < 0.1
            radius = rng.uniform(0.03, 0.12) if big else rng.uniform(0.004, 0.02)
            y, x = rng.normal(cy, spread), rng.normal(cx, spread)
            cv2.circle(layer, (int(x), int(y)), max(1, int(radius * side)), 1.0, -1)
    soft = max(0.5, 0.004 * side)
    bright = cv2.GaussianBlur(bright, (0, 0), soft)[..., None] * rng.uniform(0.6, 1.0)
    dark = cv2.GaussianBlur(dark, (0, 0), soft)[..., None] * rng.uniform(0.4, 0.8)
    exudate = np.float32([rng.uniform(0.9, 1.0), rng.uniform(0.75, 0.95), rng.uniform(0.3, 0.6)])
    out = rgb * (1 - bright) + exudate * bright
    return out * (1 - dark * np.float32([0.5, 0.8, 0.8]))


def augment_retina(img: np.ndarray, rng: np.random.Generator,
                   frame_filling: float = FRAME_FILLING, lesions: float = 0.0) -> np.ndarray:
    """A retina photo from any camera and any patient (1.2.0): field of view (1.3.0:
    ``frame_filling`` of them fill the frame with no black; ``lesions`` of them given
    more exudates and haemorrhages, none in 1.3.0), colour
    cast (orange, red, green, grey), dark or pigmented fundus (x0.3-0.6, gamma), small
    pupil and vignetting, then the camera's balance, focus, resolution, noise and JPEG
    (``augment_camera``)."""
    out = _field_of_view(img, rng, frame_filling)
    if lesions and rng.random() < lesions:  # (none: 1.2.0's random stream)
        out = add_lesions(out, rng)
    if rng.random() < 0.5:
        out = _pupil(out, rng)
    out = augment_camera(np.clip(out, 0, 1), rng, strength=1.2)
    out = _cast(out, rng)
    if rng.random() < 0.5:
        out = np.clip(out, 0, 1) ** rng.uniform(1.0, 2.2) * rng.uniform(0.3, 0.6)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32)


PHOTO_VIGNETTE, PHOTO_APERTURE = 0.25, 0.0
PHOTO_PATCH = 0.2  # share of "other" pictures cut to a small patch (1.3.0)


def _aperture(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The picture seen through a round opening: black around a disc or an ellipse."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ry, rx = h / 2 * rng.uniform(0.75, 1.1), w / 2 * rng.uniform(0.75, 1.1)
    inside = (((yy - h / 2) / ry) ** 2 + ((xx - w / 2) / rx) ** 2 <= 1).astype(np.float32)
    return img * (inside if img.ndim == 2 else inside[..., None])


def augment_other(img: np.ndarray, rng: np.random.Generator,
                  patch_share: float = PHOTO_PATCH) -> np.ndarray:
    """A face, photo, page or non-chest scan under the same colour modes as the retina
    photos (1.2.0): grey, the same casts, the same darkening and vignetting, and now and
    then seen through a round opening, so that neither grey, nor a cast, nor a dark
    picture, nor a bright disc on black is by itself evidence of a retina."""
    # why a small patch: a retina filling the frame, grey and dark, is a smooth grey
    # rectangle at 64 px; without featureless patches of walls and sky as "other", 1.3.0's
    # first build sent 6 of LFW's 100 held-out background patches to the fundus model
    if patch_share and rng.random() < patch_share:  # (none: 1.2.0's random stream)
        out = augment_any(img, rng, 0.005, True, max_area=0.05)
    else:
        out = augment_any(img, rng, 0.2, True)
    if rng.random() < PHOTO_VIGNETTE:
        out = _pupil(out, rng)
    out = _cast(np.clip(out, 0, 1), rng)
    if rng.random() < 0.5:
        out = np.clip(out, 0, 1) ** rng.uniform(1.0, 2.2) * rng.uniform(0.3, 0.6)
    if rng.random() < PHOTO_APERTURE:
        out = _aperture(out, rng)
    if rng.random() < 0.3:  # a small picture blown up (a 25 px face, a thumbnail)
        h, w = out.shape[:2]
        s = rng.uniform(16, 48) / max(h, w)
        if s < 1:
            out = cv2.resize(out, (max(2, round(w * s)), max(2, round(h * s))),
                             interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32)


# Fixed shifts of held-out retina photos, scored out-of-fold: the refusal threshold must
# hold on each of them as on the photos as they are (build/routing.py).
def _vignette(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    return img * np.clip(1.25 - 0.9 * radius, 0.15, 1)[..., None].astype(np.float32)


def _zoom(img: np.ndarray, side: float = 0.75) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(h * side), int(w * side)
    return img[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]


RETINA_SHIFTS = {
    "dark x0.45": lambda im: im * 0.45,
    "dark gamma 1.8 x0.6": lambda im: np.clip(im, 0, 1) ** 1.8 * 0.6,
    "grey": lambda im: np.repeat((im @ np.float32([0.299, 0.587, 0.114]))[..., None], 3, 2),
    "green cast": lambda im: im * np.float32([0.6, 1.15, 0.7]),
    "orange cast": lambda im: im * np.float32([1.2, 0.7, 0.4]),
    "vignette": _vignette,
    "35 degree field": _zoom,
    "filling the frame": inside_field,
}


def idrid_grades(data_root: Path) -> dict[str, int]:
    """IDRiD photo name -> DR grade (0-4)."""
    with open(Path(data_root) / "fundus" / "idrid" / "labels.csv", newline="") as fh:
        return {Path(r["file"]).name: int(r["dr_grade"]) for r in csv.DictReader(fh)}


class RouterRecipe:
    name = "modality-router"
    version = "1.3.0"
    task = "3-class routing: chest radiograph / fundus photograph / other (refuse)"
    modality = "any"
    loso = "router"  # build/loso.py --model router
    labels = ["chest_xray", "fundus_photo", "other"]
    screened_labels = ["chest_xray", "fundus_photo"]
    # the threshold may cost each held-out chest or fundus source at most this share of
    # the images its argmax routes correctly
    max_threshold_loss = 0.02
    num_outputs = 3
    serving_heads = None
    input_shape = (3, 64, 64)
    preprocessing = {"function": "router_preprocess", "params": {"size": 64}}
    train_config = TrainConfig(epochs=10, batch_size=64, lr=3e-3, samples_per_epoch=3072,
                               label_smoothing=0.05)
    provenance = {
        "training_data": [
            KERMANY, NIH, IDRID, OTHER_CAMERAS,
            {"dataset": "pydicom-data (NEMA WG04: RG1 adult chest CR, RG3 extremity CR, MR, "
                        "US...) and pydicom test files; scikit-image sample images",
             "licence": "MIT / BSD-3-Clause (package licences; see each package)"},
        ],
        "validation": "5 folds that hold out whole sources: kermany | nih | idrid | RG1 + "
                      "hrf | chase + wikimedia, each with a share of the 'other' families; "
                      "every out-of-fold score is from a source its member never saw; "
                      "scikit-image's 200 LFW faces are never trained on. The "
                      "held-out retina photos are also scored shifted (dark, grey, casts, "
                      "vignette, 35 degree field, filling the frame) and IDRiD's by DR "
                      "grade; the refusal threshold must hold on each of these",
    }
    population = "any image that reaches the box: it decides which model, if any, screens it"
    never_shown = [
        "Chest films from Africa or South Asia, TB films, ICU films other than NIH's AP "
        "portables.",
        "Fundus cameras other than Kowa, Canon CR-1, Nidek NM-200-D and one unknown: no "
        "hand-held or smartphone-adapter photo, no ultra-wide field, no real red-free or "
        "monochrome capture (grey, casts, dark fundi and narrow fields are simulated from "
        "these photos).",
        "Retinal disease beyond IDRiD's DR grades and HRF's glaucoma and DR: no laser "
        "scars beyond what IDRiD holds, no OCT-confirmed macular oedema set, no "
        "retinopathy of prematurity, no retinal detachment.",
        "Heavily pigmented fundi only as darkened and orange/red-cast copies, not as "
        "photos of African or South Asian patients other than IDRiD's.",
        "Non-medical photographs beyond scikit-image's samples (three faces cut from "
        "them); documents beyond two printed pages. Scikit-image's 200 small LFW faces "
        "are kept for the check only.",
        "Non-chest radiographs other than one extremity CR (RG3).",
    ]
    limitations = [
        "'Other' is learned from a few dozen real sources only; an unusual image (e.g. a "
        "photo of an X-ray film on a light box) may be routed wrongly. The box also uses "
        "DICOM metadata (modality, body part) where it has it.",
        "The only non-chest radiograph available (RG3, an extremity) is always in "
        "training, so 'wrong body part' radiographs are not checked on held-out data.",
    ]
    targets = {"chest_sources_refused_at_most": 0.05, "fundus_sources_refused_at_most": 0.10}
    card = """## Choices and why

- **1.3.0: a retina that fills the frame is a retina.** 1.2.0 refused IDRiD photos
  cropped to a rectangle inside their field (no black at all: a camera that crops its
  frame, a smartphone adapter, a narrow field) as "not a chest X-ray or a retina
  photograph": 61.5 % of them through `appliance screen` (`bench/fundus_shifts.py`), and
  its held-out members routed none. Its narrow-field zoom seldom removed all of a
  source's black corners. A fifth of the retina photos are now trained filling the frame
  (a rectangle of aspect 1-1.8, either way up, whose half-diagonal is 0.7-1.05 of the
  field's radius, off-centre by up to a tenth), and "filling the frame" joins the shifts
  the "cannot tell" threshold must hold on (out-of-fold below: IDRiD 0.995, other cameras
  0.80 routed).
- **1.3.0: small featureless patches are "other".** The first 1.3.0 build sent 6 of
  LFW's 100 held-out background patches (25-px dark grey squares) to the fundus model: a
  grey, dark retina filling the frame is a smooth grey rectangle at 64 px. A fifth of the
  faces, photos, pages and scans are now cut to a small patch (0.5-5 % of the picture:
  walls, sky, fur). Two patches still pass (1.2.0: none past the blank check); the
  quality check refuses both, and no held-out face reaches the fundus model.
- **Measured, not shipped: more disease on the retina photos.** The IDRiD photos filling
  the frame that 1.3.0 still refuses (4 of 104 through `bench/fundus_shifts.py`) are all
  referable eyes with macular oedema and large exudate plaques. A variant drew clusters
  of yellow-white exudates (now and then a plaque) and dark red blots on 30 % of the
  retina photos (`add_lesions`). Built as a whole bundle, it refused 33.7 % of the
  frame-filling photos (referable 34.3 %, others 32.4 %; AUC with refused photos lowest
  0.674), against 3.8 % (0.882); out-of-fold, IDRiD filling the frame 0.886 against
  0.995. Its leave-one-source-out rows are in the table's source JSON.
- **The 1.3.0 choices, leave-one-source-out** (`build/loso.py --model router --epochs 8`,
  seeds 0 and 1; one member per held-out source; share routed at 0.6). 1.2.0's rows
  reproduce exactly at seed 0.

  | held-out | shift | 1.2.0 (seed 0) | a fifth fill | two fifths fill | **+ patches (1.3.0)** |
  | --- | --- | --- | --- | --- | --- |
  | other cameras (15) | filling the frame | 0.00 | 0.20, 1.00 | 0.87, 0.20 | 0.93, 0.27 |
  | other cameras | 35 degree field | 0.07 | 0.33, 1.00 | 0.80, 0.27 | 0.93, 0.33 |
  | other cameras | grey | 0.87 | 0.80, 0.80 | 0.47, 0.67 | 0.60, 0.87 |
  | IDRiD (413) | filling the frame | 0.00 | 0.87, 0.31 | 0.25, 0.85 | 0.48, 0.37 |
  | IDRiD | grey | 0.92 | 0.89, 0.94 | 0.81, 0.73 | 0.97, 0.48 |
  | NIH (682) | as taken | 0.997 | 0.994, 0.985 | 0.984, 0.994 | 0.985, 0.987 |
  | LFW faces to fundus | (3 members) | 0.02-0.06 | 0.01-0.08 | 0.02-0.09 | 0.00-0.03 |

  One member's figures move that much between seeds (IDRiD's member trains on 15
  photos of other cameras only): every 1.3.0 choice routes frame-filling photos where
  1.2.0 routed none, and the patches cost grey copies on one seed of each held-out
  source. The shipped ensemble averages five members; its out-of-fold rows are below.
- **1.2.0 (rebuilt in place before release): grey is not a retina cue.** The first 1.2.0
  build greyed and cast only the retina photos, so "grey" became retina evidence: 27 of
  scikit-image's 200 small grey faces went to the fundus model at its threshold (1.1.0:
  none), and its grey held-out retina copies pulled the "cannot tell" threshold from 0.85
  to 0.55. Faces, photographs, pages and non-chest scans are now trained under the same
  grey, casts, darkening and vignetting as the retina photos, tightly cropped faces from
  scikit-image's photos (astronaut, cameraman, cat) among them, and small pictures blown
  up. The 200 LFW faces are no longer trained on at all: they are the held-out check in
  the evaluation below, scored by the shipped ensemble.
- **1.2.0: a retina is a retina whatever the camera and the patient.** 1.1.0 sent 91 % of
  grey (red-free or monochrome) copies of IDRiD photos away as "cannot tell" or "not a
  retina", and the maintainers' kept-back set from another country lost 51 of 400 eyes
  that way. Every retina photo is now trained with a random field of view (35-50 degrees:
  a zoom into the circle, or more black around it), small pupil and off-axis vignetting,
  an orange, red, green, blue-grey or grey cast, dark and pigmented fundi (x0.3-0.6 and
  gamma 1-2.2), then the camera's balance, focus, resolution, noise and JPEG. Chest films
  are trained exactly as in 1.1.0.
- **The "cannot tell" threshold holds on held-out cameras, grades and shifts**: besides
  each held-out source, the threshold may refuse at most 2 % more of each IDRiD DR grade
  (0-4) and of each fixed shift of the held-out retina photos (dark x0.45, dark gamma,
  grey, green and orange casts, vignette, 35 degree field, filling the frame) than the
  lowest threshold; each row is in the evaluation below.
- **Every real source there is, and whole sources held out.** The 1.0.0 router learned
  chests from children only and fundus photos from one camera plus two; it refused 23% of
  a ward's adult AP films and 37% of another camera's photos as "not a retina".
- **Augmented for unseen devices**: chest films as another hospital takes them (exposure,
  processing, rotation, collimation, tubes and wires, burned-in letters); fundus frames as
  another camera takes them (field size and clipping, darker and differently pigmented
  retinas, colour balance, vignetting, focus, resolution, JPEG).
- **Refusal threshold derived from held-out sources**, not set by hand (1.0.0 used 0.6).
- **Near-duplicates dropped across sources** by a 256-bit difference hash (at most 8 bits
  apart), so no photo sits on both sides of a held-out split.
"""

    def build_model(self) -> nn.Module:
        return CamNet(3, widths=(16, 32, 64, 128), num_outputs=3)

    def collect(self, data_root: Path, log: Any) -> list[tuple[str, int, np.ndarray]]:
        return self.collect_graded(data_root, log)[0]

    def collect_graded(self, data_root: Path, log: Any,
                       ) -> tuple[list[tuple[str, int, np.ndarray]], list[int | None]]:
        """The images (source, label, image) and, for IDRiD's, the DR grade."""
        items: list[tuple[str, int, np.ndarray]] = []
        k_raw, _, _, _ = kermany(data_root)
        items += [("kermany", CHEST, im) for im in k_raw]
        n_raw, _, _, _ = nih_adults(data_root)
        items += [("nih", CHEST, im) for im in n_raw]
        import pydicom.data
        try:
            rg1 = dicom_frames01(Path(pydicom.data.get_testdata_file("RG1_UNCR.dcm")))
            items.append(("dicom:RG1", CHEST, _shrink(rg1[0])))
        except Exception:  # noqa: BLE001 — pydicom-data is optional for training
            log("  router: RG1 unavailable")
        grade_of = idrid_grades(data_root)
        paths = fundus_files(data_root).paths
        grades: list[int | None] = [None] * len(items) + [grade_of[p.name] for p in paths]
        items += [("idrid", FUNDUS, _shrink(read_image01(p))) for p in paths]
        items += [(family, FUNDUS, _shrink(read_image01(p)))
                  for family, p, _ in fundus_other_files(data_root)]
        items += [(source, OTHER, img) for source, img in other_sources(log)]
        grades += [None] * (len(items) - len(grades))
        keep = unique_across_sources(items, log)
        return ([i for i, k in zip(items, keep, strict=True) if k],
                [g for g, k in zip(grades, keep, strict=True) if k])

    def prepare(self, data_root: Path, seed: int, log: Any) -> Prepared:
        items, grades = self.collect_graded(Path(data_root), log)
        sources = np.array([s for s, _, _ in items])
        y = np.array([label for _, label, _ in items])
        images = [img for _, _, img in items]
        others = sorted({s for s in sources if s not in SCREENED_FOLDS})
        fold_of = {**SCREENED_FOLDS, **{s: i % FOLDS for i, s in enumerate(
            sorted(others, key=lambda s: hashlib.sha256(s.encode()).hexdigest()))}}
        folds = np.array([fold_of[s] for s in sources])
        # why: balance classes, and within each class balance sources, so 5,000 children's
        # films or 200 tiny faces do not drown out one camera or one CT family
        weights = np.zeros(len(y))
        for k in (CHEST, FUNDUS, OTHER):
            groups = np.unique(sources[y == k])
            for g in groups:
                sel = (y == k) & (sources == g)
                weights[sel] = 1.0 / len(groups) / sel.sum()
        params = self.preprocessing["params"]

        def make_batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
            xs = []
            for i in idx:
                img = images[i]
                if y[i] == CHEST:
                    img = augment_any(augment_radiograph(img, rng), rng, 0.6, False)
                elif y[i] == FUNDUS:
                    img = augment_retina(img, rng)
                else:
                    img = augment_other(img, rng)
                xs.append(router_preprocess(img, **params))
            return np.stack(xs), y[idx]

        x = np.stack([router_preprocess(im, **params) for im in images])
        # out-of-fold rows: every image as it is (IDRiD's named by grade), then each
        # retina photo shifted, scored by the member that never saw the original
        oof_sources = [f"idrid grade {g}" if g is not None else s
                       for s, g in zip(sources.tolist(), grades, strict=True)]
        retina = np.flatnonzero(y == FUNDUS)
        shifted_x, shifted_index, shifted_sources = [], [], []
        for name, shift in RETINA_SHIFTS.items():
            for i in retina:
                shifted_x.append(router_preprocess(
                    np.clip(shift(to_rgb(images[i])), 0, 1).astype(np.float32), **params))
                shifted_index.append(i)
                family = "idrid" if sources[i] == "idrid" else "other cameras"
                shifted_sources.append(f"{family}, {name}")
        faces = held_out_faces()
        rng = np.random.default_rng(seed)
        calib = rng.choice(len(y), size=256, replace=False, p=weights / weights.sum())
        counts = {"images": len(y), "per_class": np.bincount(y, minlength=3).tolist(),
                  "sources": {k: int(len(np.unique(sources[y == i])))
                              for i, k in enumerate(self.labels)}}
        log(f"  router: {counts}")
        oof_index = np.concatenate([np.arange(len(y)), np.array(shifted_index, int)])
        return Prepared(
            n_train=len(y), make_batch=make_batch, folds=folds, oof_index=oof_index,
            oof_x=np.concatenate([x, np.stack(shifted_x)]), oof_y=y[oof_index],
            oof_sources=oof_sources + shifted_sources,
            oof_reference=np.arange(len(oof_index)) < len(y),
            report=EvalSet("every image, ensemble (gate only)", x, y),
            external=[EvalSet(
                "200 small grey faces never trained on (scikit-image's LFW subset)",
                np.stack([router_preprocess(im, **params) for _, im in faces]),
                np.full(len(faces), OTHER), sources=[s for s, _ in faces],
                note="scored by the shipped ensemble; a face must never reach the fundus "
                     "model")],
            calibration_x=x[calib], counts=counts, sample_weights=weights / weights.sum(),
        )


RECIPE = RouterRecipe()
