"""Turn a stored file into one normalised pixel array plus what later stages need.

The output is float32 in [0, 1]: HxW for greyscale (MONOCHROME1 already inverted, so
air is dark as on a PA chest film), HxWx3 RGB for colour. DICOM pixels go through the
Modality LUT (rescale) and then the VOI LUT or window the sender chose. Decoding uses
pydicom's pylibjpeg plugins (openjpeg, libjpeg, rle), so no GDCM is needed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from appliance.errors import DecodeError, IngestError, UnsupportedFileError
from appliance.ingest import raster
from appliance.ingest.dicom import (
    DAMAGED,
    INCOMPLETE,
    check_image_dataset,
    read_dicom,
    transfer_syntax,
)
from appliance.ingest.headers import ImageLimits
from appliance.ingest.j2k import J2K_SYNTAXES, decode_reduced, levels_to_skip
from appliance.ingest.sniff import NOT_AN_IMAGE, sniff

DEFAULT_LIMITS = ImageLimits()

log = logging.getLogger(__name__)


@dataclass
class DecodedImage:
    pixels: np.ndarray  # float32 in [0, 1]; HxW grey or HxWx3 RGB
    is_colour: bool
    file_format: str
    frames_total: int = 1
    frame_used: int = 0
    photometric: str | None = None
    inverted: bool = False
    voi: str = "none"  # how grey levels were mapped: window, voi_lut, percentile, none
    transfer_syntax_uid: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # Downscales of ``pixels`` made once and shared by the preview, thumbnail, drift
    # measures and model inputs (preprocess.area_resize); ``pixels`` is not changed after.
    resized: dict = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (stored with the image, shown in ``studies --json``)."""
        return {
            "height": int(self.pixels.shape[0]),
            "width": int(self.pixels.shape[1]),
            "colour": self.is_colour,
            "format": self.file_format,
            "frames_total": self.frames_total,
            "frame_used": self.frame_used,
            "photometric": self.photometric,
            "inverted": self.inverted,
            "voi": self.voi,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            # >1 when decoded at reduced resolution (JPEG 2000, a large JPEG): the
            # original is intact.
            "reduced_by": self.info.get("reduced_by", 1),
        }


def decode_file(
    path: Path, limits: ImageLimits | int = DEFAULT_LIMITS, max_side: int | None = None
) -> DecodedImage:
    """``decode_bytes`` for a file on disk, holding less in memory: a DICOM file's
    pixel data is read by the decoder straight from the file, one frame of it, instead
    of the whole file first and a copy of its pixel data next."""
    path, limits = Path(path), ImageLimits.of(limits)
    with open(path, "rb") as fh:
        kind = sniff(fh.read(512))
    if kind != "dicom":
        return decode_bytes(path.read_bytes(), limits, max_side)
    ds = read_dicom(path, limits.max_bytes)  # the pixel data stays on disk
    try:
        check_image_dataset(ds, limits)
        return decode_dataset(ds, max_side, path)
    except (IngestError, MemoryError):  # out of memory is no fault of the file
        raise
    except Exception as exc:  # a malformed value pydicom accepted but we cannot use
        raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc


def decode_bytes(
    raw: bytes, limits: ImageLimits | int = DEFAULT_LIMITS, max_side: int | None = None
) -> DecodedImage:
    """Decode a stored file. ``limits``: ``ImageLimits``, or just ``max_image_pixels``.
    ``max_side``: the caller needs no more than about this many pixels on the longest
    side, so a JPEG 2000 image may be decoded at reduced resolution (the screening path
    and the preview); None decodes in full.

    The header checks of the doors run again first: a file stored by an older version,
    or before a limit was lowered, is refused here rather than decoded."""
    limits = ImageLimits.of(limits)
    kind = sniff(raw[:512])
    if kind == "dicom":
        ds = read_dicom(raw, limits.max_bytes)
        try:
            check_image_dataset(ds, limits)
            return decode_dataset(ds, max_side)
        except (IngestError, MemoryError):  # out of memory is no fault of the file
            raise
        except Exception as exc:  # a malformed value pydicom accepted but we cannot use
            raise DecodeError(DAMAGED, detail=f"{type(exc).__name__}: {exc}") from exc
    if kind in ("jpeg", "png", "tiff"):
        width, height = raster.check_raster(raw, kind, limits)
        # A JPEG far larger than needed (a fundus camera's full frame) is decoded smaller.
        reduce = raster.jpeg_reduction(max(width, height), max_side) if kind == "jpeg" else 1
        pixels, colour = raster.decode_raster(raw, limits.max_pixels, reduce)
        photometric = "RGB" if colour else "MONOCHROME2"
        return DecodedImage(pixels, colour, kind, photometric=photometric,
                            info={"reduced_by": reduce} if reduce > 1 else {})
    raise UnsupportedFileError(NOT_AN_IMAGE.get(kind, NOT_AN_IMAGE["unknown"]))


