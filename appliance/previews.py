"""What the worker writes for people to look at: the preview, the worklist thumbnail,
the heatmap overlay and the full-detail view of an image.

All of it is made again from the original (kept durable by the importer) whenever it is
needed, so it is written atomically -- a reader sees the old file or the new one, never
half of one -- but not fsynced: a power cut may cost a preview, never an image or a
result, and the result is not kept waiting for the disk (issue 28).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from appliance.inference.preprocess import area_resize
from appliance.ingest.decode import DecodedImage
from appliance.store.files import ensure_free_space

FULL_DETAIL = "full"  # job kind: the full-resolution view someone asked for
# Longest side of the full-detail view: any X-ray or fundus camera's whole frame.
FULL_DETAIL_MAX_PX = 8192
# The worklist's small picture of each image (shown at 64 px; twice that for sharpness).
THUMBNAIL_MAX_PX = 128
# The heatmap is smooth (an 8x8 map upsampled), so a small overlay loses nothing: the
# page stretches it over the preview. Small keeps PNG encoding off the critical path.
HEATMAP_MAX_PX = 256


def full_detail_path(image_id: int) -> Path:
    """Where the full-detail JPEG of an image is kept, relative to the data dir."""
    return Path("previews") / f"{image_id}-full.jpg"


def thumbnail_path(image_id: int) -> Path:
    """Where the worklist's thumbnail of an image is kept, relative to the data dir."""
    return Path("previews") / f"{image_id}-thumb.jpg"


def preview_size(image: DecodedImage, max_px: int) -> tuple[int, int]:
    """(width, height) of the preview: the image shrunk to ``max_px`` on its longest side."""
    height, width = image.pixels.shape[:2]
    scale = min(1.0, max_px / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(extension: str, pixels: np.ndarray, params: list[int]) -> bytes:
    ok, encoded = cv2.imencode(extension, pixels, params)
    if not ok:
        raise RuntimeError(f"{extension} encoding failed")
    return encoded.tobytes()


def to_eight_bit(pixels: np.ndarray, rows_at_once: int = 256) -> np.ndarray:
    """[0, 1] floats to uint8 a band of rows at a time: a full-detail image is converted
    without two float copies of it at once (headers.decode_memory does not count them)."""
    out = np.empty(pixels.shape, np.uint8)
    for top in range(0, pixels.shape[0], rows_at_once):
        band = pixels[top : top + rows_at_once] * 255.0
        band += 0.5
        np.clip(band, 0, 255, out=band)
        out[top : top + rows_at_once] = band
    return out


def preview_jpeg(image: DecodedImage, max_px: int) -> bytes:
    """An 8-bit JPEG (quality 92) no larger than ``max_px`` on its longest side, for the
    viewer; the original stays untouched for anything diagnostic."""
    size = preview_size(image, max_px)
    pixels = image.pixels
    if size != (pixels.shape[1], pixels.shape[0]):
        pixels = area_resize(pixels, size, image.resized)
    eight_bit = to_eight_bit(pixels)
    if eight_bit.ndim == 3:
        eight_bit = cv2.cvtColor(eight_bit, cv2.COLOR_RGB2BGR)
    return encode(".jpg", eight_bit, [cv2.IMWRITE_JPEG_QUALITY, 92])


def heatmap_png(overlay_rgba: np.ndarray) -> bytes:
    return encode(
        ".png", cv2.cvtColor(overlay_rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 3]
    )


def write_regenerable(data_dir: Path, relative: Path, data: bytes, reserve_mb: int) -> None:
    """Write a file made from the original under ``data_dir``: never into the free-space
    reserve (StorageFullError instead: the job waits for space), through a temporary
    file in tmp/ renamed into place, and without an fsync (see the module docstring)."""
    ensure_free_space(data_dir, len(data), reserve_mb)
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=data_dir / "tmp", prefix="incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(name, target)
    except BaseException:  # ENOSPC included: the worker makes the job wait for space
        Path(name).unlink(missing_ok=True)
        raise
