"""JPEG, PNG and TIFF files: header checks at ingest and decoding with OpenCV."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from appliance.errors import DecodeError, UnsupportedFileError

INCOMPLETE = "The file is incomplete (cut off while copying). Copy it again."

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, without decoding."""
    pos = 2
    while pos + 9 < len(raw):
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", raw[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", raw[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def png_size(raw: bytes) -> tuple[int, int] | None:
    if len(raw) < 24 or raw[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", raw[16:24])


def check_raster(raw: bytes, kind: str, max_pixels: int) -> tuple[int, int] | None:
    """Raise unless the file is complete and of plausible size; return (width, height)."""
    size = None
    if kind == "jpeg":
        if not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DecodeError(INCOMPLETE, detail="JPEG has no end-of-image marker")
        size = jpeg_size(raw)
        if size is None:
            raise DecodeError("The JPEG file is damaged and cannot be read.", detail="no SOF")
    elif kind == "png":
        if b"IEND" not in raw[-16:]:
            raise DecodeError(INCOMPLETE, detail="PNG has no IEND chunk")
        size = png_size(raw)
    if size is not None:
        width, height = size
        if width * height > max_pixels:
            raise UnsupportedFileError(
                f"The image is {width} × {height} pixels, far larger than any X-ray or "
                "photograph; it was not imported."
            )
        if min(width, height) < 16:
            raise UnsupportedFileError(f"The image is only {width} × {height} pixels: too small.")
    return size


def decode_raster(raw: bytes, max_pixels: int) -> tuple[np.ndarray, bool]:
    """Decode to float32 in [0, 1]: HxW grey or HxWx3 RGB. Returns (pixels, is_colour).

    ANYCOLOR|ANYDEPTH keeps 16-bit greys and, unlike IMREAD_UNCHANGED, applies the EXIF
    orientation, so a photo taken with the camera turned is upright.
    """
    buffer = np.frombuffer(raw, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise DecodeError("The image file is damaged and cannot be decoded.")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise UnsupportedFileError("The image is far larger than any X-ray or photograph.")
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if _is_grey(image):
            image = image[:, :, 0]
    pixels = image.astype(np.float32) / scale
    return np.ascontiguousarray(pixels), pixels.ndim == 3


def _is_grey(rgb: np.ndarray) -> bool:
    """A colour file whose channels are equal (scanned film saved as JPEG) is greyscale."""
    sample = rgb[::7, ::7].astype(np.int16)
    return bool(
        np.abs(sample[..., 0] - sample[..., 1]).max() <= 2
        and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2
    )
