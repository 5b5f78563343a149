"""JPEG, PNG and TIFF files: header checks at ingest (headers.py) and decoding with OpenCV."""

from __future__ import annotations

from typing import BinaryIO

import cv2
import numpy as np

from appliance.errors import DecodeError, UnsupportedFileError
from appliance.ingest import headers
from appliance.ingest.j2k import levels_to_skip

INCOMPLETE = "The file is incomplete (cut off while copying). Copy it again."

# Encoders and copy tools may pad a JPEG with zeros after its end marker.
_TAIL = 64 * 1024


def check_raster(
    source: bytes | BinaryIO, kind: str, limits: headers.ImageLimits | int
) -> tuple[int, int]:
    """Raise unless the file is complete and its own header declares a size that can be
    decoded safely; return (width, height). Reads the header and the last bytes only."""
    read_at, size = _reader(source)
    if kind == "jpeg":
        if not read_at(max(0, size - _TAIL), _TAIL).rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DecodeError(INCOMPLETE, detail="JPEG has no end-of-image marker")
        try:
            header = headers.jpeg_header(read_at)
        except DecodeError as exc:
            raise DecodeError(
                "The JPEG file is damaged and cannot be read.", detail=exc.detail
            ) from exc
    elif kind == "png":
        if b"IEND" not in read_at(max(0, size - 16), 16):
            raise DecodeError(INCOMPLETE, detail="PNG has no IEND chunk")
        header = headers.png_header(read_at)
    elif kind == "tiff":
        header = headers.tiff_header(read_at)
    else:
        raise ValueError(kind)
    headers.check_size(header, limits, encoded_bytes=size)  # decoded from bytes in memory
    return header.width, header.height


def _reader(source: bytes | BinaryIO) -> tuple[headers.ReadAt, int]:
    if isinstance(source, bytes | bytearray | memoryview):
        return headers.from_bytes(source), len(source)
    source.seek(0, 2)
    return headers.from_file(source), source.tell()


# libjpeg decodes at 1/2, 1/4 or 1/8 of the size by scaling its inverse DCT: a fundus
# camera's 4288 x 2848 frame at 1/4 takes ~10 ms instead of ~160 (issue 28).
_JPEG_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def jpeg_reduction(longest_side: int, max_side: int | None) -> int:
    """1, 2, 4 or 8: the largest JPEG decoding scale that keeps the longest side at least
    ~90 % of ``max_side`` (the rule JPEG 2000 levels follow); 1 without ``max_side``."""
    return 2 ** levels_to_skip(longest_side, max_side, 3) if max_side else 1


def decode_raster(raw: bytes, max_pixels: int, reduce: int = 1) -> tuple[np.ndarray, bool]:
    """Decode to float32 in [0, 1]: HxW grey or HxWx3 RGB. Returns (pixels, is_colour).

    ANYCOLOR|ANYDEPTH keeps 16-bit greys and, unlike IMREAD_UNCHANGED, applies the EXIF
    orientation, so a photo taken with the camera turned is upright. Besides the decoded
    image, only the float32 result is allocated (``headers.decode_memory`` counts both):
    the channels are reordered by a view, and divided in place. ``reduce`` (a JPEG only,
    see :func:`jpeg_reduction`) decodes at that fraction of the size, still upright.
    """
    buffer = np.frombuffer(raw, dtype=np.uint8)
    flags = _JPEG_REDUCED[reduce] if reduce > 1 else cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
    image = cv2.imdecode(buffer, flags)
    if image is None:
        raise DecodeError("The image file is damaged and cannot be decoded.")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise UnsupportedFileError("The image is far larger than any X-ray or photograph.")
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    if image.ndim == 3:
        image = image[:, :, 2::-1]  # BGR(A) -> RGB, without a copy
        if _is_grey(image):
            image = image[:, :, 0]
    pixels = np.array(image, dtype=np.float32, order="C")
    np.divide(pixels, scale, out=pixels)
    return pixels, pixels.ndim == 3


def _is_grey(rgb: np.ndarray) -> bool:
    """A colour file whose channels are equal (scanned film saved as JPEG) is greyscale."""
    sample = rgb[::7, ::7].astype(np.int16)
    return bool(
        np.abs(sample[..., 0] - sample[..., 1]).max() <= 2
        and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2
    )
