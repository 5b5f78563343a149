"""A radiograph's unexposed border, found so that nothing judges the film by it.

Collimation leaves a film with flat black (or, once inverted, white) bands along its
edges, and an exported or screenshotted film may sit in black padding. The chest
models squash the whole frame to 64 px, so a border shrinks the lungs and, through the
rank equalisation, shifts every intensity: on TBX11K's held-out TB films a white border
of 8 % of each side took the median adult score from 93 to 67. The sources the adult
model learned from differ in this too (a border on 1.3 % of TBX11K's films, 5.7 % of
NIH's, 15.9 % of the children's): a border is a hospital's habit, not a finding. (A
black border of 15 % has the router refuse 148 of those 153 films as "not a chest
X-ray"; a second look at the exposed film was measured and not kept: it sent an
extremity CR and small grey faces to the chest models.)

So the box looks at the exposed field only: the bands cut are whole rows and columns,
from each edge inwards, that are flat (their spread under 2 % of the film's range) and
dark or bright (mean in the lowest or highest 10 %), at most 30 % of each side, and only
where some side has at least 2 % of them (a film without a border is left exactly as it
was). Pure functions on the decoded array; no I/O.
"""

from __future__ import annotations

import numpy as np

from appliance.inference.preprocess import Resized
from appliance.screening.measures import grey_of, small_copy

Box = tuple[int, int, int, int]  # top, bottom, left, right (exclusive) in image pixels

FLAT = 0.02  # a band's spread, as a share of the film's 1st-99th percentile range
DARK, BRIGHT = 0.1, 0.9  # a band's mean, on that range
MAX_SHARE = 0.3  # never more than this share of a side
MIN_SHARE = 0.02  # a border this deep on some side, or none at all


def exposed_box(image: np.ndarray, resized: Resized | None = None) -> Box | None:
    """The film without its flat dark or bright border bands, or None when it has none
    worth cutting (see the module docstring). Judged on the image's 128-px copy, the
    one the drift measures take (``measures.small_copy``; ``resized``: shared)."""
    h, w = image.shape[:2]
    grey = grey_of(small_copy(image, resized))
    low, high = np.percentile(grey, [1, 99])
    film = (grey - low) / max(float(high - low), 1e-6)
    rows, cols = film.shape
    deep_rows, deep_cols = int(rows * MAX_SHARE), int(cols * MAX_SHARE)
    top, bottom = _bands(film[:deep_rows]), _bands(film[::-1][:deep_rows])
    left, right = _bands(film.T[:deep_cols]), _bands(film.T[::-1][:deep_cols])
    if max(top, bottom) < MIN_SHARE * rows and max(left, right) < MIN_SHARE * cols:
        return None
    return (int(top * h / rows), h - int(bottom * h / rows),
            int(left * w / cols), w - int(right * w / cols))


def _bands(lines: np.ndarray) -> int:
    """How many of ``lines`` (rows, from the edge inwards) are flat border bands."""
    if len(lines) == 0:
        return 0
    spread, mean = lines.std(axis=1), lines.mean(axis=1)
    border = (spread < FLAT) & ((mean < DARK) | (mean > BRIGHT))
    return int(np.argmin(border)) if not border.all() else len(border)


def cut(image: np.ndarray, box: Box | None) -> np.ndarray:
    """The exposed field of ``image`` (a view, not a copy), or the image itself."""
    if box is None:
        return image
    top, bottom, left, right = box
    return image[top:bottom, left:right]
