"""JPEG 2000 at reduced resolution: the models need 64-256 px and the preview ~1000 px,
so a 2000 px radiograph's finest wavelet level need not be decoded at all.

OpenJPEG can stop before the finest resolution levels (glymur over libopenjp2): for
RG1 (1955x1841, lossless) one level fewer takes ~130 ms instead of ~500 ms. Where
glymur or libopenjp2 is missing, callers fall back to pydicom's full decode.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

log = logging.getLogger(__name__)

J2K_SYNTAXES = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def levels_to_skip(longest_side: int, target_side: int, available: int) -> int:
    """Most levels to drop while the longest side stays at least ~90 % of the target."""
    levels = 0
    while levels < available and longest_side / 2 ** (levels + 1) >= 0.9 * target_side:
        levels += 1
    return levels


def decode_reduced(codestream: bytes, target_side: int) -> tuple[np.ndarray, int] | None:
    """(pixels, reduction factor) for one J2K codestream, or None to decode in full."""
    try:
        import glymur
    except ImportError:
        return None
    fd, name = tempfile.mkstemp(suffix=".j2k")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(codestream)
        try:
            image = glymur.Jp2k(name)
            cod = next(s for s in image.codestream.segment if hasattr(s, "layers"))
            levels = levels_to_skip(max(image.shape[:2]), target_side, cod.num_res)
            if levels == 0:
                return None
            step = 2**levels
            pixels = image[::step, ::step]
        except Exception as exc:  # no libopenjp2, or a stream it rejects: full decode
            log.debug("reduced J2K decode not used: %s", exc)
            return None
    finally:
        os.unlink(name)
    return np.ascontiguousarray(pixels), 2**levels
