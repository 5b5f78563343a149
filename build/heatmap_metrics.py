"""Box-free checks of a heatmap, as pure functions on arrays (no files, no model).

``build/heatmap_checks.py`` feeds them the installed bundles' maps on held-out images.
No box-labelled data is available here, so each check asks something a map that points
at findings must do without knowing where the finding is: keep its mass where findings
can be (lung fields, the fundus disc), move with the image, name the pixels the score
depends on (deletion), and stay faint on normal images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The chest template, in the body box's coordinates (0..1): one ellipse per lung,
# (centre x, centre y, semi-axis x, semi-axis y). Read off the mean of Kermany and NIH
# films squashed to 64 px (lungs at x 0.16-0.46 and 0.54-0.84, y 0.12-0.78 of the box);
# it does not follow any one film's borders (see lung_fields).
LUNG_ELLIPSES = ((0.31, 0.45, 0.15, 0.33), (0.69, 0.45, 0.15, 0.33))


def body_box(film: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of the body on a squashed film: the rows and columns more
    than half covered by pixels above a quarter of the film's 1-99% brightness range
    (the air around the patient is darker than anything inside the chest at 64 px)."""
    h, w = film.shape
    grey = cv2.GaussianBlur(np.asarray(film, np.float32), (0, 0), 1.5)
    lo, hi = np.percentile(grey, 1), np.percentile(grey, 99)
    body = grey > lo + 0.25 * (hi - lo)
    cols, rows = np.flatnonzero(body.mean(0) > 0.5), np.flatnonzero(body.mean(1) > 0.5)
    if cols.size < w / 2 or rows.size < h / 2:  # no clear body: the whole frame
        return 0, 0, w, h
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def lung_fields(film: np.ndarray) -> np.ndarray:
    """Boolean lung-field prior for a squashed chest film (HxW float, lungs dark).

    Deterministic anatomy, no labels: two fixed ellipses placed in the film's body box
    (:func:`body_box`). Limits: the template is symmetric and upright, includes the
    heart's shadow where it overlaps the left lung, misses the costophrenic angles, and
    misplaces the fields on rotated, cropped or lordotic films; it says where evidence
    lies on average, never where one patient's lungs are.
    """
    h, w = film.shape
    x0, y0, bw, bh = body_box(film)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), bool)
    for cx, cy, ax, ay in LUNG_ELLIPSES:
        ex, ey = x0 + cx * bw, y0 + cy * bh
        mask |= ((xx - ex) / (ax * bw)) ** 2 + ((yy - ey) / (ay * bh)) ** 2 <= 1.0
    return mask


def disc_field(size: int, mask_fraction: float) -> np.ndarray:
    """The fundus model's own field of view in its input crop (``enhance_fundus``)."""
    yy, xx = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2.0
    return (xx - centre) ** 2 + (yy - centre) ** 2 <= (mask_fraction * size / 2.0) ** 2


def mass_inside(evidence: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of a map's positive evidence inside ``mask`` (None for an empty map)."""
    total = float(evidence.sum())
    return None if total <= 0 else float(evidence[mask].sum()) / total


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two maps (None when one is flat)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def shifted_back_correlation(base: np.ndarray, moved: np.ndarray, dx: int, dy: int) -> float | None:
    """Correlate ``base`` with the map of the shifted image, shifted back, on the
    pixels both cover (the replicated edge is left out)."""
    h, w = base.shape
    back = np.roll(moved, (-dy, -dx), axis=(0, 1))
    ys = slice(max(0, -dy), h - max(0, dy))
    xs = slice(max(0, -dx), w - max(0, dx))
    return correlation(base[ys, xs], back[ys, xs])


def top_fraction(evidence: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``fraction`` of pixels where the map is strongest (ties by
    a stable order, so exactly that many pixels)."""
    n = max(1, int(round(fraction * evidence.size)))
    order = np.argsort(-evidence.ravel(), kind="stable")[:n]
    mask = np.zeros(evidence.size, bool)
    mask[order] = True
    return mask.reshape(evidence.shape)


def smooth_random_map(shape: tuple[int, int], grid: tuple[int, int],
                      rng: np.random.Generator) -> np.ndarray:
    """A random map as smooth as a CAM (uniform noise on the CAM's grid, upsampled the
    same way), so the random baseline deletes blobs like the map's, not scattered
    pixels (which would change a film's texture far more than its content)."""
    noise = rng.random(grid).astype(np.float32)
    return cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def delete(x: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Replace the masked pixels of a CxHxW input by a heavy blur of the same input:
    the content goes, the local brightness stays (less out of distribution than 0)."""
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in x])
    return np.where(mask[None], blurred, x).astype(np.float32)


@dataclass(frozen=True)
class DeletionResult:
    fraction: float
    drop_map: float      # mean logit drop when the map's top pixels are deleted
    drop_random: float   # mean logit drop for as many pixels of smooth random maps
    win_rate: float      # share of images where the map's deletion drops it more

    @property
    def ratio(self) -> float | None:
        """drop_map / drop_random; None where random deletion did not lower the score
        on average (a chest model reads blur as haze: it may raise it)."""
        return None if self.drop_random <= 1e-6 else self.drop_map / self.drop_random

    def passes(self, min_ratio: float, min_win_rate: float) -> bool:
        """The map's deletion lowers the score, by ``min_ratio`` times random deletion
        (or random deletion does not lower it at all), on ``min_win_rate`` of images."""
        beats = self.drop_random <= 1e-6 or self.drop_map >= min_ratio * self.drop_random
        return self.drop_map > 0 and beats and self.win_rate >= min_win_rate


def faintness_ratio(normal_peaks: np.ndarray, abnormal_peaks: np.ndarray) -> float | None:
    """Median peak evidence of normal images over that of abnormal ones (logit units)."""
    top = float(np.median(abnormal_peaks)) if len(abnormal_peaks) else 0.0
    return None if top <= 0 or not len(normal_peaks) else float(np.median(normal_peaks)) / top