def decode_dataset(
    ds: Dataset, max_side: int | None = None, path: Path | None = None
) -> DecodedImage:
    """Pixels of ``ds``; given the ``path`` it was read from, the decoder reads the one
    frame it needs from the file (a deflated file is the exception: read in memory)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    tsyntax = transfer_syntax(ds)
    info: dict[str, Any] = {}
    reduced = None
    if (
        max_side
        and str(tsyntax) in J2K_SYNTAXES
        and frames == 1
        and int(ds.get("SamplesPerPixel") or 1) == 1
    ):
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        reduced = decode_reduced(frame, max_side)
    if reduced is not None:
        arr, info["reduced_by"] = reduced
        return _grey(arr, ds, frames, photometric, tsyntax, info)
    arr = _native_grey_frame(ds, path, photometric)
    if arr is not None:
        if max_side:
            arr, info["reduced_by"] = shrink(arr, max_side)
        return _grey(arr, ds, frames, photometric, tsyntax, info)
    try:
        # index=0 decodes only the first frame of a multi-frame object; as_rgb (the
        # default) converts YBR_FULL/YBR_FULL_422 to RGB. Decoder warnings (odd but
        # readable headers) are logged, so the result does not depend on warning filters.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = 0 if frames > 1 else None
            if path is not None and tsyntax != DeflatedExplicitVRLittleEndian:
                arr = pixel_array(str(path), index=index)
            else:
                arr = pixel_array(ds, index=index)
        for warning in caught:
            log.debug("decoder warning: %s", warning.message)
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    # Every decoder plugin raises its own types; pylibjpeg-rle, in Rust, panics on some
    # damaged streams with pyo3's PanicException, which is no Exception subclass.
    except BaseException as exc:
        raise DecodeError(
            "The image data is damaged and cannot be decoded.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    if frames > 1 and arr.ndim == 4:  # defensive: some plugins ignore index
        arr = arr[0]

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        photometric = "RGB"
    if max_side:
        arr, info["reduced_by"] = shrink(arr, max_side)
    samples = arr.shape[2] if arr.ndim == 3 else 1
    if samples == 3:
        peak = float((1 << int(ds.get("BitsStored") or 8)) - 1)
        pixels = np.clip(arr.astype(np.float32) / peak, 0.0, 1.0)
        return DecodedImage(
            pixels,
            True,
            "dicom",
            frames,
            0,
            photometric,
            transfer_syntax_uid=str(tsyntax) if tsyntax else None,
            info=info,
        )

    return _grey(arr, ds, frames, photometric, tsyntax, info)


# What cv2.resize averages in; other sample types (32-bit integers) are kept whole.
_SHRINKABLE = (np.uint8, np.uint16, np.int16, np.float32)


def shrink(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """(pixels, factor): halved by averaging 2 x 2 blocks while the longest side stays at
    least ~90 % of ``max_side`` -- what skipping a JPEG 2000 wavelet level gives, done
    on the stored integers before any float copy exists. Everything downstream (preview,
    router, model input, heatmap, measures) then works on the small copy."""
    if arr.dtype.type not in _SHRINKABLE or arr.ndim not in (2, 3):
        return arr, 1
    levels = levels_to_skip(max(arr.shape[:2]), max_side, 8)
    for _ in range(levels):
        # An exact 2x average is cv2's fast path: an odd last row or column is left out
        # (a view, not a copy).
        height, width = arr.shape[0] // 2, arr.shape[1] // 2
        even = arr[: 2 * height, : 2 * width]
        arr = cv2.resize(even, (width, height), interpolation=cv2.INTER_AREA)
    return arr, 2**levels


_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _native_grey_frame(ds: Dataset, path: Path | None, photometric: str) -> np.ndarray | None:
    """One uncompressed little-endian grey frame read straight from the file where
    ``read_dicom`` left it (one read into the array, no second parse of the file), or
    None where pydicom's decoder does it. Unused high bits are corrected as pydicom does."""
    if path is None or transfer_syntax(ds) not in _NATIVE:
        return None
    bits = int(ds.get("BitsAllocated") or 0)
    stored = int(ds.get("BitsStored") or bits)
    if (
        photometric not in ("MONOCHROME1", "MONOCHROME2")
        or int(ds.get("NumberOfFrames") or 1) != 1
        or int(ds.get("SamplesPerPixel") or 1) != 1
        or bits not in (8, 16)
        or not 0 < stored <= bits
    ):
        return None
    element = ds.get_item("PixelData", keep_deferred=True)
    if getattr(element, "value", b"") is not None:  # read already (a small file)
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols = int(ds.Rows), int(ds.Columns)
    arr = np.fromfile(path, dtype=dtype, count=rows * cols, offset=element.value_tell)
    if arr.size != rows * cols:  # check_image_dataset refuses this first
        raise DecodeError(INCOMPLETE, detail=f"pixel data has {arr.size} of {rows * cols} values")
    arr = arr.reshape(rows, cols)
    if stored < bits:
        np.left_shift(arr, bits - stored, out=arr)
        np.right_shift(arr, bits - stored, out=arr)
    return arr


