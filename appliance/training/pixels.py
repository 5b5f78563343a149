"""An image's pixels for a training export: a PNG with nothing but pixels, and a
cheap look for text burned into them.

The PNG holds the decoded image the models see (ingest/decode.py: Modality and VOI LUT
applied, MONOCHROME1 inverted), so what is trained on is what is served. No DICOM
header goes with it, and OpenCV's PNG writer writes no text chunks (tEXt, iTXt, zTXt,
eXIf): a test checks. Grey DICOM pixels are kept at 16 bits, everything else at 8.

Text in the pixels cannot be removed cheaply, only pointed out, so the exporter warns:
- a DICOM whose ``BurnedInAnnotation`` is YES, or a Secondary Capture (a screenshot or
  a scanned film) that does not say NO;
- a colour photo with a black border (a retina camera's) holding small bright marks in
  its corners: the date, name or ID some cameras stamp there.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from appliance.ingest.decode import DecodedImage

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame kinds (.7.x)
CORNER = 0.12  # each corner square's side, as a share of the shorter side
DARK = 0.12  # a retina photo's border is darker than this (pixels in [0, 1])
BRIGHT = 0.5  # stamped text is brighter than this
MARKED = 0.002  # share of a corner's pixels that are bright marks


def png_bytes(image: DecodedImage) -> bytes:
    """The decoded pixels as a PNG: 8-bit RGB for colour, 16-bit grey for DICOM grey,
    8-bit grey for other grey files (their source had no more)."""
    pixels = np.clip(image.pixels, 0.0, 1.0)
    if image.is_colour:
        array = cv2.cvtColor(np.round(pixels * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    elif image.file_format == "dicom":
        array = np.round(pixels * 65535).astype(np.uint16)
    else:
        array = np.round(pixels * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - OpenCV encodes any array of these types
        raise ValueError("the image could not be written as a PNG")
    return encoded.tobytes()


def dicom_text_warning(path: Path) -> str | None:
    """Why a stored DICOM's pixels may carry text, read from its header only."""
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["BurnedInAnnotation", "SOPClassUID"],
        )
    except (InvalidDicomError, OSError, ValueError):
        return None
    burned = str(getattr(ds, "BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "DICOM BurnedInAnnotation YES"
    sop_class = str(getattr(ds, "SOPClassUID", "") or "")
    if sop_class.startswith(SECONDARY_CAPTURE) and burned != "NO":
        return "DICOM Secondary Capture (a screenshot or a scanned film)"
    return None


def stamped_corners(pixels: np.ndarray) -> bool:
    """True when a photo with a dark border has bright marks in a corner: text a camera
    stamped."""
    grey = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    side = max(8, int(min(grey.shape[:2]) * CORNER))
    corners = (
        grey[:side, :side],
        grey[:side, -side:],
        grey[-side:, :side],
        grey[-side:, -side:],
    )
    if any(float(np.median(corner)) >= DARK for corner in corners):
        return False
    return any(float(np.mean(corner > BRIGHT)) > MARKED for corner in corners)


def text_warning(path: Path, image: DecodedImage) -> str | None:
    """Why this image's pixels may carry burned-in text, or None."""
    if image.file_format == "dicom":
        return dicom_text_warning(path)
    # Only colour photos (a camera's): a grey X-ray's dark corners may hold the body's
    # edge or a lead marker, which no cheap look tells from text.
    if image.is_colour and stamped_corners(image.pixels):
        return "a photo with marks in its corners, as from a camera that stamps text"
    return None
