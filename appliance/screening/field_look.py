"""A second look for a frame the router refused: the lit field alone, cut from its
black surround (issue 26).

The router squashes the whole frame to 64 px. A phone adapter or a hand-held camera can
leave the retina as a small disc in a large black frame (half the frame's width or
less): at 64 px it is a blob the router has never seen, and every such photo was
refused as "not a chest X-ray or a retina photograph". Cut to the lit field, the same
photo is the picture the router was trained on.

The cut is taken only where the lit part is a disc (a camera's round field stop; a
picture letterboxed or pasted in black is a rectangle) and the frame around it is black
(a picture with dark parts of its own is left whole); it is tight (no black margin is
added) and only where what is left is big enough to be a photograph of its own. A
picture cut out of a black frame is shown to the router as itself, and only a retina
route is taken from the second look. Seen through a round opening, a blurred face can
pass for a retina with the router (tests/screening/test_field_look.py): the quality
check, which follows as for any retina photo, refused every one measured. Pure
functions on the decoded array; no I/O.
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.inference.preprocess import FundusFrame

# The lit part must leave at least half the frame black: else it is the frame itself.
MAX_FIELD_SHARE = 0.5
# Black around it: at most this share of the surround lit above a tenth of the field's
# light (a camera's or an app's text printed in the black -- date, eye, clinic -- is
# well under it).
MAX_SURROUND_LIT = 0.02
SURROUND_LEVEL = 0.1
# A field smaller than this (px, short side) is no photograph to screen: a thumbnail's
# blob cut out and blown up reads as anything.
MIN_FIELD_PX = 128
# Round, as a camera's field stop is: the lit outline's circularity (4 pi area /
# perimeter^2: a disc ~0.9 on the small copy, a retina clipped top and bottom ~0.85) and
# the share of its enclosing circle it fills (a disc ~1, clipped ~0.79). A face lit in a
# dark patch measured at most 0.79 / 0.64 here, a square 0.79 / 0.64, a letterboxed
# picture less (field_look's tests; the issue 26 note).
MIN_CIRCULARITY = 0.84
MIN_CIRCLE_FILL = 0.75


def lit_field(image: np.ndarray, frame: FundusFrame) -> np.ndarray | None:
    """The lit field of ``image`` cut tight from a black surround, or None where the
    frame is not a small round lit field in black (see the module docstring). Judged
    on the frame's small copy (``frame.lit``'s size); the cut is of the full image."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(frame.lit, connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # the field, not text beside it
    x0, y0, bw, bh = (int(v) for v in stats[best, :4])
    x1, y1 = x0 + bw, y0 + bh
    sh, sw = frame.lit.shape
    if bw * bh > MAX_FIELD_SHARE * sw * sh or not _round((labels == best).astype(np.uint8)):
        return None
    light = frame.light
    outside = np.ones((sh, sw), bool)
    outside[y0:y1, x0:x1] = False
    level = SURROUND_LEVEL * max(float(np.percentile(light[y0:y1, x0:x1], 99)), 1e-6)
    if float((light[outside] > level).mean()) > MAX_SURROUND_LIT:
        return None
    h, w = image.shape[:2]
    scale = frame.scale
    top, bottom = int(y0 / scale), min(h, int(np.ceil(y1 / scale)))
    left, right = int(x0 / scale), min(w, int(np.ceil(x1 / scale)))
    if min(bottom - top, right - left) < MIN_FIELD_PX:
        return None
    return image[top:bottom, left:right]


def _round(lit: np.ndarray) -> bool:
    contours, _ = cv2.findContours(lit, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)
    area, perimeter = cv2.contourArea(outline), cv2.arcLength(outline, True)
    _, radius = cv2.minEnclosingCircle(outline)
    if perimeter <= 0 or radius <= 0:
        return False
    circularity = 4 * np.pi * area / perimeter**2
    return circularity >= MIN_CIRCULARITY and area / (np.pi * radius**2) >= MIN_CIRCLE_FILL