def _grey(
    arr: np.ndarray, ds: Dataset, frames: int, photometric: str, tsyntax: Any, info: dict
) -> DecodedImage:
    """Modality LUT, then VOI/window, then inversion where the image is meant to be
    seen inverted, for greyscale pixels."""
    values = apply_modality_lut(arr, ds)
    values = values.astype(np.float32, copy=values.dtype != np.float32)
    # PS3.3 C.8.11.6 / C.11.6: INVERSE is the Presentation LUT Shape that goes with
    # MONOCHROME1 (one inversion, not two); on MONOCHROME2 it says the sender meant the
    # pixels to be shown inverted: taken as stored, the models would see white lungs.
    # MONOCHROME1 with IDENTITY breaks the rule: the photometric interpretation, which
    # describes the stored pixels, wins, so lungs stay dark either way.
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    inverted = photometric == "MONOCHROME1" or shape == "INVERSE"
    pixels, voi = _apply_voi(values, ds, invert=inverted)
    return DecodedImage(
        np.ascontiguousarray(pixels, dtype=np.float32),
        False,
        "dicom",
        frames,
        0,
        photometric,
        inverted,
        voi,
        str(tsyntax) if tsyntax else None,
        info,
    )


def _apply_voi(values: np.ndarray, ds: Dataset, invert: bool) -> tuple[np.ndarray, str]:
    """Map modality values to [0, 1] the way the sender meant them to be seen.

    Works in place on ``values`` (a float32 array the caller owns): a 2000x2000 CR is
    16 MB per copy, and the box has 8 GB shared with the GPU. ``invert`` turns
    MONOCHROME1 (bright = air) into the usual dark lungs in the same pass.
    """
    if "VOILUTSequence" in ds:
        mapped = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float32)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        top = float((1 << int(descriptor[2])) - 1) if descriptor[2] else float(mapped.max() or 1)
        low, high, how = 0.0, top, "voi_lut"
        values = mapped
    else:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        center = float(center[0] if _is_multi(center) else center) if center is not None else None
        width = float(width[0] if _is_multi(width) else width) if width is not None else None
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if center is not None and width is not None and width >= 1 and function == "SIGMOID":
            values -= center
            values *= -4.0 / width
            np.exp(values, out=values)
            values += 1.0
            np.reciprocal(values, out=values)
            low, high, how = 0.0, 1.0, "window"
        elif center is not None and width is not None and width >= 1:
            if function == "LINEAR_EXACT":
                low, high = center - width / 2, center + width / 2
            else:  # LINEAR, as defined in PS3.3 C.11.2.1.2.1
                low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
            how = "window"
        else:
            # No instructions from the sender: stretch between robust percentiles so a
            # few hot pixels or the collimator edge do not flatten the image.
            low, high = (float(v) for v in np.percentile(values[::4, ::4], (0.5, 99.5)))
            how = "percentile"
    if high <= low:
        high = low + 1.0
    values -= low
    values *= 1.0 / (high - low)
    np.clip(values, 0.0, 1.0, out=values)
    if invert:
        np.subtract(1.0, values, out=values)
    return values, how


def _is_multi(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)
